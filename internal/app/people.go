package app

import (
	"context"
	"sync"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/store"
)

// people is the recipient directory's search index, read from the buffer
// and read again whenever `mailroomd directory` changed it.
type people struct {
	store *store.Outbox

	mu      sync.Mutex
	loaded  bool
	version int64
	idx     *directory.Index
}

// Index returns the index of the directory as it is now.
func (p *people) Index(ctx context.Context) (*directory.Index, error) {
	v, err := p.store.DirectoryVersion(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded && v == p.version {
		return p.idx, nil
	}
	entries, version, err := p.store.Directory(ctx)
	if err != nil {
		return nil, err
	}
	p.idx, p.version, p.loaded = directory.NewIndex(entries), version, true
	return p.idx, nil
}

package uplink_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// failingSent is a buffer whose first BlobSent fails, as on a full disk.
type failingSent struct {
	*store.Outbox
	failed atomic.Bool
}

func (f *failingSent) BlobSent(ctx context.Context, sha string) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk full")
	}
	return f.Outbox.BlobSent(ctx, sha)
}

// photoRig is a buffer with n photos of size random bytes, each named by
// an event, and a publisher for it (not started) on a broker whose blob
// topics a subscriber watches.
type photoRig struct {
	o      *store.Outbox
	files  *blobstore.Store
	shas   []string
	pub    *uplink.Publisher
	chunks *mqtttest.Subscriber
}

func newPhotoRig(t *testing.T, n, size int) *photoRig {
	t.Helper()
	broker := mqtttest.Start(t)
	r := &photoRig{chunks: broker.Subscribe(t, "chunks", "mailroom/v1/"+appliance+"/blobs/#")}
	cert, key := broker.ClientFiles(t, appliance)
	tlsCfg, err := uplink.LoadTLS(broker.Files.CA, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	if r.o, err = store.Open(ctx, store.Options{Path: filepath.Join(dir, "buffer.db")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.o.Close() })
	r.files = blobstore.New(filepath.Join(dir, "blobs"), nil)
	for range n {
		r.add(t, size)
	}
	if r.pub, err = uplink.New(r.o, uplink.Options{Brokers: []string{broker.URL()}, TLS: tlsCfg, ClientID: appliance, TopicPrefix: "mailroom/v1",
		Window: 16, KeepAlive: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return r
}

// add keeps a photo of size random bytes and commits the event that
// names it.
func (r *photoRig) add(t *testing.T, size int) {
	t.Helper()
	p := make([]byte, size)
	rand.Read(p)
	sha, err := r.files.Put(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.o.Append(context.Background(), event.Event{Appliance: appliance, Type: event.TypeParcelUpdated, Time: time.Now(),
		ParcelID: fmt.Sprint("p", len(r.shas)), Photos: []event.Photo{{SHA256: sha, Size: int64(size), ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
		t.Fatal(err)
	}
	r.shas = append(r.shas, sha)
}

// The uploads' progress is written off the chunks' way; a write that
// fails pauses the upload ("photo upload paused"), and the photo whose
// completion was not recorded is uploaded again and then recorded: every
// photo ends up sent, none counted sent without its write.
func TestBlobProgressWriteFails(t *testing.T) {
	r := newPhotoRig(t, 3, 3*uplink.ChunkSize+100)
	o, files, shas, pub, chunks := r.o, r.files, r.shas, r.pub, r.chunks
	ctx := context.Background()
	var logs syncBuffer
	src := &failingSent{Outbox: o}
	sender := uplink.NewBlobSender(pub, src, files, time.Hour, clock.Real{}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pub.Run(ctx) }()
	go func() { defer wg.Done(); sender.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	// A completion is logged just after its write: wait for both.
	waitfor.True(t, 30*time.Second, "every photo recorded as sent, and logged", func() bool {
		left, _ := o.BlobsToSend(ctx, 10)
		return len(left) == 0 && bytes.Count(logs.Bytes(), []byte("blob uploaded")) >= len(shas)
	})
	if !src.failed.Load() || !bytes.Contains(logs.Bytes(), []byte("photo upload paused")) || !bytes.Contains(logs.Bytes(), []byte("disk full")) {
		t.Fatalf("the failed write did not pause the upload:\n%s", logs.Bytes())
	}
	if n := bytes.Count(logs.Bytes(), []byte("blob uploaded")); n != len(shas) {
		t.Fatalf("%d photos logged uploaded, want %d (one per recorded completion):\n%s", n, len(shas), logs.Bytes())
	}
	// Every chunk of every photo reached the broker.
	chunks.WaitFor(t, 10*time.Second, "every chunk", func(ms []mqtttest.Message) bool {
		seen := map[string]bool{}
		for _, m := range ms {
			seen[m.Topic] = true
		}
		for _, sha := range shas {
			for n := range 4 {
				if !seen[fmt.Sprintf("mailroom/v1/%s/blobs/%s/%d", appliance, sha, n)] {
					return false
				}
			}
		}
		return true
	})
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written.
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// countingReads is a buffer that counts the reads of blobs to upload that
// found some, from the first and after a given blob.
type countingReads struct {
	*store.Outbox
	first, after atomic.Int32
}

func (c *countingReads) BlobsToSend(ctx context.Context, limit int) ([]store.Blob, error) {
	bs, err := c.Outbox.BlobsToSend(ctx, limit)
	if len(bs) > 0 {
		c.first.Add(1)
	}
	return bs, err
}

func (c *countingReads) BlobsToSendAfter(ctx context.Context, after store.Blob, limit int) ([]store.Blob, error) {
	bs, err := c.Outbox.BlobsToSendAfter(ctx, after, limit)
	if len(bs) > 0 {
		c.after.Add(1)
	}
	return bs, err
}

// A backlog of more photos than one read of the buffer gives goes as one
// stream: the next photos are read while the last of the ones before are
// on their way, instead of the upload stopping until every chunk is
// acknowledged and starting over with a fresh read. Every photo arrives.
func TestBlobBacklogIsOneStream(t *testing.T) {
	const photos = 40 // more than two reads' worth
	r := newPhotoRig(t, photos, 1000)
	o, files, pub, chunks := r.o, r.files, r.pub, r.chunks
	shas := map[string]bool{}
	for _, sha := range r.shas {
		shas[sha] = true
	}
	ctx := context.Background()
	src := &countingReads{Outbox: o}
	sender := uplink.NewBlobSender(pub, src, files, time.Hour, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pub.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	waitfor.True(t, 30*time.Second, "the photos' events published", pub.CaughtUp)
	wg.Add(1)
	go func() { defer wg.Done(); sender.Run(ctx) }()
	waitfor.True(t, 30*time.Second, "every photo recorded as sent", func() bool {
		left, _ := o.BlobsToSend(ctx, 10)
		return len(left) == 0
	})
	if n, m := src.first.Load(), src.after.Load(); n != 1 || m < 2 {
		t.Fatalf("%d reads from the first photo and %d after one found photos: want 1, and the rest read while uploading", n, m)
	}
	chunks.WaitFor(t, 10*time.Second, "every photo's chunk", func(ms []mqtttest.Message) bool {
		seen := 0
		for _, m := range ms {
			for sha := range shas {
				if m.Topic == fmt.Sprintf("mailroom/v1/%s/blobs/%s/0", appliance, sha) {
					seen++
				}
			}
		}
		return seen == photos
	})
}

// TestBlobBytesSurviveBufferReuse: the uploader reads each photo into the
// buffer of one the broker acknowledged whole; every photo reassembled
// from its chunks at the broker has its own bytes, whatever the sizes of
// those read into the same buffers before it.
func TestBlobBytesSurviveBufferReuse(t *testing.T) {
	r := newPhotoRig(t, 0, 0)
	ctx := context.Background()
	sizes := []int{200_000, 1_000, 150_000, 65_536, 65_537, 300_000, 10, 131_072, 90_000, 5_000, 250_000, 70_000}
	for _, size := range append(sizes, sizes...) {
		r.add(t, size)
	}
	sender := uplink.NewBlobSender(r.pub, r.o, r.files, time.Hour, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pub.Run(ctx) }()
	go func() { defer wg.Done(); sender.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	waitfor.True(t, 60*time.Second, "every photo recorded as sent", func() bool {
		left, _ := r.o.BlobsToSend(ctx, 10)
		return len(left) == 0
	})
	msgs := r.chunks.WaitFor(t, 20*time.Second, "every chunk", func(ms []mqtttest.Message) bool {
		n := 0
		for _, m := range ms {
			if strings.Count(m.Topic, "/") == 5 { // a chunk, not a manifest
				n++
			}
		}
		want := 0
		for _, s := range append(sizes, sizes...) {
			want += (s + uplink.ChunkSize - 1) / uplink.ChunkSize
		}
		return n >= want
	})
	chunks := map[string]map[int][]byte{}
	for _, m := range msgs {
		parts := strings.Split(m.Topic, "/") // mailroom/v1/{id}/blobs/{sha}/{n}
		if len(parts) != 6 {
			continue
		}
		n, _ := strconv.Atoi(parts[5])
		if chunks[parts[4]] == nil {
			chunks[parts[4]] = map[int][]byte{}
		}
		chunks[parts[4]][n] = m.Payload
	}
	for _, sha := range r.shas {
		var whole []byte
		for n := 0; n < len(chunks[sha]); n++ {
			whole = append(whole, chunks[sha][n]...)
		}
		if got := blobstore.Sum(whole); got != sha {
			t.Fatalf("photo %s reassembled from %d chunks has the SHA-256 %s", sha, len(chunks[sha]), got)
		}
	}
}

package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// TopicBlobs is the topic suffix of blob uploads: the manifest on
// blobs/{sha256}, chunk n (from 0) on blobs/{sha256}/{n}.
const TopicBlobs = "blobs"

// ChunkSize is the most bytes one chunk of a blob carries.
const ChunkSize = 64 << 10

// blobWindow is how many chunks are in flight at once: one, so that an
// event waits behind at most one chunk (more in flight was slower as well
// as later, BenchmarkPhotoUpload); ackEvery how many acknowledged
// chunks make one write of the upload's progress.
const (
	blobWindow = 1
	ackEvery   = 16
)

// Manifest is published, retained, on blobs/{sha256} before the chunks.
type Manifest struct {
	V           int    `json:"v"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	Kind        string `json:"kind"`
	ChunkSize   int    `json:"chunk_size"`
	Chunks      int    `json:"chunks"`
}

// BlobSource is the buffer as the blob uploader uses it.
type BlobSource interface {
	BlobKnown(ctx context.Context, sha string) (bool, error)
	BlobsToSend(ctx context.Context, limit int) ([]store.Blob, error)
	AckBlob(ctx context.Context, sha string, acked int) error
	BlobSent(ctx context.Context, sha string) error
	PruneSentBlobs(ctx context.Context, before time.Time) ([]string, error)
}

var _ BlobSource = (*store.Outbox)(nil)

// BlobFiles reads, lists and removes the blobs kept.
type BlobFiles interface {
	Get(sha string) ([]byte, error)
	Remove(sha string) error
	Each(fn func(sha, path string, mod time.Time) bool) error
}

// BlobSender uploads the blobs events refer to over the publisher's
// connection, after the events: it sends only while no event waits, a
// window of chunks at a time, and resumes a blob with its first chunk the
// broker has not acknowledged, after a reconnect or a restart.
type BlobSender struct {
	// unreadable are the blobs whose files could not be read, until when
	// they wait (Run's goroutine only).
	unreadable map[string]time.Time
	health     health.Reporter
	started    time.Time
	pub        *Publisher
	src        BlobSource
	files      BlobFiles
	retain     time.Duration
	clock      clock.Clock
	log        *slog.Logger
	idle       time.Duration
}

// NewBlobSender returns the uploader of src's blobs over pub; uploaded
// blobs are kept retain long, then removed.
func NewBlobSender(pub *Publisher, src BlobSource, files BlobFiles, retain time.Duration, clk clock.Clock, log *slog.Logger, h health.Reporter) *BlobSender {
	return &BlobSender{pub: pub, src: src, files: files, retain: retain, clock: clk, log: log, idle: 200 * time.Millisecond,
		unreadable: map[string]time.Time{}, health: h, started: clk.Now()}
}

// ConditionBlobUnreadable is raised while a photo waiting for its upload
// cannot be read.
const ConditionBlobUnreadable = "photos.unreadable"

// Run uploads until ctx ends.
func (b *BlobSender) Run(ctx context.Context) error {
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		wait := b.idle
		if b.pub.CaughtUp() {
			blobs, err := b.src.BlobsToSend(ctx, 16)
			if err != nil {
				b.log.Warn("photos to upload cannot be read", "err", err)
			}
			now := b.clock.Now()
			for _, bl := range blobs {
				if now.Before(b.unreadable[bl.SHA256]) {
					continue // tried a moment ago
				}
				if err := b.send(ctx, bl); err != nil && ctx.Err() == nil {
					b.log.Info("photo upload paused", "sha256", bl.SHA256, "err", err)
				} else {
					delete(b.unreadable, bl.SHA256)
					wait = 0
				}
				break
			}
			if len(b.unreadable) == 0 && b.health != nil {
				b.health.Clear(ConditionBlobUnreadable)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			b.prune(ctx)
		case <-time.After(wait):
		}
	}
}

// eventsFirst waits until the publisher has every committed event on the
// connection, or the link is down.
func (b *BlobSender) eventsFirst(ctx context.Context) error {
	for !b.pub.CaughtUp() {
		if !b.pub.State().Connected {
			return ErrOffline
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// send uploads one blob from its first unacknowledged chunk.
func (b *BlobSender) send(ctx context.Context, bl store.Blob) error {
	data, err := b.files.Get(bl.SHA256)
	if err != nil {
		// The file was written before its event: it is gone, damaged or
		// sealed with a key the key file lacks. It is never marked sent
		// (and so never pruned): it is tried again later, the others go
		// on meanwhile, and the condition says so.
		b.unreadable[bl.SHA256] = b.clock.Now().Add(time.Minute)
		b.log.Error("photo to upload cannot be read; tried again in a minute", "sha256", bl.SHA256, "err", err)
		if b.health != nil {
			b.health.Set(ConditionBlobUnreadable, health.Warning, fmt.Sprintf("photo %s cannot be read for its upload: %v", bl.SHA256, err))
		}
		return err
	}
	chunks := (len(data) + ChunkSize - 1) / ChunkSize
	if bl.Acked > 0 {
		b.log.Info("photo upload resumed", "sha256", bl.SHA256, "from_chunk", bl.Acked, "chunks", chunks)
	}
	m, _ := json.Marshal(Manifest{V: 1, SHA256: bl.SHA256, Size: int64(len(data)), ContentType: bl.ContentType, Kind: bl.Kind,
		ChunkSize: ChunkSize, Chunks: chunks})
	base := TopicBlobs + "/" + bl.SHA256
	if err := b.pub.Publish(ctx, base, m, true); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	// A sliding window of blobWindow chunks: an event published now waits
	// behind at most that many bytes at the broker. The acknowledged count
	// is written every ackEvery chunks (the writer is the scans' too).
	acked, written := bl.Acked, bl.Acked
	record := func() error {
		if acked == written {
			return nil
		}
		written = acked
		// Also when ctx ended (a stop): the progress is worth keeping.
		return b.src.AckBlob(context.WithoutCancel(ctx), bl.SHA256, acked)
	}
	var inflight []mqtt.Token
	for next := bl.Acked; acked < chunks; {
		if next < chunks && len(inflight) < blobWindow {
			// Events go first: a chunk starts only once the publisher has
			// every committed event on the connection.
			if err := b.eventsFirst(ctx); err != nil {
				record()
				return err
			}
			tok, err := b.pub.publishAsync(base+"/"+strconv.Itoa(next), data[next*ChunkSize:min((next+1)*ChunkSize, len(data))], true)
			if err != nil {
				record()
				return err
			}
			inflight = append(inflight, tok)
			next++
			continue
		}
		if err := b.pub.wait(ctx, inflight[0], base); err != nil {
			record()
			return fmt.Errorf("chunk %d: %w", acked, err)
		}
		inflight = inflight[1:]
		acked++
		if acked-written >= ackEvery {
			if err := record(); err != nil {
				return err
			}
		}
	}
	if err := record(); err != nil {
		return err
	}
	if err := b.src.BlobSent(ctx, bl.SHA256); err != nil {
		return err
	}
	b.log.Info("blob uploaded", "sha256", bl.SHA256, "bytes", len(data), "chunks", chunks)
	return nil
}

// prune removes the blobs uploaded longer than retain ago.
func (b *BlobSender) prune(ctx context.Context) {
	shas, err := b.src.PruneSentBlobs(ctx, b.clock.Now().Add(-b.retain))
	if err != nil {
		b.log.Warn("uploaded blobs not pruned", "err", err)
		return
	}
	for _, s := range shas {
		if err := b.files.Remove(s); err != nil {
			b.log.Warn("uploaded blob not removed", "sha256", s, "err", err)
		}
	}
	// A photo kept whose event never came (a crash between the two), and
	// a temporary file a write left: removed after an hour.
	if b.clock.Now().Sub(b.started) < orphanAge {
		return // a start after a salvage: the rows may still be coming back
	}
	old := b.clock.Now().Add(-orphanAge)
	b.files.Each(func(sha, path string, mod time.Time) bool {
		if mod.After(old) {
			return true
		}
		if sha == "" {
			os.Remove(path)
			return true
		}
		if known, err := b.src.BlobKnown(ctx, sha); err == nil && !known {
			b.log.Info("photo no event names removed", "sha256", sha)
			b.files.Remove(sha)
		}
		return ctx.Err() == nil
	})
}

// orphanAge is how old a blob file no event names must be to be removed.
const orphanAge = time.Hour

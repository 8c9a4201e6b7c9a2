package uplink

import (
	"context"
	"encoding/json"
	"errors"
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

// ackEvery is how many acknowledged chunks make one write of an upload's
// progress.
const ackEvery = 16

// blobWindow (quickack_*.go) is how many publishes of blobs (manifests
// and chunks) may await their PUBACK at once while no event was committed
// for eventsQuiet; blobBusyWindow is how many while events flow. An event
// published meanwhile waits behind at most that many chunks at the broker
// (BenchmarkPhotoUpload measures both): sixteen and two where the uplink
// acknowledges at once, one elsewhere.
const eventsQuiet = time.Second

// photoShare is the longest a photo publish waits for events that are
// committed one after another without a pause: then one goes anyway, so
// that photos are never starved by a steady stream of scans. Events
// waiting in the buffer (a backlog) always go first.
const photoShare = 100 * time.Millisecond

// streamFor is how long one stream of a photo backlog goes on before the
// uploader stops to prune and to retry unreadable photos.
const streamFor = time.Minute

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
	BlobsToSendAfter(ctx context.Context, after store.Blob, limit int) ([]store.Blob, error)
	// AppendActivity reports whether an event is being committed, and
	// when the last commit of events was answered.
	AppendActivity() (busy bool, last time.Time)
	AckBlob(ctx context.Context, sha string, acked int) error
	BlobSent(ctx context.Context, sha string) error
	PruneSentBlobs(ctx context.Context, before time.Time) ([]string, error)
}

var _ BlobSource = (*store.Outbox)(nil)

// BlobLocker holds a blob by its hash until unlock is called.
type BlobLocker interface {
	Lock(sha string) (unlock func())
}

// BlobFiles reads, lists and removes the blobs kept.
type BlobFiles interface {
	Get(sha string) ([]byte, error)
	Remove(sha string) error
	Each(fn func(sha, path string, mod time.Time) bool) error
}

// blobReader is BlobFiles that can read a blob into a buffer given, which
// the uploader then reuses once the broker acknowledged all of the blob.
type blobReader interface {
	GetInto(sha string, buf []byte) (body, backing []byte, err error)
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
	// Locks, when set, is held for a photo while its file is removed:
	// the lock photo.Keeper holds while it keeps the same bytes.
	Locks BlobLocker
	// Window is how many publishes may await their PUBACK at once while
	// no event was committed for a second (default 16 on Linux, 1
	// elsewhere); BusyWindow is how many while events are committed
	// (default 2 on Linux, 1 elsewhere; never more than Window).
	Window, BusyWindow int
}

// NewBlobSender returns the uploader of src's blobs over pub; uploaded
// blobs are kept retain long, then removed.
func NewBlobSender(pub *Publisher, src BlobSource, files BlobFiles, retain time.Duration, clk clock.Clock, log *slog.Logger, h health.Reporter) *BlobSender {
	return &BlobSender{pub: pub, src: src, files: files, retain: retain, clock: clk, log: log, idle: 200 * time.Millisecond,
		unreadable: map[string]time.Time{}, health: h, started: clk.Now(), Window: blobWindow, BusyWindow: blobBusyWindow}
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
			ready := b.next(ctx, nil)
			if len(ready) > 0 {
				sent, err := b.send(ctx, ready)
				if err != nil && ctx.Err() == nil {
					b.log.Info("photo upload paused", "err", err)
				}
				if sent > 0 {
					wait = 0
				}
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

// blobsPerRead is how many blobs to upload are read from the buffer at a
// time.
const blobsPerRead = 16

// next returns the next blobs to upload, oldest first, after the given one
// (from the first when nil), leaving out those whose file could not be
// read a moment ago. It is empty when there are none, or the buffer could
// not be read (which is logged).
func (b *BlobSender) next(ctx context.Context, after *store.Blob) []store.Blob {
	for {
		var (
			blobs []store.Blob
			err   error
		)
		if after == nil {
			blobs, err = b.src.BlobsToSend(ctx, blobsPerRead)
		} else {
			blobs, err = b.src.BlobsToSendAfter(ctx, *after, blobsPerRead)
		}
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("photos to upload cannot be read", "err", err)
			}
			return nil
		}
		now := b.clock.Now()
		ready := make([]store.Blob, 0, len(blobs))
		for _, bl := range blobs {
			if now.Before(b.unreadable[bl.SHA256]) {
				continue // tried a moment ago
			}
			ready = append(ready, bl)
		}
		if len(ready) > 0 || len(blobs) < blobsPerRead {
			return ready
		}
		after = &blobs[len(blobs)-1] // a whole read of unreadable ones: past them
	}
}

// window is how many publishes may await their PUBACK now: fewer while
// events are committed, so that an event waits behind fewer chunks.
func (b *BlobSender) window() int {
	w := max(b.Window, 1)
	busy, last := b.src.AppendActivity()
	// (A last commit after now is of a clock set back: quiet.)
	if since := b.clock.Now().Sub(last); busy || (!last.IsZero() && since >= 0 && since < eventsQuiet) {
		w = min(w, max(b.BusyWindow, 1))
	}
	return w
}

// eventsFirst waits until the publisher has every committed event on the
// connection, or the link is down.
func (b *BlobSender) eventsFirst(ctx context.Context) error {
	var (
		poll  *time.Timer
		since time.Time
	)
	for {
		// Busy first: an event's position is the buffer's last before its
		// caller is answered, so CaughtUp then covers it.
		if busy, _ := b.src.AppendActivity(); !busy && b.pub.CaughtUp() {
			break
		}
		if !b.pub.State().Connected {
			return ErrOffline
		}
		// An event is being committed (it is published next, and its
		// commit has the cores meanwhile), or waits to be published.
		if poll == nil {
			poll, since = time.NewTimer(eventsPoll), time.Now()
			defer poll.Stop()
		} else if b.pub.caughtUp.Load() && time.Since(since) >= photoShare {
			break // no backlog, only events committed without a pause
		} else {
			poll.Reset(eventsPoll)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
	return nil
}

// eventsPoll is how often eventsFirst looks again: about a commit's time.
const eventsPoll = 500 * time.Microsecond

// upload is one blob on its way: its chunks published so far, and those
// the broker acknowledged (from the first, in order).
type upload struct {
	store.Blob
	chunks  int
	next    int // the next chunk to publish
	acked   int // chunks acknowledged, from the first
	written int // acked as last recorded in the buffer
	// backing is the buffer the blob was read into, reused for another
	// once every publish of the blob is acknowledged.
	backing []byte
}

// inflight is a publish awaiting its PUBACK: a manifest (chunk -1) or a
// chunk of an upload.
type inflight struct {
	tok   mqtt.Token
	up    *upload
	chunk int
}

// loaded is a blob's bytes read ahead of its upload, and the buffer they
// were read into.
type loaded struct {
	data, backing []byte
	err           error
}

// readAhead reads a blob's file on a goroutine of its own, so that the
// next blob is ready when the chunks of the one before are out; into buf
// when the files can.
func (b *BlobSender) readAhead(bl store.Blob, buf []byte) <-chan loaded {
	ch := make(chan loaded, 1)
	go func() {
		if r, ok := b.files.(blobReader); ok {
			d, backing, err := r.GetInto(bl.SHA256, buf)
			ch <- loaded{data: d, backing: backing, err: err}
			return
		}
		d, err := b.files.Get(bl.SHA256)
		ch <- loaded{data: d, err: err}
	}()
	return ch
}

// unreadableBlob notes a blob whose file cannot be read. It was written
// before its event: it is gone, damaged or sealed with a key the key file
// lacks. It is never marked sent (and so never pruned): it is tried again
// later, the others go on meanwhile, and the condition says so.
func (b *BlobSender) unreadableBlob(bl store.Blob, err error) {
	b.unreadable[bl.SHA256] = b.clock.Now().Add(time.Minute)
	b.log.Error("photo to upload cannot be read; tried again in a minute", "sha256", bl.SHA256, "err", err)
	if b.health != nil {
		b.health.Set(ConditionBlobUnreadable, health.Warning, fmt.Sprintf("photo %s cannot be read for its upload: %v", bl.SHA256, err))
	}
}

// progress writes the uploads' progress into the buffer on a goroutine of
// its own, in the order given, so that the chunks of the next blob go
// while the buffer records the one before. A write lost to a crash only
// makes chunks go again.
type progress struct {
	src  BlobSource
	log  *slog.Logger
	ch   chan progressMark
	done chan struct{}
	err  error // the first write that failed; read after done
	// failed is closed when a write fails.
	failed chan struct{}
}

// progressMark is an upload's acknowledged chunks, or sent (the whole blob).
type progressMark struct {
	up    *upload
	acked int
	sent  bool
}

func startProgress(ctx context.Context, src BlobSource, log *slog.Logger) *progress {
	p := &progress{src: src, log: log, ch: make(chan progressMark, 64), done: make(chan struct{}), failed: make(chan struct{})}
	go func() {
		defer close(p.done)
		ctx := context.WithoutCancel(ctx) // the progress is worth keeping on a stop too
		for m := range p.ch {
			if p.err != nil {
				continue
			}
			var err error
			if m.sent {
				// Sent marks it done whatever its acknowledged count: one write.
				err = p.src.BlobSent(ctx, m.up.SHA256)
			} else {
				err = p.src.AckBlob(ctx, m.up.SHA256, m.acked)
			}
			if err != nil {
				p.err = fmt.Errorf("record upload of %s: %w", m.up.SHA256, err)
				close(p.failed)
				continue
			}
			if m.sent {
				p.log.Info("blob uploaded", "sha256", m.up.SHA256, "bytes", m.up.Size, "chunks", m.up.chunks)
			}
		}
	}()
	return p
}

// mark queues a write.
func (p *progress) mark(m progressMark) { p.ch <- m }

// close waits for every write queued and returns the first that failed.
func (p *progress) close() error {
	close(p.ch)
	<-p.done
	return p.err
}

// send uploads blobs, in order, each from its first unacknowledged chunk,
// with up to window() publishes awaiting their PUBACK at once across blob
// boundaries: the next blob's manifest and first chunks go while the last
// chunks of the one before are still on their way. When the last of blobs
// is started, the next ones are read from the buffer, for up to streamFor:
// a backlog goes as one stream. It returns how many blobs it finished. At most two blobs' bytes are held at a time: the one
// being published and the next, read ahead (besides what the connection
// still has to write).
func (b *BlobSender) send(ctx context.Context, blobs []store.Blob) (int, error) {
	var (
		flights []inflight
		cur     *upload   // the blob being published
		data    []byte    // cur's bytes
		started []*upload // those not finished, in order
		done    int
		ahead   <-chan loaded // blobs[0] being read
		// spare are buffers of blobs the broker acknowledged whole (at
		// most two kept), for the next ones read.
		spare [][]byte
	)
	reuse := func() []byte {
		if n := len(spare); n > 0 {
			buf := spare[n-1]
			spare = spare[:n-1]
			return buf
		}
		return nil
	}
	began := time.Now()
	rec := startProgress(ctx, b.src, b.log)
	// record queues the write of an upload's acknowledged count.
	record := func(u *upload) {
		if u.acked != u.written {
			u.written = u.acked
			rec.mark(progressMark{up: u, acked: u.acked})
		}
	}
	finish := func(err error) (int, error) {
		if rerr := rec.close(); rerr != nil {
			// Some completions may not be recorded: they go again.
			return 0, errors.Join(err, rerr)
		}
		return done, err
	}
	stop := func(err error) (int, error) {
		for _, u := range started {
			if u.acked < u.chunks {
				record(u)
			}
		}
		return finish(err)
	}
	for {
		select {
		case <-rec.failed:
			return stop(nil)
		default:
		}
		if len(flights) < b.window() && (cur != nil || len(blobs) > 0) {
			// Events go first: a publish starts only once the publisher
			// has every committed event on the connection.
			if err := b.eventsFirst(ctx); err != nil {
				return stop(err)
			}
			if cur == nil {
				bl := blobs[0]
				blobs = blobs[1:]
				if len(blobs) == 0 && time.Since(began) < streamFor {
					// The last of those read: the next ones are read now, so
					// that their chunks follow its own without a pause.
					blobs = b.next(ctx, &bl)
				}
				if ahead == nil {
					ahead = b.readAhead(bl, reuse())
				}
				got := <-ahead
				ahead = nil
				if len(blobs) > 0 {
					ahead = b.readAhead(blobs[0], reuse())
				}
				if got.err != nil {
					b.unreadableBlob(bl, got.err)
					if got.backing != nil && len(spare) < 2 {
						spare = append(spare, got.backing)
					}
					continue
				}
				delete(b.unreadable, bl.SHA256)
				d := got.data
				chunks := (len(d) + ChunkSize - 1) / ChunkSize
				cur, data = &upload{Blob: bl, chunks: chunks, next: bl.Acked, acked: bl.Acked, written: bl.Acked, backing: got.backing}, d
				started = append(started, cur)
				if bl.Acked > 0 {
					b.log.Info("photo upload resumed", "sha256", bl.SHA256, "from_chunk", bl.Acked, "chunks", chunks)
				}
				m, _ := json.Marshal(Manifest{V: 1, SHA256: bl.SHA256, Size: int64(len(d)), ContentType: bl.ContentType, Kind: bl.Kind,
					ChunkSize: ChunkSize, Chunks: chunks})
				tok, err := b.pub.publishAsync(TopicBlobs+"/"+bl.SHA256, m, true)
				if err != nil {
					return stop(err)
				}
				flights = append(flights, inflight{tok: tok, up: cur, chunk: -1})
				if cur.next >= cur.chunks { // acknowledged whole before a restart
					cur, data = nil, nil
				}
				continue
			}
			n := cur.next
			tok, err := b.pub.publishAsync(TopicBlobs+"/"+cur.SHA256+"/"+strconv.Itoa(n), data[n*ChunkSize:min((n+1)*ChunkSize, len(data))], true)
			if err != nil {
				return stop(err)
			}
			flights = append(flights, inflight{tok: tok, up: cur, chunk: n})
			if cur.next++; cur.next >= cur.chunks {
				cur, data = nil, nil
			}
			continue
		}
		if len(flights) == 0 {
			return finish(nil)
		}
		f := flights[0]
		what := TopicBlobs + "/" + f.up.SHA256
		if err := b.pub.wait(ctx, f.tok, what); err != nil {
			if f.chunk >= 0 {
				err = fmt.Errorf("%s chunk %d: %w", f.up.SHA256, f.chunk, err)
			} else {
				err = fmt.Errorf("%s manifest: %w", f.up.SHA256, err)
			}
			return stop(err)
		}
		flights = flights[1:]
		u := f.up
		if f.chunk >= 0 {
			u.acked++
		}
		if u.acked < u.chunks {
			if u.acked-u.written >= ackEvery {
				record(u)
			}
			continue
		}
		u.written = u.acked
		rec.mark(progressMark{up: u, sent: true})
		done++
		// Every publish of the blob is acknowledged: neither paho nor the
		// connection holds its bytes any more.
		if u.backing != nil && len(spare) < 2 {
			spare = append(spare, u.backing)
		}
		u.backing = nil
		for len(started) > 0 && started[0].acked >= started[0].chunks {
			started = started[1:] // finished: nothing left to record of it
		}
	}
}

// prune removes the blobs uploaded longer than retain ago.
func (b *BlobSender) prune(ctx context.Context) {
	shas, err := b.src.PruneSentBlobs(ctx, b.clock.Now().Add(-b.retain))
	if err != nil {
		b.log.Warn("uploaded blobs not pruned", "err", err)
		return
	}
	for _, s := range shas {
		if removed, err := b.removeUnnamed(ctx, s); err != nil {
			b.log.Warn("uploaded blob not removed", "sha256", s, "err", err)
		} else if !removed {
			b.log.Info("uploaded blob kept: a new event names the same bytes", "sha256", s)
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
		if removed, err := b.removeUnnamed(ctx, sha); err == nil && removed {
			b.log.Info("photo no event names removed", "sha256", sha)
		}
		return ctx.Err() == nil
	})
}

// removeUnnamed removes a blob's file unless an event names it, holding
// the blob's lock meanwhile: the same bytes kept for a new event just now
// stay. It reports whether the file was removed.
func (b *BlobSender) removeUnnamed(ctx context.Context, sha string) (bool, error) {
	if b.Locks != nil {
		defer b.Locks.Lock(sha)()
	}
	known, err := b.src.BlobKnown(ctx, sha)
	if err != nil || known {
		return false, err
	}
	return true, b.files.Remove(sha)
}

// orphanAge is how old a blob file no event names must be to be removed.
const orphanAge = time.Hour

package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// bufferWithBlobs opens a buffer in a new directory, and its blob files
// beside it; the buffer is closed when the test ends.
func bufferWithBlobs(t *testing.T) (dir string, st *store.Outbox, files *blobstore.Store) {
	t.Helper()
	dir = t.TempDir()
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(dir, "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return dir, st, blobstore.New(filepath.Join(dir, "blobs"), nil)
}

// Pruning removes photos uploaded longer than the retention ago, photos no
// event names after an hour (a crash between keeping one and committing
// its event), and temporary files a write left; nothing else.
func TestPruneBlobs(t *testing.T) {
	ctx := context.Background()
	dir, st, files := bufferWithBlobs(t)
	put := func(s string) string {
		sha, err := files.Put([]byte("\xff\xd8\xff" + s))
		if err != nil {
			t.Fatal(err)
		}
		return sha
	}
	name := func(sha string) {
		if _, err := st.Append(ctx, event.Event{Appliance: "a", Type: event.TypeParcelUpdated, Time: time.Now(), ParcelID: "p",
			Photos: []event.Photo{{SHA256: sha, Size: 1, ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
			t.Fatal(err)
		}
	}
	sent, waiting, orphan, fresh := put("sent"), put("waiting"), put("orphan"), put("fresh")
	name(sent)
	name(waiting)
	if err := st.BlobSent(ctx, sent); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "blobs", orphan[:2], ".tmp-123")
	os.WriteFile(tmp, []byte("half"), 0o600)
	hourAgo := time.Now().Add(-2 * time.Hour)
	for _, sha := range []string{sent, waiting, orphan} {
		os.Chtimes(files.Path(sha), hourAgo, hourAgo)
	}
	os.Chtimes(tmp, hourAgo, hourAgo)
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	time.Sleep(5 * time.Millisecond) // the sent one's retention (none) has passed
	b := NewBlobSender(nil, st, files, 0, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	b.prune(ctx)
	if !exists(files.Path(orphan)) {
		t.Fatal("an orphan was removed in the first hour after a start (rows may still come back after a salvage)")
	}
	b.started = time.Now().Add(-2 * time.Hour)
	b.prune(ctx)
	if exists(files.Path(sent)) || exists(files.Path(orphan)) || exists(tmp) {
		t.Fatal("a sent photo past its retention, an orphan or a temporary file was kept")
	}
	if !exists(files.Path(waiting)) || !exists(files.Path(fresh)) {
		t.Fatal("a photo waiting for its upload, or one just kept, was removed")
	}
}

// activity is a buffer as window sees it: only its commits of events.
type activity struct {
	BlobSource
	busy bool
	last time.Time
}

func (a activity) AppendActivity() (bool, time.Time) { return a.busy, a.last }

// The window narrows while an event is committed and for a second after
// the last commit, and is wide otherwise: before any commit, and after a
// clock set back behind the last commit.
func TestBlobWindowNarrowsWhileEventsFlow(t *testing.T) {
	now := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		src  activity
		want int
	}{
		{"no commit yet", activity{}, 16},
		{"committing now", activity{busy: true, last: now.Add(-time.Hour)}, 2},
		{"committed just now", activity{last: now}, 2},
		{"committed 999 ms ago", activity{last: now.Add(-999 * time.Millisecond)}, 2},
		{"committed a second ago", activity{last: now.Add(-time.Second)}, 16},
		{"clock set back behind the last commit", activity{last: now.Add(time.Hour)}, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBlobSender(nil, tc.src, nil, 0, clock.NewFake(now), slog.New(slog.DiscardHandler), nil)
			b.Window, b.BusyWindow = 16, 2
			if got := b.window(); got != tc.want {
				t.Fatalf("window %d, want %d", got, tc.want)
			}
		})
	}
	b := NewBlobSender(nil, activity{busy: true}, nil, 0, clock.NewFake(now), slog.New(slog.DiscardHandler), nil)
	b.Window, b.BusyWindow = 1, 4
	if got := b.window(); got != 1 {
		t.Fatalf("a busy window larger than the window: %d, want 1", got)
	}
}

// committing is a buffer as eventsFirst sees it: an event being committed
// or not, and the newest event's position.
type committing struct {
	Source
	BlobSource
	busy atomic.Bool
}

func (c *committing) AppendActivity() (bool, time.Time) { return c.busy.Load(), time.Time{} }
func (c *committing) LastPos() int64                    { return 7 }

// eventsFirstRig is a blob sender whose publisher is connected with every
// event up to the buffer's last on the connection (backlog false) or with
// events left to publish (backlog true).
func eventsFirstRig(backlog bool) (*BlobSender, *committing, *Publisher) {
	src := &committing{}
	p := &Publisher{src: src}
	p.state.Connected = true
	p.caughtUp.Store(!backlog)
	if !backlog {
		p.onConn.Store(7)
	}
	return NewBlobSender(p, src, nil, 0, clock.Real{}, slog.New(slog.DiscardHandler), nil), src, p
}

// eventsFirstAsync runs eventsFirst and delivers its result.
func eventsFirstAsync(ctx context.Context, b *BlobSender) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.eventsFirst(ctx) }()
	return done
}

// A photo publish waits while an event is being committed, and goes once
// the commit is answered.
func TestPhotosWaitWhileAnEventIsCommitted(t *testing.T) {
	b, src, _ := eventsFirstRig(false)
	if err := b.eventsFirst(context.Background()); err != nil {
		t.Fatalf("nothing committed: %v", err)
	}
	src.busy.Store(true)
	done := eventsFirstAsync(context.Background(), b)
	select {
	case err := <-done:
		t.Fatalf("went while an event was being committed: %v", err)
	case <-time.After(photoShare / 2):
	}
	src.busy.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the commit was answered")
	}
}

// Events committed one after another without a pause hold a photo publish
// back for photoShare at most; a backlog of events holds it back until it
// is on the connection, and a link that is down ends the wait.
func TestPhotosGetAShareButBacklogsGoFirst(t *testing.T) {
	b, src, _ := eventsFirstRig(false)
	src.busy.Store(true) // for ever
	began := time.Now()
	if err := b.eventsFirst(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < photoShare || took > photoShare+2*time.Second {
		t.Fatalf("a photo publish waited %v behind a steady stream of commits, want about %v", took, photoShare)
	}

	b, _, p := eventsFirstRig(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := eventsFirstAsync(ctx, b)
	select {
	case err := <-done:
		t.Fatalf("went before a backlog of events: %v", err)
	case <-time.After(3 * photoShare):
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("cancelled wait: %v", err)
	}
	p.mu.Lock()
	p.state.Connected = false
	p.mu.Unlock()
	if err := b.eventsFirst(context.Background()); err != ErrOffline {
		t.Fatalf("link down: %v, want ErrOffline", err)
	}
}

// unreadableAhead is a buffer whose first read of blobs to upload finds
// only photos that could not be read a moment ago, and the next read one
// that can.
type unreadableAhead struct {
	BlobSource
	first []store.Blob
	then  store.Blob
}

func (u unreadableAhead) BlobsToSend(context.Context, int) ([]store.Blob, error) { return u.first, nil }

func (u unreadableAhead) BlobsToSendAfter(_ context.Context, after store.Blob, _ int) ([]store.Blob, error) {
	if after.SHA256 == u.first[len(u.first)-1].SHA256 {
		return []store.Blob{u.then}, nil
	}
	return nil, nil
}

// A whole read of photos that could not be read a moment ago does not
// hold up the photos behind them.
func TestUnreadablePhotosDoNotHoldUpOthers(t *testing.T) {
	src := unreadableAhead{then: store.Blob{SHA256: "readable"}}
	b := NewBlobSender(nil, nil, nil, 0, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	for i := range blobsPerRead {
		bl := store.Blob{SHA256: fmt.Sprint("unreadable-", i)}
		src.first = append(src.first, bl)
		b.unreadable[bl.SHA256] = time.Now().Add(time.Minute)
	}
	b.src = src
	got := b.next(context.Background(), nil)
	if len(got) != 1 || got[0].SHA256 != "readable" {
		t.Fatalf("next photos to upload: %+v, want the readable one behind %d unreadable", got, blobsPerRead)
	}
}

// renamedWhilePruned is a buffer in which, as its uploaded blobs are
// pruned, a new event names the same bytes again (a photo.Keeper keeping
// them for another parcel at that moment).
type renamedWhilePruned struct {
	*store.Outbox
	t *testing.T
}

func (r renamedWhilePruned) PruneSentBlobs(ctx context.Context, before time.Time) ([]string, error) {
	shas, err := r.Outbox.PruneSentBlobs(ctx, before)
	for _, sha := range shas {
		if _, err := r.Append(ctx, event.Event{Appliance: "a", Type: event.TypeParcelUpdated, Time: time.Now(), ParcelID: "p2",
			Photos: []event.Photo{{SHA256: sha, Size: 1, ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
			r.t.Fatal(err)
		}
	}
	return shas, err
}

// lockLog records the blobs locked.
type lockLog struct{ locked []string }

func (l *lockLog) Lock(sha string) func() { l.locked = append(l.locked, sha); return func() {} }

// An uploaded photo past its retention is not removed when a new event
// names the same bytes by then, and its removal holds the photo's lock.
func TestPruneKeepsBytesNamedAgain(t *testing.T) {
	ctx := context.Background()
	_, st, files := bufferWithBlobs(t)
	sha, err := files.Put([]byte("\xff\xd8\xff the same label"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, event.Event{Appliance: "a", Type: event.TypeParcelUpdated, Time: time.Now(), ParcelID: "p1",
		Photos: []event.Photo{{SHA256: sha, Size: 1, ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.BlobSent(ctx, sha); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // past its retention (none)
	b := NewBlobSender(nil, renamedWhilePruned{Outbox: st, t: t}, files, 0, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	locks := &lockLog{}
	b.Locks = locks
	b.prune(ctx)
	if _, err := os.Stat(files.Path(sha)); err != nil {
		t.Fatalf("a photo a new event names was removed: %v", err)
	}
	if len(locks.locked) != 1 || locks.locked[0] != sha {
		t.Fatalf("locks held while pruning: %v, want the photo's", locks.locked)
	}
}

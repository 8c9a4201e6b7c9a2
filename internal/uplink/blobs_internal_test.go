package uplink

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Pruning removes photos uploaded longer than the retention ago, photos no
// event names after an hour (a crash between keeping one and committing
// its event), and temporary files a write left; nothing else.
func TestPruneBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{Path: filepath.Join(dir, "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	files := blobstore.New(filepath.Join(dir, "blobs"), nil)
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

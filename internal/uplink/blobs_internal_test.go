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

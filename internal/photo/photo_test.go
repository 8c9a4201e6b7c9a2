package photo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/photo"
	"github.com/mailroomd/mailroomd/internal/store"
)

// refusing commits to the buffer, except events of the parcel "closed",
// which it refuses as the buffer refuses a delivered parcel's.
type refusing struct{ *store.Outbox }

func (r refusing) Append(ctx context.Context, ev event.Event) (event.Event, error) {
	if ev.ParcelID == "closed" {
		return event.Event{}, &store.RefusedError{Code: store.RefusedClosed, ParcelID: ev.ParcelID, State: store.StateDelivered}
	}
	return r.Outbox.Append(ctx, ev)
}

type rig struct {
	st     *store.Outbox
	files  *blobstore.Store
	alerts *health.Tracker
	k      *photo.Keeper
}

func newRig(t *testing.T, maxTotal int64) *rig {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	files := blobstore.New(filepath.Join(t.TempDir(), "blobs"), nil)
	alerts := health.NewTracker(clock.Real{}, nil)
	return &rig{st: st, files: files, alerts: alerts, k: &photo.Keeper{Store: files, Index: st, Custody: refusing{st}, Alerts: alerts,
		MaxSize: 64 << 10, MaxTotal: maxTotal, Appliance: "mr-test", Now: time.Now, Log: slog.New(slog.DiscardHandler)}}
}

func jpegOf(t *testing.T, w, h int, fill byte) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = fill
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func (r *rig) exists(sha string) bool {
	_, err := os.Stat(r.files.Path(sha))
	return err == nil
}

// Check refuses what is not a photo, each with its code.
func TestCheck(t *testing.T) {
	r := newRig(t, 1<<20)
	for _, c := range []struct {
		name string
		p    photo.Photo
		code string
	}{
		{"unknown kind", photo.Photo{Kind: "selfie", Body: jpegOf(t, 8, 8, 1)}, photo.CodeBadKind},
		{"empty", photo.Photo{Kind: "label"}, photo.CodeEmpty},
		{"too large", photo.Photo{Kind: "label", Body: make([]byte, 64<<10+1)}, photo.CodeTooLarge},
		{"not a picture", photo.Photo{Kind: "label", Body: []byte("%PDF-1.7 not a photo")}, photo.CodeBadType},
		{"header only", photo.Photo{Kind: "label", Body: []byte("\xff\xd8\xff\xe0 broken")}, photo.CodeBadType},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.k.Check(c.p)
			if e, ok := photo.IsRefused(err); !ok || e.Code != c.code {
				t.Fatalf("got %v, want code %s", err, c.code)
			}
		})
	}
	// A photo larger than the whole store could never be kept: too large,
	// not "full" (nothing is).
	small := newRig(t, 100)
	if _, err := small.k.Keep(context.Background(), photo.Photo{ParcelID: "p", Kind: "label", Body: jpegOf(t, 8, 8, 1)}); err == nil ||
		!strings.Contains(err.Error(), "a photo may be 0 KiB at most") || len(small.alerts.Active()) != 0 {
		t.Fatalf("a photo over the whole store: %v %+v", err, small.alerts.Active())
	}
	if ct, err := r.k.Check(photo.Photo{Kind: "damage", Body: jpegOf(t, 8, 8, 1)}); err != nil || ct != "image/jpeg" {
		t.Fatalf("a JPEG: %q %v", ct, err)
	}
}

// A photo is kept before the event that names it; a photo whose event is
// refused is removed again, unless another event names the same bytes.
func TestKeepAndRemoveOnRefusal(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 1<<20)
	body := jpegOf(t, 16, 16, 7)
	kept, err := r.k.Keep(ctx, photo.Photo{ParcelID: "open", Kind: "label", By: "camera:cam", Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if !r.exists(kept.SHA256) || kept.Size != int64(len(body)) || kept.ContentType != "image/jpeg" ||
		kept.Event.Type != event.TypeParcelUpdated || kept.Event.By != "camera:cam" || len(kept.Event.Photos) != 1 ||
		kept.Event.Photos[0].SHA256 != kept.SHA256 || kept.Event.Photos[0].Kind != "label" || kept.Event.Seq == 0 {
		t.Fatalf("kept: %+v", kept)
	}
	// The same bytes for a closed parcel: refused, and the file stays,
	// since the first event names it.
	var refused *store.RefusedError
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "closed", Kind: "label", Body: body}); !errors.As(err, &refused) {
		t.Fatalf("a closed parcel's photo: %v", err)
	}
	if !r.exists(kept.SHA256) {
		t.Fatal("a photo an event names was removed when another event of it was refused")
	}
	// Other bytes for a closed parcel: refused and removed.
	other := jpegOf(t, 16, 16, 200)
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "closed", Kind: "label", Body: other}); !errors.As(err, &refused) {
		t.Fatalf("a closed parcel's photo: %v", err)
	}
	if r.exists(blobstore.Sum(other)) {
		t.Fatal("a photo no event names was kept")
	}
}

// Past the total cap a photo is refused loudly (photos.full) and nothing
// kept is dropped; a photo kept again clears the condition.
func TestKeepFull(t *testing.T) {
	ctx := context.Background()
	first := jpegOf(t, 64, 64, 1)
	r := newRig(t, int64(len(first))+10)
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p1", Kind: "label", Body: first}); err != nil {
		t.Fatal(err)
	}
	second := jpegOf(t, 64, 64, 99)
	_, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p2", Kind: "label", Body: second})
	if e, ok := photo.IsRefused(err); !ok || e.Code != photo.CodeFull {
		t.Fatalf("over the cap: %v", err)
	}
	if a := r.alerts.Active(); len(a) != 1 || a[0].Key != photo.ConditionFull {
		t.Fatalf("conditions: %+v", a)
	}
	if !r.exists(blobstore.Sum(first)) || r.exists(blobstore.Sum(second)) {
		t.Fatal("a kept photo was dropped, or the refused one kept")
	}
	// The same bytes as a photo kept take no more room: kept for another
	// parcel while the store is full (a station camera's fixed picture).
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p3", Kind: "label", Body: first}); err != nil {
		t.Fatalf("the same bytes again while full: %v", err)
	}
	if a := r.alerts.Active(); len(a) != 1 || a[0].Key != photo.ConditionFull {
		t.Fatalf("photos.full cleared by bytes kept already, while still full: %+v", a)
	}
	r.k.MaxTotal = 1 << 20
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p2", Kind: "label", Body: second}); err != nil {
		t.Fatal(err)
	}
	if a := r.alerts.Active(); len(a) != 0 {
		t.Fatalf("photos.full not cleared by a photo kept: %+v", a)
	}
}

// The same bytes kept at once for parcels whose events are refused and
// for parcels whose events are committed: every event names a photo on
// disk (a refused one's removal never takes the bytes another is about to
// name), through Keepers sharing their Locks.
func TestSameBytesAtOnce(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 1<<30)
	locks := &photo.Locks{}
	for round := range 40 {
		body := jpegOf(t, 32, 32, byte(round)) // fresh bytes each round
		var wg sync.WaitGroup
		for i := range 8 {
			k := &photo.Keeper{Store: r.files, Index: r.st, Custody: refusing{r.st}, MaxSize: r.k.MaxSize, MaxTotal: r.k.MaxTotal,
				Now: time.Now, Log: r.k.Log, Locks: locks} // a Keeper each, as each camera and the page have
			parcel := "open"
			if i%2 == 0 {
				parcel = "closed"
			}
			wg.Go(func() { k.Keep(ctx, photo.Photo{ParcelID: parcel, Kind: "label", Body: body}) })
		}
		wg.Wait()
		if !r.exists(blobstore.Sum(body)) {
			t.Fatalf("round %d: events name a photo that is not on disk", round)
		}
	}
}

// TestKeepLeavesRoomForScans: a new photo that would leave less than
// ReserveBytes free on the volume is refused as for a full disk, so that
// photos never take the room the scans need; bytes kept already are
// still named, and room again takes new photos.
func TestKeepLeavesRoomForScans(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 1<<30)
	first, second := jpegOf(t, 64, 64, 1), jpegOf(t, 64, 64, 99)
	free := uint64(photo.ReserveBytes + len(first) + 100)
	r.k.Free = func() (uint64, error) { return free, nil }
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p1", Kind: "label", Body: first}); err != nil {
		t.Fatalf("a photo that leaves the reserve free: %v", err)
	}
	free = photo.ReserveBytes + 10
	_, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p2", Kind: "label", Body: second})
	if e, ok := photo.IsRefused(err); !ok || e.Code != photo.CodeDiskFull || e.Msg != photo.DiskFullMessage {
		t.Fatalf("a photo into the scans' room: %v", err)
	}
	if r.exists(blobstore.Sum(second)) {
		t.Fatal("the refused photo was kept")
	}
	if a := r.alerts.Active(); len(a) != 1 || a[0].Key != photo.ConditionFull {
		t.Fatalf("conditions: %+v", a)
	}
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p3", Kind: "label", Body: first}); err != nil {
		t.Fatalf("bytes kept already, named again: %v", err)
	}
	free = 1 << 30
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p2", Kind: "label", Body: second}); err != nil {
		t.Fatalf("with room again: %v", err)
	}
}

// fullPut is a photo store whose disk is full.
type fullPut struct{ *blobstore.Store }

func (fullPut) Put([]byte) (string, error) {
	return "", fmt.Errorf("keep blob: write: %w", syscall.ENOSPC)
}

// fullAppend is a buffer whose disk is full for events.
type fullAppend struct{ *store.Outbox }

func (fullAppend) Append(context.Context, event.Event) (event.Event, error) {
	return event.Event{}, fmt.Errorf("commit: %w", syscall.ENOSPC)
}

// TestKeepOnAFullDisk: a disk that fills anyway (something else wrote to
// it) refuses the photo as disk_full, whether the photo's file or its
// event did not fit; a photo kept whose event did not fit is removed.
func TestKeepOnAFullDisk(t *testing.T) {
	ctx := context.Background()
	body := jpegOf(t, 64, 64, 7)
	for name, set := range map[string]func(r *rig){
		"the photo's file": func(r *rig) { r.k.Store = fullPut{r.files} },
		"its event":        func(r *rig) { r.k.Custody = fullAppend{r.st} },
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, 1<<30)
			set(r)
			_, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p1", Kind: "label", Body: body})
			if e, ok := photo.IsRefused(err); !ok || e.Code != photo.CodeDiskFull || e.Msg != photo.DiskFullMessage {
				t.Fatalf("on a full disk: %v", err)
			}
			if r.exists(blobstore.Sum(body)) {
				t.Fatal("a photo no event names was left on the disk")
			}
			if a := r.alerts.Active(); len(a) != 1 || a[0].Key != photo.ConditionFull {
				t.Fatalf("conditions: %+v", a)
			}
		})
	}
}

// TestReserveCountsPhotosBeingKept: photos kept at once by Keepers that
// share their Locks each leave the reserve free after the others' bytes
// too; a free space that cannot be read keeps the photo.
func TestReserveCountsPhotosBeingKept(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 1<<30)
	locks := &photo.Locks{}
	r.k.Locks = locks
	first, second := jpegOf(t, 64, 64, 1), jpegOf(t, 64, 64, 2)
	free := uint64(photo.ReserveBytes + len(first) + len(second) - 1)
	var inner error
	// While the first photo's free space is read, a second Keeper keeps
	// another photo: together they would go into the reserve.
	other := &photo.Keeper{Store: r.k.Store, Index: r.k.Index, Custody: r.k.Custody, Alerts: r.k.Alerts, MaxSize: r.k.MaxSize,
		MaxTotal: r.k.MaxTotal, Appliance: "mr-test", Now: time.Now, Log: r.k.Log, Locks: locks,
		Free: func() (uint64, error) { return free, nil }}
	r.k.Free = func() (uint64, error) {
		_, inner = other.Keep(ctx, photo.Photo{ParcelID: "p2", Kind: "label", Body: second})
		return free, nil
	}
	_, outer := r.k.Keep(ctx, photo.Photo{ParcelID: "p1", Kind: "label", Body: first})
	if e, ok := photo.IsRefused(inner); !ok || e.Code != photo.CodeDiskFull || outer != nil {
		t.Fatalf("two photos that fit only one at a time: the one kept meanwhile %v, the first %v; want the second refused", inner, outer)
	}
	r.k.Free = func() (uint64, error) { return 0, errors.New("statfs: no such device") }
	if _, err := r.k.Keep(ctx, photo.Photo{ParcelID: "p3", Kind: "label", Body: jpegOf(t, 64, 64, 3)}); err != nil {
		t.Fatalf("free space unknown: %v", err)
	}
}

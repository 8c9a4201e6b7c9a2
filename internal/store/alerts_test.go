package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
)

func TestAlertStateSurvivesReopenAndKeepsTheLatestPerKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	v1, err := o.SetAlert(ctx, "clock.unsynchronized", []byte(`{"key":"clock.unsynchronized"}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.AlertSent(ctx, "clock.unsynchronized", v1); err != nil {
		t.Fatal(err)
	}
	// Raised while offline, then cleared while still offline: one row, the
	// clear, waiting.
	vr, _ := o.SetAlert(ctx, "disk.free_low", []byte(`raised`), true)
	vc, _ := o.SetAlert(ctx, "disk.free_low", []byte(`cleared`), false)
	if vc <= vr || vr <= v1 {
		t.Fatalf("versions %d, %d, %d do not increase", v1, vr, vc)
	}
	// A publish of the older state marks nothing: the clear still waits.
	if err := o.AlertSent(ctx, "disk.free_low", vr); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	o = open(t, path, Options{})
	got, err := o.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d alert rows after reopen, want 2: %+v", len(got), got)
	}
	if a := got[0]; a.Key != "clock.unsynchronized" || !a.Active || a.Unsent || a.Version != v1 {
		t.Fatalf("first row %+v: want the active, published clock alert", a)
	}
	if a := got[1]; a.Key != "disk.free_low" || a.Active || !a.Unsent || string(a.Body) != "cleared" {
		t.Fatalf("second row %+v: want the waiting clear of disk.free_low", a)
	}
	// Its clear published: the key is forgotten.
	if err := o.AlertSent(ctx, "disk.free_low", got[1].Version); err != nil {
		t.Fatal(err)
	}
	v4, _ := o.SetAlert(ctx, "probe.failed", []byte(`x`), true)
	got, _ = o.Alerts(ctx)
	if len(got) != 2 || got[0].Key != "clock.unsynchronized" || got[1].Key != "probe.failed" {
		t.Fatalf("rows %+v: want the clock alert and the new probe alert", got)
	}
	// Versions go on increasing across a reopen even when the newest row
	// is gone: a stale publish can never mark a newer state sent.
	if err := o.AlertSent(ctx, "probe.failed", v4); err != nil {
		t.Fatal(err)
	}
	v5, _ := o.SetAlert(ctx, "probe.failed", []byte(`cleared`), false)
	if err := o.AlertSent(ctx, "probe.failed", v5); err != nil { // the newest row goes
		t.Fatal(err)
	}
	o.Close()
	o = open(t, path, Options{})
	defer o.Close()
	v6, _ := o.SetAlert(ctx, "disk.free_low", []byte(`again`), true)
	if v6 <= v1 {
		t.Fatalf("version %d after a reopen is not above %d, the highest left", v6, v1)
	}
}

// TestLabelPrintedOnce: a label job gets its label.printed event once; a
// second call for the same job commits nothing, and a full buffer still
// removes the job of a label that was printed.
func TestLabelPrintedOnce(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{MaxPending: 2})
	defer o.Close()
	printed := event.Event{Appliance: "mr-t", Type: event.TypeLabelPrinted, Time: time.Now(), Station: "dock-1", ParcelID: "p1"}
	id, err := o.QueueLabel(ctx, "dock-1", "p1", []byte("^XA^XZ"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.LabelPrinted(ctx, id, printed); err != nil {
		t.Fatal(err)
	}
	if _, err := o.LabelPrinted(ctx, id, printed); err == nil {
		t.Fatal("a second label.printed for the same job was committed")
	}
	if got, _ := o.Recent(ctx, 10, event.TypeLabelPrinted); len(got) != 1 {
		t.Fatalf("%d label.printed events, want 1", len(got))
	}
	// Full: one more event fits (MaxPending 2), then none.
	appendN(t, o, 1)
	id2, _ := o.QueueLabel(ctx, "dock-1", "p2", []byte("^XA^XZ"), time.Now())
	if _, err := o.LabelPrinted(ctx, id2, printed); !errors.Is(err, ErrFull) {
		t.Fatalf("label.printed on a full buffer: %v, want ErrFull", err)
	}
	if jobs, _ := o.LabelJobs(ctx, "dock-1"); len(jobs) != 0 {
		t.Fatalf("%d jobs left: a printed label's job must go even when its event is refused", len(jobs))
	}
}

package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
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

// TestAppendWithLabel: the label is drawn with the event's id and queued
// in the event's transaction (sealed like any job on a sealed buffer); a
// label that cannot be drawn, or one beyond a full queue, leaves the
// event committed and says so; a refused event queues no label.
func TestAppendWithLabel(t *testing.T) {
	plainAndSealed(t, Options{MaxPending: 5}, func(t *testing.T, opts Options) {
		ctx := context.Background()
		o := open(t, filepath.Join(t.TempDir(), "buffer.db"), opts)
		defer o.Close()
		rcv := func(tracking string) event.Event {
			return event.Event{Appliance: "mr-t", Type: event.TypeParcelReceived, Time: t0, Station: "dock-1",
				Parcel: &event.Parcel{Carrier: "ups", Tracking: tracking, Check: "valid"}}
		}
		draw := func(id string) ([]byte, error) { return []byte("^XA^FD" + id + "^FS^XZ"), nil }
		ev, job, err := o.AppendWithLabel(ctx, rcv("1Z1"), "dock-1", t0, draw)
		if err != nil || ev.ID == "" || job.ID == 0 || job.ParcelID != ev.ID || string(job.Data) != "^XA^FD"+ev.ID+"^FS^XZ" {
			t.Fatalf("AppendWithLabel = %+v, %+v, %v; want the event and its label, drawn with its id", ev, job, err)
		}
		jobs, err := o.LabelJobs(ctx, "dock-1")
		if err != nil || len(jobs) != 1 || jobs[0].ID != job.ID || !bytes.Equal(jobs[0].Data, job.Data) {
			t.Fatalf("queued jobs = %+v, %v; want the one label", jobs, err)
		}
		// On disk the label is sealed when the buffer is.
		var stored []byte
		var keyID sql.NullString
		if err := o.rdb.QueryRowContext(ctx, "SELECT data, key_id FROM print_jobs WHERE id = ?", job.ID).Scan(&stored, &keyID); err != nil {
			t.Fatal(err)
		}
		if sealed := opts.Seal != nil; keyID.Valid != sealed || bytes.Equal(stored, job.Data) == sealed {
			t.Fatalf("stored label %q with key %v; sealed: %v", stored, keyID, sealed)
		}

		broken := func(string) ([]byte, error) { return nil, errors.New("no font") }
		ev2, job2, err := o.AppendWithLabel(ctx, rcv("1Z2"), "dock-1", t0, broken)
		var lerr *LabelError
		if !errors.As(err, &lerr) || ev2.ID == "" || job2.ID != 0 || !strings.Contains(err.Error(), "no font") {
			t.Fatalf("a label that cannot be drawn: %+v, %+v, %v; want the event committed and a LabelError", ev2, job2, err)
		}
		if p, err := o.FindParcel(ctx, "1Z2"); err != nil || p.ID != ev2.ID {
			t.Fatalf("the parcel whose label failed: %+v, %v", p, err)
		}

		panicky := func(string) ([]byte, error) { panic("template broken") }
		if _, _, err := o.AppendWithLabel(ctx, rcv("1Z4"), "dock-1", t0, panicky); !errors.As(err, &lerr) {
			t.Fatalf("a label whose drawing panics: %v; want a LabelError and the writer alive", err)
		}

		// MaxPending 5: three events are in; two more fit, then none.
		appendN(t, o, 2)
		if _, _, err := o.AppendWithLabel(ctx, rcv("1Z3"), "dock-1", t0, draw); !errors.Is(err, ErrFull) {
			t.Fatalf("on a full buffer: %v, want ErrFull", err)
		}
		if jobs, _ := o.LabelJobs(ctx, "dock-1"); len(jobs) != 1 {
			t.Fatalf("%d jobs after a refused event; want the first one only", len(jobs))
		}
	})
}

// TestAppendWithLabelOnAFullQueue: with MaxLabelJobs labels waiting, a
// parcel is still recorded, and its label is not queued.
func TestAppendWithLabelOnAFullQueue(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	var wg sync.WaitGroup
	for i := range MaxLabelJobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := o.QueueLabel(ctx, "dock-1", fmt.Sprintf("p%d", i), []byte("^XA^XZ"), t0); err != nil {
				t.Error(err)
			}
		}()
		if i%64 == 63 {
			wg.Wait() // batches of 64 commits
		}
	}
	wg.Wait()
	ev, job, err := o.AppendWithLabel(ctx, event.Event{Appliance: "mr-t", Type: event.TypeParcelReceived, Time: t0, Station: "dock-1",
		Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z9", Check: "valid"}}, "dock-1", t0,
		func(id string) ([]byte, error) { return []byte(id), nil })
	var lerr *LabelError
	if !errors.As(err, &lerr) || ev.ID == "" || job.ID != 0 || !strings.Contains(err.Error(), "1000 labels already wait") {
		t.Fatalf("on a full queue: %+v, %+v, %v; want the parcel recorded and a LabelError", ev, job, err)
	}
	if jobs, _ := o.LabelJobs(ctx, "dock-1"); len(jobs) != MaxLabelJobs {
		t.Fatalf("%d jobs; want %d", len(jobs), MaxLabelJobs)
	}
}

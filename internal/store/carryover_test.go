package store

import (
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailroomd/mailroomd/internal/event"
)

func copyBuffer(t *testing.T, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		in, err := os.Open(from + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(to + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

// TestRollbackCarriesTheTrialsEvents: the events a version on trial
// committed before its update was rolled back are carried into the backup
// put back in its place, with their ids, seqs and bytes, in order, with
// their parcel states and unresolved scans; once, however often the
// buffer is opened again.
func TestRollbackCarriesTheTrialsEvents(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "buffer.db"), filepath.Join(dir, "backup.db")
	o := open(t, path, Options{})
	rcv := receive(t, o, "T1", "EMP-1", "", t0)
	appendN(t, o, 2)
	o.Close()
	copyBuffer(t, path, backup)

	// The version on trial moves the parcel and takes a scan at a station.
	o = open(t, path, Options{})
	mv := custody(event.TypeParcelMoved, rcv.ID, t0)
	mv.Location = "SHELF-B02"
	moved, err := o.Append(ctx, mv)
	if err != nil {
		t.Fatal(err)
	}
	sc := scan("UNRESOLVED-1")
	sc.Station = "dock-1"
	scanned, err := o.Append(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	trial, _ := o.Pending(ctx, 0, 10)
	o.Close()

	aside, err := SetAside(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the buffer on trial is still in place: %v", err)
	}
	copyBuffer(t, backup, path)

	for range 2 { // the second open carries nothing again
		o = open(t, path, Options{})
		got, _ := o.Pending(ctx, 0, 10)
		if len(got) != len(trial) {
			t.Fatalf("%d events after the rollback, want the trial's %d", len(got), len(trial))
		}
		for i := range got {
			if got[i].Seq != trial[i].Seq || got[i].ID != trial[i].ID || string(got[i].Payload) != string(trial[i].Payload) {
				t.Fatalf("event %d after the rollback: seq %d id %s, want seq %d id %s, the same bytes",
					i, got[i].Seq, got[i].ID, trial[i].Seq, trial[i].ID)
			}
		}
		if p := state(t, o, rcv.ID); p.Location != "SHELF-B02" {
			t.Fatalf("parcel state after the rollback: location %q, want the trial's move", p.Location)
		}
		if un, _ := o.Unresolved(ctx, "dock-1"); len(un) != 1 || un[0].ID != scanned.ID {
			t.Fatalf("unresolved scans after the rollback: %v", un)
		}
		if st, _ := o.Stats(ctx); st.Pending != int64(len(trial)) {
			t.Fatalf("pending = %d, want %d", st.Pending, len(trial))
		}
		o.Close()
	}
	o = open(t, path, Options{})
	defer o.Close()
	next := appendN(t, o, 1)[0]
	if next.Seq != scanned.Seq+1 || next.ID <= scanned.ID || moved.Seq != scanned.Seq-1 {
		t.Fatalf("the next event: seq %d id %s; want seq %d and an id after %s", next.Seq, next.ID, scanned.Seq+1, scanned.ID)
	}
	if _, err := os.Stat(carryMarker(path)); !os.IsNotExist(err) {
		t.Fatalf("the carry-over marker is still there: %v", err)
	}
	if _, err := os.Stat(aside); err != nil {
		t.Fatalf("the buffer set aside is gone: %v", err)
	}
	db, err := sql.Open("sqlite3", "file:"+aside+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM events").Scan(&n); err != nil || n != len(trial) {
		t.Fatalf("the buffer set aside holds %d events (%v), want %d", n, err, len(trial))
	}
}

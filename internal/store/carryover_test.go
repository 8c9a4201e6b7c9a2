package store

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
	atStation := scanned

	aside, err := SetAside(path, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the buffer on trial is still in place: %v", err)
	}
	copyBuffer(t, backup, path)

	for i := range 2 { // the second open carries nothing again
		o = open(t, path, Options{})
		if i == 0 {
			// Seqs, positions and ids go on after the carried events at
			// once, not only after a restart.
			if st, _ := o.Stats(ctx); st.LastSeq != scanned.Seq {
				t.Fatalf("last seq after carrying = %d, want %d", st.LastSeq, scanned.Seq)
			}
			if o.LastPos() != int64(len(trial)) {
				t.Fatalf("last position after carrying = %d, want %d", o.LastPos(), len(trial))
			}
		}
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
		if un, _ := o.Unresolved(ctx, "dock-1"); len(un) != 1 || un[0].ID != atStation.ID {
			t.Fatalf("unresolved scans after the rollback: %v", un)
		}
		if st, _ := o.Stats(ctx); st.Pending != int64(len(trial)) {
			t.Fatalf("pending = %d, want %d", st.Pending, len(trial))
		}
		if i == 0 {
			extra := appendN(t, o, 1)[0]
			if extra.Seq != scanned.Seq+1 || extra.ID <= scanned.ID {
				t.Fatalf("the event after carrying: seq %d id %s; want seq %d and an id after %s", extra.Seq, extra.ID, scanned.Seq+1, scanned.ID)
			}
			scanned = extra
			trial, _ = o.Pending(ctx, 0, 10)
		}
		o.Close()
	}
	o = open(t, path, Options{})
	defer o.Close()
	next := appendN(t, o, 1)[0]
	if next.Seq != scanned.Seq+1 || next.ID <= scanned.ID || moved.Seq != scanned.Seq-2 {
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
	if err := db.QueryRow("SELECT count(*) FROM events").Scan(&n); err != nil || n != len(trial)-1 {
		t.Fatalf("the buffer set aside holds %d events (%v), want %d", n, err, len(trial)-1)
	}
}

// TestUnreadableTrialBufferDoesNotStopTheStart: a buffer set aside that
// cannot be read is reported and left, and the buffer opens.
func TestUnreadableTrialBufferDoesNotStopTheStart(t *testing.T) {
	var logged strings.Builder
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.db")
	o := open(t, path, Options{})
	appendN(t, o, 2)
	o.Close()
	aside := path + ".trial-20261129T000000.000Z"
	if err := os.WriteFile(aside, []byte("not a database at all, not even close to one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(carryMarker(path), []byte(aside+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o = open(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	defer o.Close()
	if !strings.Contains(logged.String(), "events of a version rolled back cannot be carried over") {
		t.Fatalf("the failure was not logged:\n%s", logged.String())
	}
	if st, _ := o.Stats(context.Background()); st.LastSeq != 2 {
		t.Fatalf("last seq = %d, want 2", st.LastSeq)
	}
	if _, err := os.Stat(carryMarker(path)); !os.IsNotExist(err) {
		t.Fatalf("the marker is still there: %v", err)
	}
	if _, err := os.Stat(aside); err != nil {
		t.Fatalf("the buffer set aside is gone: %v", err)
	}
}

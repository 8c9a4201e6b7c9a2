package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSalvageReadsAroundDamage overwrites four pages in the middle of a
// buffer of 2,100 events: every unsent event that can still be read by its
// key is carried over, and the ones that cannot are counted with their
// seq ranges.
func TestSalvageReadsAroundDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage []int64 // pages, in percent of the file
	}{
		{"middle", []int64{30, 45, 60, 75}},
		{"tail", []int64{88, 92}},
	} {
		t.Run(tc.name, func(t *testing.T) { salvageAround(t, tc.damage) })
	}
}

func salvageAround(t *testing.T, damage []int64) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	appendN(t, o, 2100)
	recs, _ := o.Pending(ctx, 0, 50)
	for _, r := range recs {
		o.MarkSent(ctx, []int64{r.Pos})
	}
	o.Close()

	// The events table's pages: overwrite four of its data pages.
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	var pageSize, pages int64
	db.QueryRow("PRAGMA page_size").Scan(&pageSize)
	db.QueryRow("PRAGMA page_count").Scan(&pages)
	db.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, frac := range damage {
		page := pages * frac / 100
		f.WriteAt([]byte(strings.Repeat("\xa5", int(pageSize))), page*pageSize)
	}
	f.Close()

	// What can still be read, one row at a time by its key.
	ro, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	readable, unreadable := 0, 0
	for pos := 1; pos <= 2100; pos++ {
		var unsent bool // the first 50 were sent
		err := ro.QueryRow("SELECT pos > 50 FROM events WHERE pos = ?", pos).Scan(&unsent)
		switch {
		case err != nil && pos > 50:
			unreadable++
		case err == nil && unsent:
			readable++
		}
	}
	ro.Close()
	if unreadable == 0 {
		t.Fatal("the overwritten pages held no rows of the events table: the test damages nothing it can check")
	}

	o = open(t, path, Options{})
	defer o.Close()
	rec := o.Recovery()
	if rec == nil {
		t.Fatal("damage not detected")
	}
	if rec.Salvaged != readable {
		t.Fatalf("salvaged %d unsent events, %d were readable by key (%v)", rec.Salvaged, readable, rec.SalvageErr)
	}
	if rec.Unreadable != unreadable {
		t.Fatalf("%d unsent events reported unreadable, %d could not be read by key", rec.Unreadable, unreadable)
	}
	if rec.Unreadable == 0 || len(rec.UnreadableSeqs) == 0 || rec.SalvageErr == nil {
		t.Fatalf("unreadable %d %v (%v): the loss is not reported", rec.Unreadable, rec.UnreadableSeqs, rec.SalvageErr)
	}
	if rec.Salvaged+rec.Unreadable < 2050-unreadable || rec.Salvaged+rec.Unreadable > 2050 {
		t.Fatalf("salvaged %d + unreadable %d does not account for the 2050 unsent", rec.Salvaged, rec.Unreadable)
	}
	t.Logf("salvaged %d, unreadable %d of 2050 unsent (seq %v)", rec.Salvaged, rec.Unreadable, rec.UnreadableSeqs)
}

// TestSalvageInterruptedIsDoneAgain: a power cut after a damaged buffer was
// moved aside and a fresh one created, but before the salvage was
// committed, leaves the marker: the next start salvages then, and once the
// salvage is committed a marker left behind salvages nothing twice.
func TestSalvageInterruptedIsDoneAgain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	damaged := func(name string) string {
		path := filepath.Join(dir, name, "buffer.db")
		os.MkdirAll(filepath.Dir(path), 0o700)
		o := open(t, path, Options{})
		appendN(t, o, 600)
		o.Close()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		f.WriteAt([]byte(strings.Repeat("\xa5", 4096)), st.Size()/2/4096*4096)
		f.Close()
		return path
	}

	// The reference: a salvage that runs through.
	ref := open(t, damaged("ref"), Options{})
	want := ref.Recovery()
	if want == nil || want.Salvaged == 0 {
		t.Fatalf("the reference buffer was not salvaged: %+v", want)
	}
	refStats, _ := ref.Stats(ctx)
	ref.Close()

	// The same damage, cut after the move and the fresh buffer.
	path := damaged("cut")
	marker := salvageMarker(path)
	dst := path + ".corrupt-20261129T000000.000Z"
	if err := os.WriteFile(marker, []byte(dst+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := moveAside(path, dst); err != nil {
		t.Fatal(err)
	}
	os.Rename(marker, marker+".away") // the fresh buffer as the cut left it
	fresh := open(t, path, Options{})
	fresh.Close()
	os.Rename(marker+".away", marker)

	o := open(t, path, Options{})
	rec := o.Recovery()
	if rec == nil || !errors.Is(rec.Cause, ErrSalvageInterrupted) || rec.MovedTo != dst {
		t.Fatalf("the interrupted salvage was not done again: %+v", rec)
	}
	if rec.Salvaged != want.Salvaged {
		t.Fatalf("salvaged %d unsent events after the cut, %d without it", rec.Salvaged, want.Salvaged)
	}
	st, _ := o.Stats(ctx)
	if st.Pending != refStats.Pending {
		t.Fatalf("%d events pending after the resumed salvage, %d after an uninterrupted one", st.Pending, refStats.Pending)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the marker is still there after the salvage: %v", err)
	}
	o.Close()

	// A cut after the salvage was committed but before the marker went:
	// nothing is salvaged twice.
	if err := os.WriteFile(marker, []byte(dst+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o = open(t, path, Options{})
	defer o.Close()
	if again, _ := o.Stats(ctx); again.Pending != st.Pending {
		t.Fatalf("%d events pending after a second start with the marker, %d before", again.Pending, st.Pending)
	}
	if rec := o.Recovery(); rec == nil || rec.Salvaged != 0 {
		t.Fatalf("the second start salvaged again: %+v", rec)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the marker is still there after the second start: %v", err)
	}
}

// TestHalfDoneMoveIsFinished: killed after the damaged buffer was renamed
// but before its WAL and shared memory were, the next start moves them
// after it (SQLite would delete a WAL it finds beside a fresh buffer, and
// with it the commits not yet checkpointed); with a buffer under the name
// again, the WAL is that buffer's and stays.
func TestHalfDoneMoveIsFinished(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.db")
	dst := path + ".corrupt-20261129T000000.000Z"
	os.WriteFile(dst, []byte("damaged"), 0o600)
	os.WriteFile(path+"-wal", []byte("its WAL"), 0o600)
	os.WriteFile(path+"-shm", []byte("its shm"), 0o600)
	if err := finishMoveAside(path, []string{dst}); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still under the buffer's name: %v", suffix, err)
		}
		if b, err := os.ReadFile(dst + suffix); err != nil || !strings.HasPrefix(string(b), "its ") {
			t.Errorf("%s not beside the damaged buffer: %q %v", suffix, b, err)
		}
	}

	// A fresh buffer under the name: its own WAL is left alone.
	os.WriteFile(path, []byte("fresh"), 0o600)
	os.WriteFile(path+"-wal", []byte("fresh WAL"), 0o600)
	os.Remove(dst + "-wal")
	if err := finishMoveAside(path, []string{dst}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + "-wal"); string(b) != "fresh WAL" {
		t.Fatalf("the fresh buffer's WAL was moved: %q", b)
	}
}

package store

import (
	"context"
	"database/sql"
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
		var unsent bool
		err := ro.QueryRow("SELECT sent_at IS NULL FROM events WHERE pos = ?", pos).Scan(&unsent)
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

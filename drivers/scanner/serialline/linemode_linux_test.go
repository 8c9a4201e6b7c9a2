package serialline

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
)

// TestPendingLinesOneReadEach leaves three lines in a tty in line mode, as
// a killed daemon does, and reads them as the next start does: one line
// per read, so that a crash while they are committed loses at most one.
func TestPendingLinesOneReadEach(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyScanner")
	fake := serialtest.New(t, link)
	if err := setLineMode(link, '\r'); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"A-1", "B-2", "C-3"} {
		if err := fake.Scan(c); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if err := pendingLines(link, '\r', func(b []byte) error { got = append(got, string(b)); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"A-1\r", "B-2\r", "C-3\r"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reads %q, want %q", got, want)
	}
	// A tty not in line mode holds no framed lines: nothing is read.
	fake.Replug()
	fake.Scan("D-4")
	got = nil
	if err := pendingLines(link, '\r', func(b []byte) error { got = append(got, string(b)); return nil }); err != nil || got != nil {
		t.Fatalf("read %q from a raw tty (%v)", got, err)
	}
}

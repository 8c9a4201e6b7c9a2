package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// A commit waits for another process that holds the write lock longer
// than the busy timeout (a VACUUM run by `directory forget`), instead of
// failing: the event is committed once the lock is free.
func TestCommitWaitsForAnotherProcessHoldingTheLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	// A short busy timeout, so that the test sees several waits.
	if err := o.wc.run(func() error { _, err := o.wc.exec("PRAGMA busy_timeout = 100"); return err }); err != nil {
		t.Fatal(err)
	}
	var waits atomic.Int32
	o.wc.busy = func(time.Duration) { waits.Add(1) }

	release := holdWriteLock(t, path)
	released := make(chan struct{})
	go func() {
		time.Sleep(700 * time.Millisecond) // several busy timeouts
		release()
		close(released)
	}()
	ev, err := o.Append(ctx, event.Event{Appliance: "a", Type: event.TypeScan, Time: time.Now(), Barcode: []byte("X")})
	<-released
	if err != nil || ev.Seq != 1 {
		t.Fatalf("append while another process held the lock: %+v %v", ev, err)
	}
	if waits.Load() < 2 {
		t.Fatalf("%d waits reported; the lock was held for several busy timeouts", waits.Load())
	}
}

// AppendActivity is busy while an Append waits for its commit (here for
// another process's write lock) and idle once it is answered.
func TestAppendActivityBusyWhileAppendWaits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	t.Cleanup(func() { o.Close() }) // after the lock is released
	release := holdWriteLock(t, path)
	done := make(chan error, 1)
	go func() {
		_, err := o.Append(ctx, event.Event{Appliance: "a", Type: event.TypeScan, Time: time.Now(), Barcode: []byte("X")})
		done <- err
	}()
	waitfor.True(t, 5*time.Second, "busy while the append waits", func() bool { busy, _ := o.AppendActivity(); return busy })
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if busy, last := o.AppendActivity(); busy || last.IsZero() {
		t.Fatalf("after the append: busy %v, last %v", busy, last)
	}
}

// holdWriteLock takes the write lock of the buffer at path on a connection
// of its own, as another process would, until release is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	ctx := context.Background()
	other, err := sql.Open("sqlite3", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	other.SetMaxOpenConns(1)
	conn, err := other.Conn(ctx)
	if err != nil {
		other.Close()
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		other.Close()
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			conn.ExecContext(ctx, "COMMIT")
			conn.Close()
			other.Close()
		})
	}
	t.Cleanup(release) // a test that fails first does not hang the writer
	return release
}

// PersonWaiting is true while a scan's Append, or a page's AppendOnce,
// waits for its commit, and only then: another event waiting the same way
// does not count (the drain gives way to people, not to what follows
// their scans).
func TestPersonWaitingWhileAScanWaits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	t.Cleanup(func() { o.Close() }) // after the lock is released
	if o.PersonWaiting() != nil {
		t.Fatal("a person waiting before any append")
	}
	audit := event.Event{Appliance: "a", Type: event.TypeAudit, Time: time.Now()}
	scan := event.Event{Appliance: "a", Type: event.TypeScan, Time: time.Now(), Barcode: []byte("X")}
	for _, tc := range []struct {
		name   string
		append func() error
		want   bool
	}{
		{"audit", func() error { _, err := o.Append(ctx, audit); return err }, false},
		{"scan", func() error { _, err := o.Append(ctx, scan); return err }, true},
		{"action", func() error {
			_, _, err := o.AppendOnce(ctx, audit, ActionRecord{Key: "k1"})
			return err
		}, true},
	} {
		release := holdWriteLock(t, path)
		done := make(chan error, 1)
		go func() { done <- tc.append() }()
		waitfor.True(t, 5*time.Second, "the append waiting", func() bool { busy, _ := o.AppendActivity(); return busy })
		answered := o.PersonWaiting()
		if got := answered != nil; got != tc.want {
			t.Errorf("%s waiting for its commit: a person waiting %v, want %v", tc.name, got, tc.want)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if o.PersonWaiting() != nil {
			t.Fatalf("a person waiting after the %s was answered", tc.name)
		}
		if answered != nil {
			select {
			case <-answered:
			default:
				t.Fatalf("the %s was answered, its channel is still open", tc.name)
			}
		}
	}
}

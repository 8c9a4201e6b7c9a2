package powercut

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// mount mounts a power-cut file system for one test. A machine without
// FUSE fails the test: it is never skipped.
func mount(t *testing.T) *FS {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := Mount(dir, Options{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func writeFile(t *testing.T, path string, b []byte, sync bool) {
	t.Helper()
	fd, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.Write(b); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fd.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func cut(t *testing.T, f *FS, mode Mode) {
	t.Helper()
	if err := f.Cut(mode); err != nil {
		t.Fatal(err)
	}
}

func TestUnsyncedDataIsLostSyncedKept(t *testing.T) {
	f := mount(t)
	dir := f.Dir()
	synced, unsynced := filepath.Join(dir, "synced"), filepath.Join(dir, "unsynced")
	writeFile(t, synced, []byte("kept"), true)
	writeFile(t, unsynced, []byte("lost"), false)
	syncDir(t, dir) // both names are durable; only one file's data is
	// A later unsynced overwrite of the synced file is lost too.
	fd, _ := os.OpenFile(synced, os.O_WRONLY, 0)
	fd.WriteAt([]byte("XXXX"), 0)
	fd.Close()
	if b, _ := os.ReadFile(synced); string(b) != "XXXX" {
		t.Fatalf("before the cut the file reads %q, want the new data", b)
	}
	cut(t, f, DropAll)
	if b, err := os.ReadFile(synced); err != nil || string(b) != "kept" {
		t.Fatalf("fsynced file after the cut: %q (%v), want %q", b, err, "kept")
	}
	if b, err := os.ReadFile(unsynced); err != nil || len(b) != 0 {
		t.Fatalf("unsynced file after the cut: %q (%v), want empty", b, err)
	}
	if st := f.Stats(); st.Cuts != 1 || st.FilesReverted != 2 {
		t.Fatalf("stats %+v, want 1 cut and 2 files reverted", st)
	}
}

func TestCreatedFileLostWithoutDirectorySync(t *testing.T) {
	f := mount(t)
	path := filepath.Join(f.Dir(), "new")
	writeFile(t, path, []byte("data"), true)
	cut(t, f, DropAll)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a file whose directory was never fsynced survived the cut: %v", err)
	}
	// The same with an fsync of the directory survives.
	writeFile(t, path, []byte("data"), true)
	syncDir(t, f.Dir())
	cut(t, f, DropAll)
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Fatalf("after a directory fsync: %q (%v)", b, err)
	}
}

func TestRenameNeedsDirectorySync(t *testing.T) {
	f := mount(t)
	dir := f.Dir()
	path, tmp := filepath.Join(dir, "state"), filepath.Join(dir, "state.tmp")
	writeFile(t, path, []byte("old"), true)
	syncDir(t, dir)

	writeFile(t, tmp, []byte("new"), true)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	cut(t, f, DropAll)
	if b, err := os.ReadFile(path); err != nil || string(b) != "old" {
		t.Fatalf("rename without a directory fsync: %q (%v), want the old content", b, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("the temporary file (never in a synced directory) is there: %v", err)
	}

	writeFile(t, tmp, []byte("new"), true)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dir)
	cut(t, f, DropAll)
	if b, err := os.ReadFile(path); err != nil || string(b) != "new" {
		t.Fatalf("rename with a directory fsync: %q (%v), want the new content", b, err)
	}
}

func TestNewDirectoryNeedsParentSync(t *testing.T) {
	f := mount(t)
	sub := filepath.Join(f.Dir(), "sub")
	os.Mkdir(sub, 0o700)
	writeFile(t, filepath.Join(sub, "f"), []byte("x"), true)
	syncDir(t, sub)
	cut(t, f, DropAll)
	if _, err := os.Stat(sub); !os.IsNotExist(err) {
		t.Fatalf("a directory whose parent was never fsynced survived: %v", err)
	}
}

func TestOpenDescriptorsFailAfterCut(t *testing.T) {
	f := mount(t)
	path := filepath.Join(f.Dir(), "f")
	writeFile(t, path, []byte("x"), true)
	syncDir(t, f.Dir())
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cut(t, f, DropAll)
	if _, err := fd.Write([]byte("y")); err == nil {
		t.Fatal("a write on a descriptor opened before the cut succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "x" {
		t.Fatalf("the remounted file reads %q (%v)", b, err)
	}
}

func TestTornAndPagesKeepOnlyUnsyncedParts(t *testing.T) {
	for _, mode := range []Mode{Torn, Pages} {
		t.Run(mode.String(), func(t *testing.T) {
			f := mount(t)
			path := filepath.Join(f.Dir(), "f")
			base := bytes.Repeat([]byte{'a'}, 8*PageSize)
			writeFile(t, path, base, true)
			syncDir(t, f.Dir())
			partial := 0
			for round := 0; round < 20; round++ {
				fd, _ := os.OpenFile(path, os.O_WRONLY, 0)
				fd.WriteAt(bytes.Repeat([]byte{'b'}, 8*PageSize), 0)
				fd.Close()
				cut(t, f, mode)
				b, err := os.ReadFile(path)
				if err != nil || len(b) != len(base) {
					t.Fatalf("read after the cut: %d bytes (%v)", len(b), err)
				}
				n := bytes.Count(b, []byte{'b'})
				for _, c := range b {
					if c != 'a' && c != 'b' {
						t.Fatalf("byte %q neither old nor new", c)
					}
				}
				if n > 0 && n < len(b) {
					partial++
				}
				writeFile(t, path, base, true) // back to the base, synced
			}
			if partial == 0 {
				t.Fatalf("%s never kept part of an unsynced write in 20 cuts", mode)
			}
		})
	}
}

// TestCutOfAFileShortenedSinceItsSync cuts a file that was truncated
// and written again since its last fsync (as SQLite's WAL is when it
// starts over) in every mode: what survives is the synced content, or in
// the pages mode a mix of it and the new one (zeros beyond the new end)
// at the old or the new size, or in the torn mode the truncation and a
// prefix of the new write; never another byte, and no panic of the cut.
func TestCutOfAFileShortenedSinceItsSync(t *testing.T) {
	for _, mode := range Modes {
		t.Run(mode.String(), func(t *testing.T) {
			f := mount(t)
			path := filepath.Join(f.Dir(), "f")
			base := bytes.Repeat([]byte{'a'}, 8*PageSize)
			writeFile(t, path, base, true)
			syncDir(t, f.Dir())
			for round := 0; round < 20; round++ {
				writeFile(t, path, bytes.Repeat([]byte{'b'}, PageSize+100), false) // O_TRUNC, then a shorter write
				cut(t, f, mode)
				b, err := os.ReadFile(path)
				// Torn keeps the truncation and a prefix of the write.
				if err != nil || (len(b) != len(base) && len(b) > PageSize+100) || (mode != Torn && len(b) != len(base) && len(b) != PageSize+100) {
					t.Fatalf("round %d: read after the cut: %d bytes (%v)", round, len(b), err)
				}
				for i, c := range b {
					// Beyond the new end, a page whose truncation survived is zeros.
					if c != 'a' && c != 'b' && (c != 0 || i < PageSize+100) {
						t.Fatalf("round %d: byte %d is %q, neither old nor new", round, i, c)
					}
				}
				writeFile(t, path, base, true)
			}
		})
	}
}

// TestTriggerFreezesUntilCut checks that the operation matching a trigger
// is the last one served before the cut.
func TestTriggerFreezesUntilCut(t *testing.T) {
	f := mount(t)
	path := filepath.Join(f.Dir(), "f")
	writeFile(t, path, nil, true)
	syncDir(t, f.Dir())
	fired := f.FreezeWhen(func(op Op) bool { return op.Kind == "write" && op.Path == "f" })
	done := make(chan error, 1)
	go func() {
		fd, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		defer fd.Close()
		fd.Write([]byte("first"))
		err = fd.Sync() // waits: the file system is frozen
		done <- err
	}()
	<-fired
	select {
	case err := <-done:
		t.Fatalf("an operation after the trigger completed (%v)", err)
	default:
	}
	cut(t, f, DropAll)
	if err := <-done; err == nil {
		t.Fatal("the fsync waiting at the cut succeeded")
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("the unsynced write survived: %q", b)
	}
}

// TestSQLiteKeepsEveryCommittedRow commits rows to a WAL database with
// synchronous=FULL and cuts the power between them in every mode: every
// row whose commit returned is there after the cut, and the database
// passes its integrity check.
func TestSQLiteKeepsEveryCommittedRow(t *testing.T) {
	f := mount(t)
	path := filepath.Join(f.Dir(), "db.sqlite")
	committed := 0
	for round := 0; round < 12; round++ {
		db, err := sql.Open("sqlite3", "file:"+path+"?_synchronous=FULL&_journal_mode=WAL&_busy_timeout=5000")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		if _, err := db.Exec("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v BLOB)"); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var n, check int
		var ok string
		if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("round %d: integrity check %q (%v)", round, ok, err)
		}
		db.QueryRow("SELECT count(*), COALESCE(max(n), 0) FROM t").Scan(&n, &check)
		if n != committed || check != committed {
			t.Fatalf("round %d: %d rows (max %d) after the cut, %d committed", round, n, check, committed)
		}
		for i := 0; i < 50; i++ {
			if _, err := db.Exec("INSERT INTO t(n, v) VALUES (?, ?)", committed+1, bytes.Repeat([]byte(fmt.Sprint(i)), 700)); err != nil {
				t.Fatalf("round %d: insert: %v", round, err)
			}
			committed++
		}
		if round%3 == 1 {
			db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
		// An unfinished transaction at the cut: written, never committed.
		tx, _ := db.Begin()
		tx.Exec("INSERT INTO t(n, v) VALUES (?, ?)", committed+1, bytes.Repeat([]byte("u"), 5000))
		cut(t, f, Modes[round%len(Modes)])
		tx.Rollback()
		db.Close()
	}
}

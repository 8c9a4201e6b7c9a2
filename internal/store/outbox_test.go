package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/seal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func open(t testing.TB, path string, opts Options) *Outbox {
	t.Helper()
	opts.Path = path
	o, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func scan(code string) event.Event {
	return event.Event{Appliance: "mr-test", Type: event.TypeScan, Time: t0, Device: "dock", Barcode: []byte(code)}
}

func appendN(t testing.TB, o *Outbox, n int) []event.Event {
	t.Helper()
	out := make([]event.Event, n)
	for i := range out {
		ev, err := o.Append(context.Background(), scan(fmt.Sprintf("CODE%06d", i)))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ev
	}
	return out
}

func TestSeqGaplessAcrossConcurrencyRestartAndPrune(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	fc := clock.NewFake(t0)
	o := open(t, path, Options{Clock: fc, RetainSent: time.Hour})
	epoch := o.Epoch()

	// 8 writers at once: group commit must still give 1..N without gaps.
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]string{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 250; i++ {
				ev, err := o.Append(ctx, scan(fmt.Sprintf("W%d-%d", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[ev.Seq] = ev.ID
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	for s := int64(1); s <= 2000; s++ {
		if seen[s] == "" {
			t.Fatalf("seq %d missing", s)
		}
		if s > 1 && seen[s] <= seen[s-1] {
			t.Fatalf("id of seq %d (%s) not after seq %d (%s)", s, seen[s], s-1, seen[s-1])
		}
	}

	// Everything sent and pruned but the newest row, which carries the
	// last position and seq: seq must continue, not restart.
	recs, err := o.Pending(ctx, 0, 5000)
	if err != nil || len(recs) != 2000 {
		t.Fatalf("pending = %d, %v", len(recs), err)
	}
	pos := make([]int64, len(recs))
	for i, r := range recs {
		pos[i] = r.Pos
		if r.Seq != int64(i+1) {
			t.Fatalf("pending out of order at %d: seq %d", i, r.Seq)
		}
		// Each row holds its own event's bytes, though a batch encodes
		// every event into one reused buffer.
		if ev, err := event.Decode(r.Payload); err != nil || ev.ID != r.ID || ev.Seq != r.Seq || ev.ID != seen[r.Seq] {
			t.Fatalf("payload of seq %d = %+v, %v", r.Seq, ev, err)
		}
	}
	if err := o.MarkSent(ctx, pos); err != nil {
		t.Fatal(err)
	}
	fc.Advance(2 * time.Hour)
	if n, err := o.Prune(ctx); err != nil || n != 1999 {
		t.Fatalf("prune = %d, %v; want all but the newest", n, err)
	}
	o.Close()

	o = open(t, path, Options{Clock: fc})
	defer o.Close()
	if o.Epoch() != epoch {
		t.Fatalf("epoch changed on a clean reopen: %s -> %s", epoch, o.Epoch())
	}
	ev := appendN(t, o, 1)[0]
	if ev.Seq != 2001 {
		t.Fatalf("seq after restart and prune = %d, want 2001", ev.Seq)
	}
	if ev.ID <= seen[2000] {
		t.Fatalf("id went backwards after restart: %s <= %s", ev.ID, seen[2000])
	}
}

func TestPruneKeepsRecentAndPending(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{Clock: fc, RetainSent: time.Hour})
	defer o.Close()
	appendN(t, o, 3)
	recs, _ := o.Pending(ctx, 0, 10)
	o.MarkSent(ctx, []int64{recs[0].Pos})
	fc.Advance(30 * time.Minute)
	o.MarkSent(ctx, []int64{recs[1].Pos})
	fc.Advance(45 * time.Minute) // first is 75m old, second 45m
	if n, err := o.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("prune = %d, %v; want 1", n, err)
	}
	st, _ := o.Stats(ctx)
	if st.Pending != 1 {
		t.Fatalf("pending = %d, want 1", st.Pending)
	}
}

// sendAll marks every pending event sent, as PUBACKs would, and returns
// them.
func sendAll(t *testing.T, o *Outbox) []Record {
	t.Helper()
	recs, err := o.Pending(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	pos := make([]int64, len(recs))
	for i, r := range recs {
		pos[i] = r.Pos
	}
	if err := o.MarkSent(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	return recs
}

// snapshot copies the database as a power cut would leave it now: every
// committed transaction, and nothing Close would have written.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dst := filepath.Join(t.TempDir(), "snapshot.db")
	if _, err := db.Exec("VACUUM INTO ?", dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestSeqPosAndIDContinueAfterUncleanStop(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{Clock: fc, RetainSent: time.Minute})
	evs := appendN(t, o, 30)
	recs := sendAll(t, o)
	fc.Advance(time.Hour)
	if n, err := o.Prune(ctx); err != nil || n != 29 {
		t.Fatalf("prune = %d, %v; want all but the newest", n, err)
	}
	crashed := snapshot(t, path)
	o.Close()

	// The snapshot's meta still says what the last clean close said
	// (nothing): the newest row must tell where to go on.
	fc.Advance(-48 * time.Hour) // and the clock went back meanwhile
	o = open(t, crashed, Options{Clock: fc})
	defer o.Close()
	ev := appendN(t, o, 1)[0]
	last := evs[len(evs)-1]
	if ev.Seq != last.Seq+1 || ev.Epoch != last.Epoch {
		t.Fatalf("after an unclean stop: seq %d epoch %s; want %d in %s", ev.Seq, ev.Epoch, last.Seq+1, last.Epoch)
	}
	if ev.ID <= last.ID {
		t.Fatalf("id went backwards after an unclean stop: %s <= %s", ev.ID, last.ID)
	}
	got, _ := o.Pending(ctx, 0, 10)
	if len(got) != 1 || got[0].Pos != recs[len(recs)-1].Pos+1 {
		t.Fatalf("pending after restart = %+v; want one event at position %d", got, recs[len(recs)-1].Pos+1)
	}
}

func TestPruneNeverReusesPositions(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{Clock: fc, RetainSent: time.Minute})
	defer o.Close()
	appendN(t, o, 3)
	recs := sendAll(t, o)
	fc.Advance(time.Hour)
	if n, err := o.Prune(ctx); err != nil || n != 2 {
		t.Fatalf("prune = %d, %v; want 2 (the newest stays)", n, err)
	}
	// The uplink's cursor is at the last position it published: a new
	// event must come after it, or it would never be sent.
	appendN(t, o, 1)
	got, _ := o.Pending(ctx, recs[2].Pos, 10)
	if len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("pending after the cursor = %+v; want seq 4", got)
	}
}

func TestMigrationFromAutoincrementKeepsPositionsAndSeq(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "b.db")
	// A schema-4 buffer whose newest rows were pruned: AUTOINCREMENT
	// remembers position 7 and meta seq 7, the table ends at 5.
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:4] {
		if _, err := db.Exec(m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	epoch := "01900000-0000-7000-8000-000000000000"
	lastID := "01900000-0000-7000-8000-000000000007"
	for _, q := range []string{
		"PRAGMA user_version = 4",
		"INSERT INTO meta(key, value) VALUES ('epoch', '" + epoch + "'), ('last_seq', '7'), ('last_id', '" + lastID + "')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(1); i <= 7; i++ {
		if _, err := db.Exec("INSERT INTO events(epoch, seq, id, type, ts, payload) VALUES (?, ?, ?, 'scan', 0, ?)",
			epoch, i, fmt.Sprintf("01900000-0000-7000-8000-%012d", i), fmt.Sprintf(`{"seq":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	db.Exec("DELETE FROM events WHERE pos > 5")
	db.Close()

	var logged bytes.Buffer
	o := open(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	defer o.Close()
	if !strings.Contains(logged.String(), `msg="buffer schema migrated" from=4 to=5`) {
		t.Fatalf("the migration was not logged:\n%s", logged.String())
	}
	got, _ := o.Pending(ctx, 0, 10)
	if len(got) != 5 || got[4].Pos != 5 || string(got[4].Payload) != `{"seq":5}` {
		t.Fatalf("rows after migration = %+v", got)
	}
	ev := appendN(t, o, 1)[0]
	if ev.Seq != 8 || ev.Epoch != epoch || ev.ID <= lastID {
		t.Fatalf("first event after migration: seq %d epoch %s id %s", ev.Seq, ev.Epoch, ev.ID)
	}
	got, _ = o.Pending(ctx, 5, 10)
	if len(got) != 1 || got[0].Pos != 8 {
		t.Fatalf("new event at %+v; want position 8, above every position handed out", got)
	}
}

func TestCheckpointerCopiesCommitsIntoTheDatabaseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{})
	defer o.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before := st.Size()
	// A few pages' worth of events in separate commits: far below the
	// writer's own checkpoint at 4,000 WAL pages, so only the background
	// checkpointer can have copied them into the database file.
	for range 2 * checkpointEvery {
		appendN(t, o, 1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes after %d commits: nothing checkpointed", st.Size(), 2*checkpointEvery)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIDsMonotonicWhenClockJumpsBack(t *testing.T) {
	fc := clock.NewFake(t0)
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{Clock: fc})
	defer o.Close()
	a := appendN(t, o, 1)[0]
	fc.Advance(-72 * time.Hour)
	b := appendN(t, o, 1)[0]
	if b.ID <= a.ID || b.Seq != a.Seq+1 {
		t.Fatalf("after a clock jump back: %s/%d then %s/%d", a.ID, a.Seq, b.ID, b.Seq)
	}
}

func TestFullBufferRefusesLoudlyAndKeepsCommitted(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{MaxPending: 5})
	defer o.Close()
	appendN(t, o, 5)
	_, err := o.Append(ctx, scan("SIXTH"))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append beyond max_pending: %v, want ErrFull", err)
	}
	st, _ := o.Stats(ctx)
	if st.Refused != 1 || st.Pending != 5 || st.LastSeq != 5 {
		t.Fatalf("stats = %+v", st)
	}
	recs, _ := o.Pending(ctx, 0, 10)
	if err := o.MarkSent(ctx, []int64{recs[0].Pos}); err != nil {
		t.Fatal(err)
	}
	ev, err := o.Append(ctx, scan("SIXTH"))
	if err != nil || ev.Seq != 6 {
		t.Fatalf("append after space freed: %+v %v (seq must not skip the refused one)", ev, err)
	}
}

func TestCorruptDatabaseMovedAsideAndSalvaged(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		corrupt   func(t *testing.T, path string)
		wantSaved bool
	}{
		{"garbage file", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o600)
		}, false},
		{"broken index page", breakIndex, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "buffer.db")
			o := open(t, path, Options{})
			oldEpoch := o.Epoch()
			evs := appendN(t, o, 50)
			if _, err := o.QueueLabel(ctx, "dock-1", evs[49].ID, []byte("^XA^FDlabel^FS^XZ"), time.Now()); err != nil {
				t.Fatal(err)
			}
			recs, _ := o.Pending(ctx, 0, 10)
			for _, r := range recs {
				o.MarkSent(ctx, []int64{r.Pos})
			}
			o.Close()
			tc.corrupt(t, path)

			o = open(t, path, Options{})
			defer o.Close()
			rec := o.Recovery()
			if rec == nil {
				t.Fatal("corruption not detected")
			}
			if _, err := os.Stat(rec.MovedTo); err != nil || !strings.HasPrefix(rec.MovedTo, path+".corrupt-") {
				t.Fatalf("old file not kept: %s: %v", rec.MovedTo, err)
			}
			if o.Epoch() == oldEpoch {
				t.Fatal("a replaced database must start a new epoch")
			}
			got, _ := o.Pending(ctx, 0, 100)
			if tc.wantSaved {
				if rec.Salvaged != 40 || len(got) != 40 {
					t.Fatalf("salvaged %d (%v), pending %d; want the 40 unsent", rec.Salvaged, rec.SalvageErr, len(got))
				}
				for i, r := range got {
					if want := evs[10+i]; r.ID != want.ID || r.Seq != want.Seq {
						t.Fatalf("salvaged event %d changed: %s/%d want %s/%d", i, r.ID, r.Seq, want.ID, want.Seq)
					}
				}
				if jobs, err := o.LabelJobs(ctx, "dock-1"); err != nil || len(jobs) != 1 || string(jobs[0].Data) != "^XA^FDlabel^FS^XZ" {
					t.Fatalf("salvaged label jobs %+v (%v): want the one queued label", jobs, err)
				}
			}
			// The new epoch starts at seq 1 and is published after what was salvaged.
			ev := appendN(t, o, 1)[0]
			if ev.Seq != 1 || ev.Epoch != o.Epoch() {
				t.Fatalf("first event of new epoch: %+v", ev)
			}
			all, _ := o.Pending(ctx, 0, 100)
			if all[len(all)-1].ID != ev.ID {
				t.Fatal("new event not after the salvaged ones")
			}
		})
	}
}

func TestAppendAfterCloseFails(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{})
	o.Close()
	if _, err := o.Append(context.Background(), scan("X")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{})
	o.Close()
	db, _ := sql.Open("sqlite3", path)
	db.Exec("PRAGMA user_version = 99")
	db.Close()
	_, err := Open(context.Background(), Options{Path: path})
	if err == nil || !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("newer schema: %v", err)
	}
}

// A buffer of schema 8 to 10 made without the directory table (builds of
// schema 8 from before the directory) opens: schema 11 adds the table, and
// its events are still there.
func TestBufferWithoutDirectoryTableOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{})
	appendN(t, o, 3)
	o.Close()
	db, _ := sql.Open("sqlite3", path)
	if _, err := db.Exec(undoSchema12 + "DROP TABLE directory; PRAGMA user_version = 10"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	o, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatalf("a buffer without the directory table: %v", err)
	}
	defer o.Close()
	if recs, err := o.Pending(context.Background(), 0, 10); err != nil || len(recs) != 3 {
		t.Fatalf("its events: %d %v", len(recs), err)
	}
}

func TestMarkSentSparse(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{})
	defer o.Close()
	appendN(t, o, 10)
	if err := o.MarkSent(ctx, []int64{2, 3, 4, 8, 3}); err != nil {
		t.Fatal(err)
	}
	recs, _ := o.Pending(ctx, 0, 100)
	var seqs []int64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	if fmt.Sprint(seqs) != "[1 5 6 7 9 10]" {
		t.Fatalf("pending after sparse marks = %v", seqs)
	}
	if st, _ := o.Stats(ctx); st.Pending != 6 {
		t.Fatalf("pending count = %d, want 6", st.Pending)
	}
}

// undoSchema12 takes a buffer's sent marks back to the sent column of
// schema 11 (the events, unmarked, are unsent there).
const undoSchema12 = `DROP TABLE sent_marks;
	CREATE INDEX events_pending ON events(pos) WHERE sent_at IS NULL;
	CREATE INDEX events_sent ON events(sent_at) WHERE sent_at IS NOT NULL;`

// sentMarks returns the rows of sent_marks as "pos@at" (at in seconds
// after t0, "-" for 0).
func sentMarks(t *testing.T, o *Outbox) string {
	t.Helper()
	rows, err := o.rdb.Query("SELECT pos, at FROM sent_marks ORDER BY pos")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var pos, at int64
		if err := rows.Scan(&pos, &at); err != nil {
			t.Fatal(err)
		}
		if at == 0 {
			out = append(out, fmt.Sprintf("%d@-", pos)) // by a time not known
			continue
		}
		out = append(out, fmt.Sprintf("%d@%d", pos, (at-t0.UnixMilli())/1000))
	}
	return strings.Join(out, " ")
}

func pendingSeqs(t *testing.T, o *Outbox) string {
	t.Helper()
	recs, err := o.Pending(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []string
	for _, r := range recs {
		seqs = append(seqs, fmt.Sprint(r.Seq))
	}
	return strings.Join(seqs, " ")
}

// TestSentWatermark: acknowledgements out of order are held in memory
// until every event below them was acknowledged; only then does the
// watermark in sent_marks move, one row per minute. After a restart the
// ones above the watermark are pending again (sent again: at least once),
// and the page shows what was sent from both.
func TestSentWatermark(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{Clock: fc})
	appendN(t, o, 10)
	if err := o.MarkSent(ctx, []int64{3, 2, 8}); err != nil {
		t.Fatal(err)
	}
	if m := sentMarks(t, o); m != "" {
		t.Fatalf("sent_marks after acknowledgements above a gap = %q, want none", m)
	}
	if got := pendingSeqs(t, o); got != "1 4 5 6 7 9 10" {
		t.Fatalf("pending = %s", got)
	}
	recent, err := o.Recent(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, r := range recent {
		if r.Sent {
			sent = append(sent, fmt.Sprint(r.Event.Seq))
		}
	}
	if strings.Join(sent, " ") != "8 3 2" {
		t.Fatalf("recent events shown sent: %v, want 8 3 2", sent)
	}
	fc.Advance(10 * time.Second)
	o.MarkSent(ctx, []int64{1})
	fc.Advance(10 * time.Second)
	o.MarkSent(ctx, []int64{4})
	if m := sentMarks(t, o); m != "4@20" {
		t.Fatalf("sent_marks within a minute = %q, want the one row moved up: 4@20", m)
	}
	fc.Advance(time.Minute)
	o.MarkSent(ctx, []int64{5, 6})
	if m := sentMarks(t, o); m != "4@20 6@80" {
		t.Fatalf("sent_marks a minute later = %q, want a new row: 4@20 6@80", m)
	}
	if st, _ := o.Stats(ctx); st.Pending != 3 {
		t.Fatalf("pending count = %d, want 3 (7, 9, 10)", st.Pending)
	}
	if len(o.acked) != 1 {
		t.Fatalf("held in memory: %v, want only 8", o.acked)
	}
	o.Close()

	o = open(t, path, Options{Clock: fc})
	defer o.Close()
	if got := pendingSeqs(t, o); got != "7 8 9 10" {
		t.Fatalf("pending after a restart = %s, want 7 8 9 10 (8 again)", got)
	}
	if st, _ := o.Stats(ctx); st.Pending != 4 {
		t.Fatalf("pending count after a restart = %d, want 4", st.Pending)
	}
}

// TestSentWatermarkPassesGaps: positions with no event (an old buffer's
// rows pruned out of order) do not hold the watermark back.
func TestSentWatermarkPassesGaps(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{})
	defer o.Close()
	appendN(t, o, 10)
	db, err := sql.Open("sqlite3", "file:"+o.opts.Path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM events WHERE pos IN (3, 4, 7)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := o.MarkSent(ctx, []int64{10, 9, 8, 6, 5, 2, 1}); err != nil {
		t.Fatal(err)
	}
	if o.sentUpTo != 10 || len(o.acked) != 0 {
		t.Fatalf("watermark %d, held %v; want 10 and none", o.sentUpTo, o.acked)
	}
	if st, _ := o.Stats(ctx); st.Pending != 0 {
		t.Fatalf("pending count = %d, want 0", st.Pending)
	}

	// A gap followed by an event not acknowledged: the watermark stops
	// below that event.
	appendN(t, o, 5) // 11-15
	db, err = sql.Open("sqlite3", "file:"+o.opts.Path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM events WHERE pos = 12"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := o.MarkSent(ctx, []int64{11, 14, 15}); err != nil {
		t.Fatal(err)
	}
	if o.sentUpTo != 11 || len(o.acked) != 2 {
		t.Fatalf("watermark %d, held %v; want 11, and 14 and 15 held", o.sentUpTo, o.acked)
	}
	if got := pendingSeqs(t, o); got != "13" {
		t.Fatalf("pending = %s, want 13", got)
	}
}

// TestPendingPagesStayFull: acknowledgements held above the watermark do
// not shorten a page of pending events, so a reader does not take a short
// or empty page for the end of the backlog.
func TestPendingPagesStayFull(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{})
	defer o.Close()
	appendN(t, o, 10)
	if err := o.MarkSent(ctx, []int64{2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	recs, err := o.Pending(ctx, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range recs {
		got = append(got, r.Pos)
	}
	if fmt.Sprint(got) != "[1 6 7]" {
		t.Fatalf("a page of 3 = %v, want [1 6 7]", got)
	}
	if recs, _ := o.Pending(ctx, 1, 3); len(recs) != 3 || recs[0].Pos != 6 {
		t.Fatalf("the page after 1 = %d events from %v, want 3 from 6", len(recs), recs)
	}
}

// TestOldSentMarksMigrate: a buffer of schema 11, whose rows carried
// their sent time, opens with the watermark below its first unsent event,
// one row per minute of what was sent, and keeps pruning by those times.
func TestOldSentMarksMigrate(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{Clock: fc})
	appendN(t, o, 8)
	o.Close()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	for _, q := range []string{
		undoSchema12,
		// 1-2 sent at 0:10, 3 at 0:50, 4 at 2:00, 6 out of order; 5, 7, 8 not.
		fmt.Sprintf("UPDATE events SET sent_at = %d WHERE pos <= 2", ms(10*time.Second)),
		fmt.Sprintf("UPDATE events SET sent_at = %d WHERE pos = 3", ms(50*time.Second)),
		fmt.Sprintf("UPDATE events SET sent_at = %d WHERE pos IN (4, 6)", ms(2*time.Minute)),
		"PRAGMA user_version = 11",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	fc.Advance(3 * time.Minute)
	o = open(t, path, Options{Clock: fc, RetainSent: 90 * time.Second, PruneInterval: time.Hour})
	defer o.Close()
	if m := sentMarks(t, o); m != "3@50 4@120" {
		t.Fatalf("sent_marks after the migration = %q, want 3@50 4@120", m)
	}
	if got := pendingSeqs(t, o); got != "5 6 7 8" {
		t.Fatalf("pending after the migration = %s, want 5 6 7 8 (6 again)", got)
	}
	if st, _ := o.Stats(ctx); st.Pending != 4 {
		t.Fatalf("pending count = %d, want 4", st.Pending)
	}
	// At 3:00 with 90 s retention: 1-3 (sent by 0:50) go, 4 (2:00) stays.
	if n, err := o.Prune(ctx); err != nil || n != 3 {
		t.Fatalf("prune = %d, %v; want 3", n, err)
	}
	if m := sentMarks(t, o); m != "3@50 4@120" {
		t.Fatalf("sent_marks after the prune = %q", m)
	}
	var indexes int
	o.rdb.QueryRow("SELECT count(*) FROM sqlite_master WHERE name IN ('events_pending', 'events_sent')").Scan(&indexes)
	if indexes != 0 {
		t.Fatal("the indexes of the sent column are still there: every commit writes them")
	}
}

// TestOldSentMarksMigrateEdges: the watermark a schema-11 buffer gets when
// it holds no event, when all were sent and the newest were pruned (meta
// last_pos above the table), and when the sent events below the first
// unsent one were pruned.
func TestOldSentMarksMigrateEdges(t *testing.T) {
	ms := t0.Add(10 * time.Second).UnixMilli()
	for _, tc := range []struct {
		name, setup, marks string
		pending            int64
	}{
		{"emptied, its positions used up to 5", "DELETE FROM events", "5@-", 0},
		{"all sent, newest pruned", fmt.Sprintf("UPDATE events SET sent_at = %d; DELETE FROM events WHERE pos > 3; "+
			"INSERT OR REPLACE INTO meta(key, value) VALUES ('last_pos', '5')", ms), "3@10 5@10", 0},
		{"sent ones pruned below the first unsent", fmt.Sprintf("UPDATE events SET sent_at = %d WHERE pos <= 2; "+
			"DELETE FROM events WHERE pos <= 2", ms), "2@-", 3},
		{"none sent", "", "", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			o := open(t, path, Options{})
			appendN(t, o, 5)
			o.Close()
			db, err := sql.Open("sqlite3", path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(undoSchema12 + tc.setup + "; PRAGMA user_version = 11"); err != nil {
				t.Fatal(err)
			}
			db.Close()
			o = open(t, path, Options{})
			defer o.Close()
			if m := sentMarks(t, o); m != tc.marks {
				t.Fatalf("sent_marks = %q, want %q", m, tc.marks)
			}
			if st, _ := o.Stats(context.Background()); st.Pending != tc.pending {
				t.Fatalf("pending = %d, want %d", st.Pending, tc.pending)
			}
		})
	}
}

func TestUnresolvedScansSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	atStation := func(code string) event.Event {
		ev := scan(code)
		ev.Station = "dock-1"
		got, err := o.Append(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	a, b, c := atStation("A"), atStation("B"), atStation("C")
	other := scan("D")
	other.Station = "dock-2"
	if _, err := o.Append(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Append(ctx, scan("no station")); err != nil {
		t.Fatal(err)
	}
	// a is resolved by a business event, b by Resolve alone.
	rcv := event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: t0, Station: "dock-1",
		ScanID: a.ID, Resolves: []string{a.ID}, Parcel: &event.Parcel{Carrier: "unknown", Tracking: "A", Check: "none", Raw: "A"}}
	if _, err := o.Append(ctx, rcv); err != nil {
		t.Fatal(err)
	}
	if err := o.Resolve(ctx, b.ID, "no-such-id"); err != nil {
		t.Fatal(err)
	}
	o.Close()

	o = open(t, path, Options{})
	defer o.Close()
	got, err := o.Unresolved(ctx, "dock-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != c.ID || string(got[0].Barcode) != "C" || got[0].Seq != c.Seq {
		t.Fatalf("unresolved at dock-1 = %+v; want only scan C", got)
	}
	if got, _ := o.Unresolved(ctx, "dock-2"); len(got) != 1 || string(got[0].Barcode) != "D" {
		t.Fatalf("unresolved at dock-2 = %+v", got)
	}
}

func TestRecentNewestFirstWithSentState(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	evs := appendN(t, o, 5)
	rcv := event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: t0, Station: "s",
		Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z", Check: "valid", Raw: "1Z"}}
	if _, err := o.Append(ctx, rcv); err != nil {
		t.Fatal(err)
	}
	recs, _ := o.Pending(ctx, 0, 2)
	if err := o.MarkSent(ctx, []int64{recs[0].Pos, recs[1].Pos}); err != nil {
		t.Fatal(err)
	}
	got, err := o.Recent(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Type != event.TypeParcelReceived || got[1].ID != evs[4].ID || got[2].ID != evs[3].ID || got[0].Sent {
		t.Fatalf("recent = %+v", got)
	}
	all, _ := o.Recent(ctx, 10, event.TypeScan)
	if len(all) != 5 || !all[4].Sent || !all[3].Sent || all[2].Sent {
		t.Fatalf("recent scans = %d, sent flags wrong: %+v", len(all), all)
	}
	counts, err := o.EventsPerMinute(ctx, event.TypeScan, t0.Add(-time.Minute))
	var total int64
	for _, c := range counts {
		total += c.Count
		if c.Minute.Unix()%60 != 0 {
			t.Fatalf("minute %v is not the start of a minute", c.Minute)
		}
	}
	if err != nil || total != 5 || !counts[0].Minute.Equal(t0.Truncate(time.Minute)) {
		t.Fatalf("EventsPerMinute = %v, %v; want 5 scans from %v", counts, err, t0.Truncate(time.Minute))
	}
	if counts, _ := o.EventsPerMinute(ctx, event.TypeScan, t0.Add(time.Minute)); len(counts) != 0 {
		t.Fatalf("EventsPerMinute after t0 = %v", counts)
	}
	parcels, _ := o.Recent(ctx, 10, event.TypeParcelReceived)
	if len(parcels) != 1 || parcels[0].Parcel == nil || parcels[0].Parcel.Carrier != "ups" {
		t.Fatalf("recent parcels = %+v", parcels)
	}
}

// TestEachRecentOldestFirst reads the newest events of some types one at a
// time, oldest first, on a plain and on a sealed buffer.
func TestEachRecentOldestFirst(t *testing.T) {
	plainAndSealed(t, Options{}, func(t *testing.T, opts Options) {
		ctx := context.Background()
		o := open(t, filepath.Join(t.TempDir(), "buffer.db"), opts)
		defer o.Close()
		var scans, parcels []string // ids in commit order
		for i := range 6 {
			ev, err := o.Append(ctx, scan(fmt.Sprintf("CODE%06d", i)))
			if err != nil {
				t.Fatal(err)
			}
			scans = append(scans, ev.ID)
			if i%2 == 0 {
				rcv, err := o.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: t0, Station: "s",
					Parcel: &event.Parcel{Carrier: "ups", Tracking: fmt.Sprintf("1Z%d", i), Check: "valid"}})
				if err != nil {
					t.Fatal(err)
				}
				parcels = append(parcels, rcv.ID)
			}
		}
		recs, _ := o.Pending(ctx, 0, 1)
		if err := o.MarkSent(ctx, []int64{recs[0].Pos}); err != nil {
			t.Fatal(err)
		}
		read := func(limit int, types ...event.Type) (ids []string, sent []bool) {
			t.Helper()
			if err := o.EachRecent(ctx, limit, func(st Stored) error {
				ids, sent = append(ids, st.ID), append(sent, st.Sent)
				return nil
			}, types...); err != nil {
				t.Fatal(err)
			}
			return ids, sent
		}
		for _, c := range []struct {
			name  string
			limit int
			types []event.Type
			want  []string
		}{
			{"the newest scans", 4, []event.Type{event.TypeScan}, scans[2:]},
			{"fewer than the limit", 10, []event.Type{event.TypeParcelReceived}, parcels},
			{"two types", 3, []event.Type{event.TypeScan, event.TypeParcelReceived}, []string{scans[4], parcels[2], scans[5]}},
			{"every type", 1, nil, scans[5:]},
			{"none asked for", 0, nil, nil},
			{"a type never committed", 5, []event.Type{event.TypeLabelPrinted}, nil},
		} {
			if got, _ := read(c.limit, c.types...); !slices.Equal(got, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
			}
		}
		if ids, sent := read(20); len(ids) != 9 || ids[0] != scans[0] || !sent[0] || slices.Contains(sent[1:], true) {
			t.Errorf("all events: %v, sent %v; want 9, the first one sent", ids, sent)
		}
		stop := errors.New("enough")
		var n int
		if err := o.EachRecent(ctx, 5, func(Stored) error { n++; return stop }); err != stop || n != 1 {
			t.Errorf("fn's error: got %v after %d calls, want it after 1", err, n)
		}
	})
}

// plainAndSealed runs f as two subtests, with opts on a plain buffer and
// with a sealing key added.
func plainAndSealed(t *testing.T, opts Options, f func(t *testing.T, opts Options)) {
	t.Helper()
	k, err := seal.Parse(seal.NewKeyLine("k1"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := opts
	sealed.Seal = k
	t.Run("plain", func(t *testing.T) { f(t, opts) })
	t.Run("sealed", func(t *testing.T) { f(t, sealed) })
}

func TestNoncesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	fc := clock.NewFake(t0)
	o := open(t, path, Options{Clock: fc})
	if fresh, err := o.UseNonce(ctx, "n1", t0.Add(time.Hour)); err != nil || !fresh {
		t.Fatalf("first use: %v %v", fresh, err)
	}
	if fresh, _ := o.UseNonce(ctx, "n1", t0.Add(time.Hour)); fresh {
		t.Fatal("a nonce was accepted twice")
	}
	o.Close()
	o = open(t, path, Options{Clock: fc})
	defer o.Close()
	if fresh, _ := o.UseNonce(ctx, "n1", t0.Add(time.Hour)); fresh {
		t.Fatal("a nonce was accepted again after a restart")
	}
	// Expired nonces are pruned; the envelope's own expiry refuses them.
	fc.Set(t0.Add(2 * time.Hour))
	if _, err := o.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if fresh, _ := o.UseNonce(ctx, "n1", t0.Add(3*time.Hour)); !fresh {
		t.Fatal("expired nonce not pruned")
	}
}

func TestBySeq(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	evs := appendN(t, o, 10)
	got, err := o.BySeq(ctx, 3, 5)
	if err != nil || len(got) != 3 || got[0].Seq != 3 || got[2].ID != evs[4].ID {
		t.Fatalf("BySeq = %+v %v", got, err)
	}
}

func TestSealedPayloadsAtRest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	line1 := seal.NewKeyLine("k1")
	k1, _ := seal.Parse(line1)
	o := open(t, path, Options{Seal: k1})
	evs := appendN(t, o, 3)
	atStation := scan("SECRET-BADGE-77")
	atStation.Station = "dock-1"
	if _, err := o.Append(ctx, atStation); err != nil {
		t.Fatal(err)
	}
	recs, err := o.Pending(ctx, 0, 10)
	if err != nil || len(recs) != 4 || !strings.Contains(string(recs[0].Payload), `"barcode":"CODE000000"`) {
		t.Fatalf("pending = %v %v", recs, err)
	}
	if un, err := o.Unresolved(ctx, "dock-1"); err != nil || len(un) != 1 || string(un[0].Barcode) != "SECRET-BADGE-77" {
		t.Fatalf("unresolved = %v %v", un, err)
	}
	o.Close()
	for _, f := range []string{path, path + "-wal"} {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "CODE000001") || strings.Contains(string(b), "SECRET-BADGE") {
			t.Fatalf("%s holds a payload in clear", f)
		}
	}

	// Without the key, or with a wrong one: a clear error, nothing touched.
	if _, err := Open(ctx, Options{Path: path}); err == nil || !strings.Contains(err.Error(), "no storage.encryption_key_file") {
		t.Fatalf("open without key: %v", err)
	}
	wrong, _ := seal.Parse(seal.NewKeyLine("k1"))
	if _, err := Open(ctx, Options{Path: path, Seal: wrong}); err == nil || !strings.Contains(err.Error(), "cannot be opened") {
		t.Fatalf("open with a wrong key: %v", err)
	}

	// Rotation: k2 seals new rows, k1 still opens the old ones.
	rotated, _ := seal.Parse(seal.NewKeyLine("k2") + "\n" + line1)
	o = open(t, path, Options{Seal: rotated})
	defer o.Close()
	more := appendN(t, o, 1)
	recs, err = o.Pending(ctx, 0, 10)
	if err != nil || len(recs) != 5 || recs[0].ID != evs[0].ID || recs[4].ID != more[0].ID {
		t.Fatalf("pending after rotation = %d %v", len(recs), err)
	}
	var keys []string
	rows, _ := o.rdb.Query("SELECT DISTINCT key_id FROM events ORDER BY key_id")
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if strings.Join(keys, ",") != "k1,k2" {
		t.Fatalf("key ids in use: %v", keys)
	}
}

// breakIndex overwrites the first page of the index of parcels by their
// receipt: quick_check then fails while the tables can still be read.
func breakIndex(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	var root, pageSize int64
	db.QueryRow("SELECT rootpage FROM sqlite_master WHERE name = 'parcels_received'").Scan(&root)
	db.QueryRow("PRAGMA page_size").Scan(&pageSize)
	db.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte(strings.Repeat("\xff", 64)), (root-1)*pageSize)
	f.Close()
}

// TestBlobsToSendAfter reads the blobs to upload in the order of
// BlobsToSend, a part at a time after a given one, blobs stored in the
// same millisecond (ordered by hash) among them, and leaves out those sent.
func TestBlobsToSendAfter(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	o := open(t, filepath.Join(t.TempDir(), "b.db"), Options{Clock: fc})
	defer o.Close()
	for i := range 7 {
		if i%3 == 0 {
			fc.Advance(time.Millisecond) // three in each millisecond
		}
		sha := fmt.Sprintf("%064x", (i*7919)%31) // not in the order stored
		if _, err := o.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: fmt.Sprint("p", i),
			Photos: []event.Photo{{SHA256: sha, Size: 10, ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := o.BlobsToSend(ctx, 100)
	if err != nil || len(all) != 7 {
		t.Fatalf("blobs to send: %d, %v", len(all), err)
	}
	if err := o.BlobSent(ctx, all[4].SHA256); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(all[:4]), all[5:]...)
	got, err := o.BlobsToSend(ctx, 2)
	for len(got) < 10 && err == nil {
		var part []Blob
		if part, err = o.BlobsToSendAfter(ctx, got[len(got)-1], 2); len(part) == 0 {
			break
		}
		got = append(got, part...)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read in parts: %d blobs, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].SHA256 != want[i].SHA256 {
			t.Fatalf("blob %d read in parts is %s, want %s", i, got[i].SHA256, want[i].SHA256)
		}
	}
}

// LastPos is the newest committed event's position, before and after a
// reopen; AppendActivity says when the last commit of events was answered,
// and that none is in progress once it was.
func TestLastPosAndAppendActivity(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(t0)
	path := filepath.Join(t.TempDir(), "b.db")
	o := open(t, path, Options{Clock: fc})
	if busy, last := o.AppendActivity(); busy || !last.IsZero() || o.LastPos() != 0 {
		t.Fatalf("fresh buffer: busy %v, last %v, last pos %d", busy, last, o.LastPos())
	}
	appendN(t, o, 3)
	fc.Advance(time.Minute)
	if err := o.MarkSent(ctx, []int64{1}); err != nil { // not an event commit
		t.Fatal(err)
	}
	busy, last := o.AppendActivity()
	if busy || !last.Equal(t0) {
		t.Fatalf("after three appends: busy %v, last %v, want %v", busy, last, t0)
	}
	recs, _ := o.Pending(ctx, 0, 10)
	if n := o.LastPos(); n != recs[len(recs)-1].Pos {
		t.Fatalf("last pos %d, want %d", n, recs[len(recs)-1].Pos)
	}
	o.Close()
	o = open(t, path, Options{Clock: fc})
	defer o.Close()
	if n := o.LastPos(); n != recs[len(recs)-1].Pos {
		t.Fatalf("last pos after a reopen %d, want %d", n, recs[len(recs)-1].Pos)
	}
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/seal"
)

func receive(t testing.TB, o *Outbox, tracking, recipient, location string, at time.Time) event.Event {
	t.Helper()
	ev, err := o.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: at,
		Device: "dock", Station: "dock-1", Parcel: &event.Parcel{Carrier: "ups", Tracking: tracking}, Recipient: recipient, Location: location})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func custody(typ event.Type, parcel string, at time.Time) event.Event {
	return event.Event{Appliance: "mr-test", Type: typ, Time: at, ParcelID: parcel, By: "clara"}
}

func state(t *testing.T, o *Outbox, id string) Parcel {
	t.Helper()
	p, err := o.ParcelByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParcelStateFollowsItsEvents(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	rcv := receive(t, o, "1Z999AA10123456784", "EMP-1", "", t0)
	if p := state(t, o, rcv.ID); p.State != StateReceived || p.Recipient != "EMP-1" || p.Tracking != "1Z999AA10123456784" || !p.Received.Equal(t0) {
		t.Fatalf("after receipt: %+v", p)
	}
	steps := []struct {
		ev    event.Event
		state State
		check func(Parcel) bool
	}{
		{func() event.Event {
			e := custody(event.TypeParcelMoved, rcv.ID, t0.Add(time.Minute))
			e.Location = "SHELF-A01"
			return e
		}(),
			StateStored, func(p Parcel) bool { return p.Location == "SHELF-A01" }},
		{func() event.Event {
			e := custody(event.TypeParcelHeld, rcv.ID, t0.Add(2*time.Minute))
			e.Reason = "on leave"
			return e
		}(),
			StateHeld, func(p Parcel) bool { return p.Reason == "on leave" && p.Location == "SHELF-A01" }},
		{func() event.Event {
			e := custody(event.TypeParcelMoved, rcv.ID, t0.Add(3*time.Minute))
			e.Location = "SHELF-B02"
			return e
		}(),
			StateStored, func(p Parcel) bool { return p.Location == "SHELF-B02" && p.Reason == "" }},
		{func() event.Event {
			e := custody(event.TypeParcelDelivered, rcv.ID, t0.Add(4*time.Minute))
			e.Recipient, e.Proxy, e.Proof = "EMP-1", "EMP-2", &event.Proof{Method: event.ProofBadge, Badge: "EMP-2"}
			return e
		}(), StateDelivered, func(p Parcel) bool {
			return p.Proxy == "EMP-2" && p.Proof.Method == "badge" && p.Closed.Equal(t0.Add(4*time.Minute)) && p.By == "clara"
		}},
	}
	for i, s := range steps {
		ev, err := o.Append(ctx, s.ev)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		p := state(t, o, rcv.ID)
		if p.State != s.state || !s.check(p) || p.LastEvent != ev.ID {
			t.Fatalf("step %d (%s): %+v", i, s.ev.Type, p)
		}
	}

	// A closed parcel refuses everything, and the refusal commits nothing.
	before, _ := o.Stats(ctx)
	for _, typ := range []event.Type{event.TypeParcelDelivered, event.TypeParcelMoved, event.TypeParcelOutForDelivery, event.TypeParcelReturned} {
		_, err := o.Append(ctx, custody(typ, rcv.ID, t0.Add(time.Hour)))
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != RefusedClosed || refused.State != StateDelivered {
			t.Fatalf("%s of a delivered parcel: %v", typ, err)
		}
	}
	_, err := o.Append(ctx, custody(event.TypeParcelDelivered, "019ac4a0-0000-7000-8000-00000000dead", t0))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != RefusedUnknownParcel {
		t.Fatalf("delivery of an unknown parcel: %v", err)
	}
	after, _ := o.Stats(ctx)
	if after.LastSeq != before.LastSeq {
		t.Fatalf("refusals took seqs: %d -> %d", before.LastSeq, after.LastSeq)
	}
	if p := state(t, o, rcv.ID); p.State != StateDelivered || p.Proxy != "EMP-2" {
		t.Fatalf("a refusal changed the parcel: %+v", p)
	}
}

func TestHeldParcelDoesNotGoOut(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	rcv := receive(t, o, "T1", "", "SHELF-A01", t0)
	if p := state(t, o, rcv.ID); p.State != StateStored {
		t.Fatalf("received at a location: %s, want stored", p.State)
	}
	if _, err := o.Append(ctx, custody(event.TypeParcelHeld, rcv.ID, t0)); err != nil {
		t.Fatal(err)
	}
	_, err := o.Append(ctx, custody(event.TypeParcelOutForDelivery, rcv.ID, t0))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != RefusedHeld {
		t.Fatalf("a held parcel went out: %v", err)
	}
	// A delivery at the counter is allowed while it is held.
	held2 := receive(t, o, "T2", "", "", t0)
	o.Append(ctx, custody(event.TypeParcelHeld, held2.ID, t0))
	if _, err := o.Append(ctx, custody(event.TypeParcelDelivered, held2.ID, t0)); err != nil {
		t.Fatalf("delivering a held parcel: %v", err)
	}
	// Moving it to a shelf releases it: then it goes out.
	mv := custody(event.TypeParcelMoved, rcv.ID, t0)
	mv.Location = "SHELF-C03"
	if _, err := o.Append(ctx, mv); err != nil {
		t.Fatal(err)
	}
	if p := state(t, o, rcv.ID); p.State != StateStored {
		t.Fatalf("moved held parcel: %s, want stored", p.State)
	}
	if _, err := o.Append(ctx, custody(event.TypeParcelOutForDelivery, rcv.ID, t0)); err != nil {
		t.Fatalf("a released parcel does not go out: %v", err)
	}
}

func TestFindParcelByLabelIDOrTracking(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	first := receive(t, o, "TRACK-1", "", "", t0)
	if _, err := o.Append(ctx, custody(event.TypeParcelReturned, first.ID, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	// The same tracking number received again (it came back): the open one wins.
	second := receive(t, o, "TRACK-1", "", "", t0.Add(time.Hour))
	for code, want := range map[string]string{first.ID: first.ID, second.ID: second.ID, "TRACK-1": second.ID} {
		p, err := o.FindParcel(ctx, code)
		if err != nil || p.ID != want {
			t.Fatalf("FindParcel(%s) = %s, %v; want %s", code, p.ID, err, want)
		}
	}
	if _, err := o.FindParcel(ctx, "NOPE"); !errors.Is(err, ErrNoParcel) {
		t.Fatalf("unknown code: %v", err)
	}
}

func TestActionKeyCommitsOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	rcv := receive(t, o, "T1", "EMP-1", "", t0)
	mv := custody(event.TypeParcelMoved, rcv.ID, t0)
	mv.Location = "SHELF-A01"
	rec := ActionRecord{Key: "key-1", Request: "h1", Type: mv.Type, ParcelID: rcv.ID, Status: 200}
	// Retries race each other: one event, the same answer for all.
	var wg sync.WaitGroup
	got := make([]ActionRecord, 8)
	replays := make([]bool, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, replayed, err := o.AppendOnce(ctx, mv, rec)
			if err != nil {
				t.Error(err)
			}
			got[i], replays[i] = r, replayed
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range got {
		if got[i] != got[0] || got[i].EventID == "" || got[i].Request != "h1" || got[i].Status != 200 {
			t.Fatalf("answers differ: %+v vs %+v", got[i], got[0])
		}
		if !replays[i] {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d fresh commits of one key, want 1", fresh)
	}
	o.Close()
	// After a restart the key is still known.
	o = open(t, path, Options{})
	defer o.Close()
	again, replayed, err := o.AppendOnce(ctx, mv, rec)
	if err != nil || !replayed || again != got[0] {
		t.Fatalf("after restart: %+v %v %v", again, replayed, err)
	}
	if r, found, err := o.ActionKey(ctx, "key-1"); err != nil || !found || r != got[0] {
		t.Fatalf("ActionKey: %+v %v %v", r, found, err)
	}
	if _, found, _ := o.ActionKey(ctx, "key-2"); found {
		t.Fatal("an unused key found")
	}
	st, _ := o.Stats(ctx)
	if st.LastSeq != 2 {
		t.Fatalf("last seq %d, want 2 (receipt and one move)", st.LastSeq)
	}
	if _, _, err := o.AppendOnce(ctx, mv, ActionRecord{}); err == nil {
		t.Fatal("an empty action key must be refused")
	}
}

func TestRebuildGivesTheSameStates(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	var ids []string
	for i := range 20 {
		rcv := receive(t, o, fmt.Sprintf("T%d", i), fmt.Sprintf("EMP-%d", i%3), "", t0.Add(time.Duration(i)*time.Second))
		ids = append(ids, rcv.ID)
		var evs []event.Event
		switch i % 4 {
		case 1:
			e := custody(event.TypeParcelMoved, rcv.ID, t0.Add(time.Minute))
			e.Location = "SHELF-A01"
			evs = append(evs, e)
		case 2:
			e := custody(event.TypeParcelOutForDelivery, rcv.ID, t0.Add(time.Minute))
			e.Round = "north"
			evs = append(evs, e, custody(event.TypeParcelDelivered, rcv.ID, t0.Add(2*time.Minute)))
		case 3:
			e := custody(event.TypeParcelForwarded, rcv.ID, t0.Add(time.Minute))
			e.Reason, e.To = "moved", "Munich"
			evs = append(evs, e)
		}
		for _, e := range evs {
			if _, err := o.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := map[string]Parcel{}
	for _, id := range ids {
		before[id] = state(t, o, id)
	}
	n, err := o.rebuildParcels(ctx, false)
	if err != nil || n != 20 {
		t.Fatalf("rebuild: %d %v", n, err)
	}
	for _, id := range ids {
		if got := state(t, o, id); !reflect.DeepEqual(got, before[id]) {
			t.Fatalf("rebuilt state differs:\n got %+v\nwant %+v", got, before[id])
		}
	}
}

func TestParcelStatesSealedAtRestAndRotated(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	line1 := seal.NewKeyLine("k1")
	k1, _ := seal.Parse(line1)
	o := open(t, path, Options{Seal: k1})
	rcv := receive(t, o, "TRACKSECRET1", "EMP-SECRET-9", "MS-SECRET-4", t0)
	if ps, err := o.OpenParcelsOf(ctx, "EMP-SECRET-9", 10); err != nil || len(ps) != 1 || ps[0].ID != rcv.ID {
		t.Fatalf("open parcels of the recipient: %v %v", ps, err)
	}
	o.Close()
	for _, f := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !(errors.Is(err, os.ErrNotExist) && f != path) {
			t.Fatal(err) // the WAL is gone after a clean close; the database is not
		}
		for _, secret := range []string{"TRACKSECRET1", "EMP-SECRET", "MS-SECRET"} {
			if strings.Contains(string(b), secret) {
				t.Fatalf("%s holds %s in clear", f, secret)
			}
		}
	}
	// A new first key: the states are sealed again and still found.
	k2, _ := seal.Parse(seal.NewKeyLine("k2") + "\n" + line1)
	o = open(t, path, Options{Seal: k2})
	if p, err := o.FindParcel(ctx, "TRACKSECRET1"); err != nil || p.ID != rcv.ID {
		t.Fatalf("find after rotation: %v %v", p.ID, err)
	}
	if ps, err := o.OpenParcelsOf(ctx, "EMP-SECRET-9", 10); err != nil || len(ps) != 1 {
		t.Fatalf("open parcels after rotation: %v %v", ps, err)
	}
	// The old key is no longer needed for the parcel states.
	var keys string
	if err := o.rdb.QueryRow("SELECT group_concat(DISTINCT key_id) FROM parcels").Scan(&keys); err != nil || keys != "k2" {
		t.Fatalf("parcel states sealed with %q, %v; want k2", keys, err)
	}
	o.Close()
	if _, err := Open(ctx, Options{Path: path}); err == nil {
		t.Fatal("sealed parcel states opened without a key")
	}
}

func TestWaitingParcelsAndOverdue(t *testing.T) {
	k, _ := seal.Parse(seal.NewKeyLine("k1"))
	for _, opts := range []Options{{}, {Seal: k}} {
		t.Run(fmt.Sprintf("sealed=%v", opts.Seal != nil), func(t *testing.T) { testWaitingParcelsAndOverdue(t, opts) })
	}
}

func testWaitingParcelsAndOverdue(t *testing.T, opts Options) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), opts)
	defer o.Close()
	receive(t, o, "A", "EMP-1", "SHELF-A01", t0)
	receive(t, o, "B", "EMP-1", "SHELF-A01", t0.Add(time.Hour))
	c := receive(t, o, "C", "EMP-2", "SHELF-B01", t0.Add(2*time.Hour))
	d := receive(t, o, "D", "EMP-3", "", t0.Add(3*time.Hour))
	if _, err := o.Append(ctx, custody(event.TypeParcelDelivered, d.ID, t0.Add(4*time.Hour))); err != nil {
		t.Fatal(err)
	}
	w, err := o.WaitingParcels(ctx, t0.Add(90*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if w.Open != 3 || w.Overdue != 2 {
		t.Fatalf("open %d overdue %d, want 3 and 2", w.Open, w.Overdue)
	}
	want := []Group{{Key: "EMP-1", Count: 2, Overdue: 2, Oldest: t0}, {Key: "EMP-2", Count: 1, Overdue: 0, Oldest: t0.Add(2 * time.Hour)}}
	for i := range want {
		want[i].Oldest = want[i].Oldest.Local()
	}
	if !reflect.DeepEqual(w.ByRecipient, want) {
		t.Fatalf("by recipient %+v, want %+v", w.ByRecipient, want)
	}
	if len(w.ByLocation) != 2 || w.ByLocation[0].Key != "SHELF-A01" || w.ByLocation[1].Key != "SHELF-B01" {
		t.Fatalf("by location %+v", w.ByLocation)
	}
	// A directory person's parcels are one group, whatever recipient code
	// each has: one matched by the typed name (no code), one by badge.
	for i, code := range []string{"", "EMP-4"} {
		if _, err := o.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: t0.Add(time.Duration(5+i) * time.Hour),
			Device: "dock", Station: "dock-1", Parcel: &event.Parcel{Carrier: "ups", Tracking: "P" + code}, Recipient: code,
			RecipientID: "p-42", RecipientMatch: "exact"}); err != nil {
			t.Fatal(err)
		}
	}
	receive(t, o, "E", "", "", t0.Add(7*time.Hour)) // no person, no code
	if w, err = o.WaitingParcels(ctx, t0.Add(90*time.Minute), 10); err != nil {
		t.Fatal(err)
	}
	want = append(want, Group{Person: "p-42", Count: 2, Oldest: t0.Add(5 * time.Hour).Local()}, Group{Count: 1, Oldest: t0.Add(7 * time.Hour).Local()})
	if !reflect.DeepEqual(w.ByRecipient, want) {
		t.Fatalf("by recipient with a directory person %+v, want %+v", w.ByRecipient, want)
	}
	ps, err := o.OpenParcelsOf(ctx, "EMP-2", 10)
	if err != nil || len(ps) != 1 || ps[0].ID != c.ID {
		t.Fatalf("open parcels of EMP-2: %v %v", ps, err)
	}
	var day []string
	err = o.EachParcelOf(ctx, t0.Add(150*time.Minute), t0.Add(5*time.Hour), func(p Parcel) error { day = append(day, p.Tracking); return nil })
	if err != nil || strings.Join(day, ",") != "D" {
		t.Fatalf("parcels received or closed in the window: %v %v", day, err)
	}
}

func TestClosedParcelsPrunedAfterRetention(t *testing.T) {
	ctx := context.Background()
	clk := &fakeNow{t: t0}
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{Clock: clk, RetainClosed: 24 * time.Hour})
	defer o.Close()
	open1 := receive(t, o, "A", "", "", t0)
	done := receive(t, o, "B", "", "", t0)
	if _, err := o.Append(ctx, custody(event.TypeParcelReturned, done.ID, t0)); err != nil {
		t.Fatal(err)
	}
	clk.t = t0.Add(23 * time.Hour)
	o.Prune(ctx)
	state(t, o, done.ID)
	clk.t = t0.Add(25 * time.Hour)
	o.Prune(ctx)
	if _, err := o.ParcelByID(ctx, done.ID); !errors.Is(err, ErrNoParcel) {
		t.Fatalf("closed parcel kept past retention: %v", err)
	}
	state(t, o, open1.ID) // open parcels are never pruned
}

type fakeNow struct{ t time.Time }

func (f *fakeNow) Now() time.Time { return f.t }

func TestBufferFromBeforeSchema8GetsItsParcelStates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	rcv := receive(t, o, "T1", "EMP-1", "", t0)
	mv := custody(event.TypeParcelMoved, rcv.ID, t0.Add(time.Minute))
	mv.Location = "SHELF-A01"
	if _, err := o.Append(ctx, mv); err != nil {
		t.Fatal(err)
	}
	o.Close()
	// Take the database back to schema 7.
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(undoSchema12 + "DROP TABLE parcels; DROP TABLE action_keys; DROP TABLE station_modes; DROP TABLE directory; DROP TABLE blobs; DELETE FROM meta WHERE key = 'parcel_key'; PRAGMA user_version = 7"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	o = open(t, path, Options{})
	defer o.Close()
	if p := state(t, o, rcv.ID); p.State != StateStored || p.Location != "SHELF-A01" || p.Recipient != "EMP-1" {
		t.Fatalf("state after migration: %+v", p)
	}
}

func TestClosedParcelTakesNoUpdateAndCodesMatchInAnyCase(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	rcv := receive(t, o, "T1", "EMP-0042", "", t0)
	if ps, err := o.OpenParcelsOf(ctx, "emp-0042", 10); err != nil || len(ps) != 1 {
		t.Fatalf("lower-case recipient code: %v %v", ps, err)
	}
	if p, err := o.FindParcel(ctx, strings.ToUpper(rcv.ID)); err != nil || p.ID != rcv.ID {
		t.Fatalf("upper-case parcel id: %v %v", p.ID, err)
	}
	if _, err := o.Append(ctx, custody(event.TypeParcelDelivered, rcv.ID, t0)); err != nil {
		t.Fatal(err)
	}
	upd := event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: rcv.ID, Recipient: "EMP-9"}
	_, err := o.Append(ctx, upd)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != RefusedClosed {
		t.Fatalf("update of a delivered parcel: %v", err)
	}
	if p := state(t, o, rcv.ID); p.Recipient != "EMP-0042" || p.By != "clara" {
		t.Fatalf("the delivery record changed: %+v", p)
	}
}

// TestSalvageKeepsTheParcelStates damages a buffer whose parcel was
// received and published long ago: after the salvage the parcel is still
// known, with the unsent custody event applied, and its action key still
// answers once.
func TestSalvageKeepsTheParcelStates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	rcv := receive(t, o, "T-OLD", "EMP-1", "", t0)
	recs, _ := o.Pending(ctx, 0, 10)
	for _, r := range recs {
		o.MarkSent(ctx, []int64{r.Pos})
	}
	mv := custody(event.TypeParcelMoved, rcv.ID, t0.Add(time.Minute))
	mv.Location = "SHELF-A01"
	rec := ActionRecord{Key: "k-move", Request: "h", Type: mv.Type, ParcelID: rcv.ID, Status: 200}
	first, _, err := o.AppendOnce(ctx, mv, rec)
	if err != nil {
		t.Fatal(err)
	}
	// A pushed directory and what the box knows of pushes.
	if err := o.ApplyDirectoryPush(ctx, 7, []directory.Entry{{ID: "E1", Name: "Jürgen Müller", Active: true}}, []byte(`{"version":7}`)); err != nil {
		t.Fatal(err)
	}
	if err := o.RecordDirectoryPush(ctx, 9, []byte(`{"version":9,"status":"rejected"}`)); err != nil {
		t.Fatal(err)
	}
	o.Close()
	breakIndex(t, path) // quick_check fails, the tables read

	o = open(t, path, Options{})
	defer o.Close()
	if o.Recovery() == nil {
		t.Fatal("the damage was not noticed")
	}
	p, err := o.FindParcel(ctx, "T-OLD")
	if err != nil || p.ID != rcv.ID || p.State != StateStored || p.Location != "SHELF-A01" || p.Recipient != "EMP-1" {
		t.Fatalf("parcel after salvage: %+v %v", p, err)
	}
	again, replayed, err := o.AppendOnce(ctx, mv, rec)
	if err != nil || !replayed || again.EventID != first.EventID {
		t.Fatalf("action key after salvage: %+v %v %v", again, replayed, err)
	}
	people, _, err := o.Directory(ctx)
	if err != nil || len(people) != 1 || people[0].Name != "Jürgen Müller" {
		t.Fatalf("directory after salvage: %+v %v", people, err)
	}
	if st, err := o.DirectoryPush(ctx); err != nil || st.Applied != 7 || st.Highest != 9 || string(st.Report) != `{"version":9,"status":"rejected"}` {
		t.Fatalf("push state after salvage: %+v %v", st, err)
	}
}

func TestStationModeKeptUntilCleared(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	appendN(t, o, 3)
	if err := o.SetStationMode(ctx, StationMode{Station: "dock-1", Mode: "return", At: t0, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	o.Close()
	o = open(t, path, Options{})
	defer o.Close()
	m, ok, err := o.StationModeOf(ctx, "dock-1")
	if err != nil || !ok || m.Mode != "return" || m.Seq != 3 || !m.At.Equal(t0) {
		t.Fatalf("mode after restart: %+v %v %v", m, ok, err)
	}
	if err := o.SetStationMode(ctx, StationMode{Station: "dock-1"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := o.StationModeOf(ctx, "dock-1"); ok {
		t.Fatal("a cleared mode is still there")
	}
}

func TestDayLogCoversParcelsClosedThatDay(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	day := t0.Add(48 * time.Hour)
	early := receive(t, o, "EARLY", "", "", t0) // received two days before, closed on the day
	if _, err := o.Append(ctx, custody(event.TypeParcelDelivered, early.ID, day.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 1203 { // more than two pages
		ids = append(ids, receive(t, o, fmt.Sprintf("D%d", i), "", "", day.Add(time.Duration(i)*time.Second)).ID)
	}
	receive(t, o, "LATER", "", "", day.Add(25*time.Hour))
	var got []string
	if err := o.EachParcelOf(ctx, day, day.Add(24*time.Hour), func(p Parcel) error { got = append(got, p.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	want := append([]string{early.ID}, ids...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%d parcels, want %d (the early one first)", len(got), len(want))
	}
}

func TestParcelStatesSealedWhenEncryptionIsTurnedOn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buffer.db")
	o := open(t, path, Options{})
	rcv := receive(t, o, "T-CLEAR", "EMP-CLEAR", "", t0)
	o.Close()
	k, _ := seal.Parse(seal.NewKeyLine("k1"))
	o = open(t, path, Options{Seal: k})
	defer o.Close()
	var clear int
	var tag string
	if err := o.rdb.QueryRow("SELECT count(*) FROM parcels WHERE key_id IS NULL").Scan(&clear); err != nil || clear != 0 {
		t.Fatalf("%d parcel states still in clear (%v)", clear, err)
	}
	o.rdb.QueryRow("SELECT recipient_tag FROM parcels").Scan(&tag)
	if !strings.HasPrefix(tag, "t:") {
		t.Fatalf("recipient lookup column %q is not a keyed hash", tag)
	}
	if ps, err := o.OpenParcelsOf(ctx, "EMP-CLEAR", 10); err != nil || len(ps) != 1 || ps[0].ID != rcv.ID {
		t.Fatalf("lookup after sealing: %v %v", ps, err)
	}
}

// TestReadingNeverOverridesAChosenRecipient: a recipient read off the label
// is committed only while the parcel has no person; once a clerk chose one,
// the reading is refused with recipient_known and the clerk's choice stays.
func TestReadingNeverOverridesAChosenRecipient(t *testing.T) {
	ctx := context.Background()
	o := open(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
	defer o.Close()
	ocr := func(parcel, id string) event.Event {
		return event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: parcel, By: "ocr",
			RecipientID: id, RecipientMatch: directory.MatchOCR, RecipientScore: 0.93}
	}
	first := receive(t, o, "T1", "", "", t0)
	if _, err := o.AppendUnassigned(ctx, ocr(first.ID, "p-1")); err != nil {
		t.Fatalf("a reading for a parcel without a person: %v", err)
	}
	if p := state(t, o, first.ID); p.Person != "p-1" || p.Match != directory.MatchOCR {
		t.Fatalf("after the reading: %+v", p)
	}

	second := receive(t, o, "T2", "", "", t0)
	manual := event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: t0, ParcelID: second.ID, By: "clara",
		RecipientID: "p-2", RecipientMatch: directory.MatchManual}
	if _, err := o.Append(ctx, manual); err != nil {
		t.Fatal(err)
	}
	before, _ := o.Stats(ctx)
	_, err := o.AppendUnassigned(ctx, ocr(second.ID, "p-3"))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != RefusedAssigned {
		t.Fatalf("a reading after the clerk chose: %v, want %s", err, RefusedAssigned)
	}
	if p := state(t, o, second.ID); p.Person != "p-2" || p.Match != directory.MatchManual {
		t.Fatalf("the clerk's choice changed: %+v", p)
	}
	if after, _ := o.Stats(ctx); after.LastSeq != before.LastSeq {
		t.Fatalf("a refused reading took seq %d", after.LastSeq)
	}
	if _, err := o.AppendUnassigned(ctx, custody(event.TypeParcelMoved, second.ID, t0)); err == nil {
		t.Fatal("a conditional parcel.moved was accepted")
	}
}

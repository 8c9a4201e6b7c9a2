package web

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

type custodyRig struct {
	*rig
	st *store.Outbox
	c  *http.Client
	// csrf of the signed-in clerk
	token string
}

func startCustody(t *testing.T, proof ...string) *custodyRig {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if proof == nil {
		proof = []string{"badge", "signature", "pin"}
	}
	r := startWith(t, func(o *Options) {
		o.Custody, o.Delivery = st, Delivery{Proof: proof, Overdue: 72 * time.Hour}
		o.Codes = []CodeRule{{Kind: "recipient", Prefix: "EMP-"}, {Kind: "location", Prefix: "SHELF-"}}
		o.People = staticPeople{directory.NewIndex([]directory.Entry{
			{ID: "E1", Name: "Jürgen Müller", Location: "MS-2.14", Badges: []string{"EMP-1"}, Delegates: []string{"E3"}, Active: true},
			{ID: "E2", Name: "Anna Weiß", Badges: []string{"EMP-2"}, Active: true},
			{ID: "E3", Name: "Carla Vogt", Badges: []string{"EMP-3"}, Active: true}})}
	})
	c := r.client()
	r.login(c, "clara", "clerk-password")
	return &custodyRig{rig: r, st: st, c: c, token: r.csrf(c)}
}

func (r *custodyRig) receive(tracking, recipient, pin string) event.Event {
	r.t.Helper()
	ev, err := r.st.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: time.Now(),
		Station: "dock-1", Parcel: &event.Parcel{Carrier: "ups", Tracking: tracking}, Recipient: recipient, PickupPIN: pin})
	if err != nil {
		r.t.Fatal(err)
	}
	return ev
}

func (r *custodyRig) act(body map[string]any) (int, map[string]any) {
	r.t.Helper()
	b, _ := json.Marshal(body)
	code, out := r.postBody(r.c, "/api/custody", r.token, string(b))
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		r.t.Fatalf("answer %d is not JSON: %s", code, out)
	}
	return code, m
}

func (r *custodyRig) state(id string) store.Parcel {
	r.t.Helper()
	p, err := r.st.ParcelByID(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *custodyRig) audits() []string {
	r.t.Helper()
	got, err := r.st.Recent(context.Background(), 100, event.TypeAudit)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for i := len(got) - 1; i >= 0; i-- {
		out = append(out, got[i].Audit.Action+":"+got[i].Audit.Reason)
	}
	return out
}

const sig = "M 10 10 L 100 120 L 200 60 M 300 300 L 310 320"

func TestHandOverWithSignatureOnce(t *testing.T) {
	r := startCustody(t)
	p := r.receive("1Z999AA10123456784", "EMP-0042", "")
	body := map[string]any{"key": "k-1", "action": "deliver", "parcel": "1z999aa10123456784",
		"proof": map[string]any{"method": "signature", "signature": sig}}
	code, res := r.act(body)
	if code != 200 || res["ok"] != true || res["parcel_id"] != p.ID || res["replayed"] != false {
		t.Fatalf("hand-over: %d %v", code, res)
	}
	// The page retries: the first answer, nothing committed.
	code, again := r.act(body)
	if code != 200 || again["event_id"] != res["event_id"] || again["replayed"] != true {
		t.Fatalf("retry: %d %v", code, again)
	}
	st := r.state(p.ID)
	if st.State != store.StateDelivered || st.Proof.Method != "signature" || st.Proof.Signature != sig || st.Proof.Size != len(sig) ||
		st.Proof.SHA256 != fmt.Sprintf("%x", sha256.Sum256([]byte(sig))) || st.By != "clara" {
		t.Fatalf("state %+v", st)
	}
	// The stored signature renders back the same strokes.
	resp, err := r.c.Get(r.base + "/api/parcels/" + p.ID + "/signature")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Signature, SHA256 string }
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Signature != sig || got.SHA256 != st.Proof.SHA256 {
		t.Fatalf("signature read back: %+v", got)
	}
	// Another key for the same parcel: refused, audited, nothing changed.
	body["key"] = "k-2"
	code, res = r.act(body)
	if code != http.StatusConflict || res["code"] != "parcel_closed" || res["state"] != "delivered" {
		t.Fatalf("second delivery: %d %v", code, res)
	}
	if a := r.audits(); len(a) != 1 || a[0] != "custody:parcel_closed" {
		t.Fatalf("audits %v", a)
	}
	// That refusal sent again: the same answer, nothing committed.
	code, again = r.act(body)
	if code != http.StatusConflict || again["code"] != "parcel_closed" || again["replayed"] != true {
		t.Fatalf("refusal sent again: %d %v", code, again)
	}
	if a := r.audits(); len(a) != 1 {
		t.Fatalf("a refusal sent again was audited again: %v", a)
	}
	// The key of the first hand-over reused for another action: refused.
	code, res = r.act(map[string]any{"key": "k-1", "action": "move", "parcel": p.ID, "location": "SHELF-A01"})
	if code != http.StatusUnprocessableEntity || res["code"] != "key_reused" {
		t.Fatalf("key reused: %d %v", code, res)
	}
	n, _ := r.st.Recent(context.Background(), 100, event.TypeParcelDelivered)
	if len(n) != 1 {
		t.Fatalf("%d delivered events, want 1", len(n))
	}
}

func TestHandOverRefusals(t *testing.T) {
	r := startCustody(t, "signature", "pin")
	p := r.receive("TRACK-1", "EMP-1", "123456")
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"no key", map[string]any{"action": "deliver", "parcel": "TRACK-1"}, 400, "key_required"},
		{"unknown action", map[string]any{"key": "a", "action": "fly", "parcel": "TRACK-1"}, 400, "unknown_action"},
		{"unknown parcel", map[string]any{"key": "b", "action": "move", "parcel": "NOPE", "location": "S1"}, 404, "unknown_parcel"},
		{"no proof", map[string]any{"key": "c", "action": "deliver", "parcel": "TRACK-1"}, 400, "proof_required"},
		{"badge not accepted", map[string]any{"key": "d", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "badge", "badge": "EMP-1"}}, 400, "proof_not_accepted"},
		{"wrong pin", map[string]any{"key": "e", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "pin", "pin": "000000"}}, 403, "bad_pin"},
		{"scribble outside the box", map[string]any{"key": "f", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "signature", "signature": "M 0 0 L 5000 5"}}, 400, "bad_signature"},
		{"script as signature", map[string]any{"key": "g", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "signature", "signature": "<script>alert(1)</script>"}}, 400, "bad_signature"},
		{"huge body", map[string]any{"key": "h", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "signature", "signature": strings.Repeat("L 1 1 ", 5000)}}, 413, "too_large"},
		{"signature over 16 KiB", map[string]any{"key": "h2", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "signature", "signature": "M 1 1" + strings.Repeat(" L 1 1", 2731)}}, 400, "bad_signature"},
		{"move without location", map[string]any{"key": "i", "action": "move", "parcel": "TRACK-1"}, 400, "location_required"},
		{"unknown parcel without location", map[string]any{"key": "i2", "action": "move", "parcel": "NOPE"}, 400, "location_required"},
		{"forward without to", map[string]any{"key": "j", "action": "forward", "parcel": "TRACK-1", "reason": "moved"}, 400, "to_required"},
		{"pin missing", map[string]any{"key": "k", "action": "deliver", "parcel": "TRACK-1", "proof": map[string]any{"method": "pin"}}, 400, "pin_required"},
		{"129 characters", map[string]any{"key": "l", "action": "move", "parcel": "TRACK-1", "location": strings.Repeat("ä", 129)}, 400, "too_long"},
		{"bad at", map[string]any{"key": "m", "action": "move", "parcel": "TRACK-1", "location": "S1", "at": "yesterday"}, 400, "bad_at"},
		{"signature with double spaces", map[string]any{"key": "n", "action": "deliver", "parcel": "TRACK-1",
			"proof": map[string]any{"method": "signature", "signature": "M 1 1  L 2 2"}}, 400, "bad_signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, res := r.act(tc.body)
			if code != tc.status || res["code"] != tc.code {
				t.Fatalf("%d %v, want %d %s", code, res, tc.status, tc.code)
			}
		})
	}
	if st := r.state(p.ID); st.State != store.StateReceived {
		t.Fatalf("a refusal changed the parcel: %+v", st)
	}
	// Refusals by state or proof are audited; malformed requests are not.
	want := []string{"custody:unknown_parcel", "custody:proof_required", "custody:proof_not_accepted", "custody:bad_pin"}
	if a := r.audits(); fmt.Sprint(a) != fmt.Sprint(want) {
		t.Fatalf("audits %v, want %v", a, want)
	}
	// The right PIN hands it over; five wrong ones block the PIN.
	q := r.receive("TRACK-2", "EMP-2", "654321")
	for i := range 5 {
		r.act(map[string]any{"key": fmt.Sprint("w", i), "action": "deliver", "parcel": "TRACK-2", "proof": map[string]any{"method": "pin", "pin": "111111"}})
	}
	code, res := r.act(map[string]any{"key": "w-right", "action": "deliver", "parcel": "TRACK-2", "proof": map[string]any{"method": "pin", "pin": "654321"}})
	if code != 403 || res["code"] != "pin_locked" {
		t.Fatalf("after five wrong PINs: %d %v", code, res)
	}
	code, res = r.act(map[string]any{"key": "p-right", "action": "deliver", "parcel": "TRACK-1", "proof": map[string]any{"method": "pin", "pin": "123456"}})
	if code != 200 || r.state(p.ID).Proof.Method != "pin" {
		t.Fatalf("right PIN: %d %v", code, res)
	}
	if r.state(q.ID).State != store.StateReceived {
		t.Fatal("a blocked PIN delivered")
	}
}

func TestCustodyChainFromThePage(t *testing.T) {
	r := startCustody(t)
	p := r.receive("TRACK-9", "EMP-9", "")
	steps := []map[string]any{
		{"key": "1", "action": "move", "parcel": p.ID, "location": "SHELF-A01"},
		{"key": "2", "action": "hold", "parcel": p.ID, "reason": "on leave until 2026-12-07"},
		{"key": "3", "action": "move", "parcel": p.ID, "location": "SHELF-H01"},
		{"key": "4", "action": "deliver", "parcel": p.ID, "proof": map[string]any{"method": "badge", "badge": "EMP-7"}},
	}
	for _, s := range steps {
		if code, res := r.act(s); code != 200 {
			t.Fatalf("%v: %d %v", s, code, res)
		}
	}
	// A badge must be a recipient code; 128 characters of any script fit.
	q := r.receive("TRACK-10", "EMP-10", "")
	code, res := r.act(map[string]any{"key": "5", "action": "deliver", "parcel": q.ID, "proof": map[string]any{"method": "badge", "badge": "=BADGE"}})
	if code != 400 || res["code"] != "not_a_badge" || res["state"] != "received" {
		t.Fatalf("a code that is no badge: %d %v", code, res)
	}
	long := strings.Repeat("ä", 128)
	if code, res := r.act(map[string]any{"key": "6", "action": "move", "parcel": q.ID, "location": long}); code != 200 {
		t.Fatalf("128 characters: %d %v", code, res)
	}
	// An offline action's time, but never before the receipt.
	code, _ = r.act(map[string]any{"key": "7", "action": "deliver", "parcel": q.ID, "at": time.Now().Add(-48 * time.Hour).Format(time.RFC3339),
		"proof": map[string]any{"method": "badge", "badge": "emp-10"}})
	if st := r.state(q.ID); code != 200 || st.Closed.Before(st.Received) || st.Proxy != "" {
		t.Fatalf("delivery before the receipt, or a lower-case badge taken for a proxy: %d %+v", code, st)
	}
	st := r.state(p.ID)
	if st.State != store.StateDelivered || st.Recipient != "EMP-9" || st.Proxy != "EMP-7" || st.Location != "SHELF-H01" {
		t.Fatalf("state %+v", st)
	}
	if r.actions.handed[0] != p.ID {
		t.Fatalf("stations not told of the hand-over: %v", r.actions.handed)
	}
}

func TestWaitingAndRecipientList(t *testing.T) {
	r := startCustody(t)
	a := r.receive("A", "EMP-1", "")
	r.receive("B", "EMP-1", "")
	r.receive("C", "EMP-2", "")
	resp, err := r.c.Get(r.base + "/api/parcels?recipient=EMP-1")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Parcels []ParcelView }
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Parcels) != 2 || list.Parcels[0].ID != a.ID || list.Parcels[0].Tracking != "A" || list.Parcels[0].Overdue {
		t.Fatalf("EMP-1's parcels: %+v", list.Parcels)
	}
	resp, _ = r.c.Get(r.base + "/api/waiting")
	var w struct {
		Open, Overdue int64
		ByRecipient   []GroupView `json:"by_recipient"`
	}
	json.NewDecoder(resp.Body).Decode(&w)
	resp.Body.Close()
	// These parcels were received for badge codes with no person matched
	// (their people imported later): each code's row is its person's.
	// Parcels received in the same millisecond tie: rows are found by
	// their key and person, not by their place.
	row := func(key, person string) (GroupView, bool) {
		for _, g := range w.ByRecipient {
			if g.Person == person && (person != "" || g.Key == key) {
				return g, true
			}
		}
		return GroupView{}, false
	}
	juergen, ok1 := row("", "E1")
	_, ok2 := row("", "E2")
	if w.Open != 3 || w.Overdue != 0 || len(w.ByRecipient) != 2 || !ok1 || juergen.Key != "EMP-1" || juergen.Count != 2 ||
		juergen.Name != "Jürgen Müller" || !ok2 {
		t.Fatalf("waiting %+v", w)
	}
	// Parcels of a directory person, one matched by the typed name (no
	// code kept), are the person's group, named; a parcel received for
	// the person's badge before the person was imported joins it, a code
	// that is nobody's keeps a row of its own.
	r.receive("U", "EMP-99", "")
	for _, code := range []string{"", "EMP-3"} {
		if _, err := r.st.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: time.Now(),
			Station: "dock-1", Parcel: &event.Parcel{Carrier: "ups", Tracking: "V" + code}, Recipient: code, RecipientID: "E3", RecipientMatch: "exact"}); err != nil {
			t.Fatal(err)
		}
	}
	r.receive("W", "emp-3", "")
	resp, _ = r.c.Get(r.base + "/api/waiting")
	w.ByRecipient = nil
	json.NewDecoder(resp.Body).Decode(&w)
	resp.Body.Close()
	nobody, ok1 := row("EMP-99", "")
	carla, ok2 := row("", "E3")
	if len(w.ByRecipient) != 4 || !ok1 || nobody.Count != 1 || !ok2 || carla.Name != "Carla Vogt" || carla.Count != 3 {
		t.Fatalf("waiting with a directory person's parcels %+v", w.ByRecipient)
	}
	if resp := r.get(r.c, "/api/parcels?recipient="); resp.StatusCode != 400 {
		t.Fatalf("empty recipient: %d", resp.StatusCode)
	}
}

func TestDailyLogCSVIsAdminOnlyAndAudited(t *testing.T) {
	r := startCustody(t)
	p := r.receive("=HYPERLINK(\"x\")", "EMP-1", "")
	r.act(map[string]any{"key": "1", "action": "return", "parcel": p.ID, "reason": "refused by recipient"})
	if resp := r.get(r.c, "/api/report.csv"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("clerk got the daily log: %d", resp.StatusCode)
	}
	admin := r.client()
	r.login(admin, "adam", "admin-password")
	resp, err := admin.Get(r.base + "/api/report.csv?day=" + time.Now().Format(time.DateOnly))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || resp.StatusCode != 200 || len(rows) != 3 {
		t.Fatalf("csv %d %v:\n%s", resp.StatusCode, err, body)
	}
	if rows[1][1] != "received" || rows[2][1] != "returned" || rows[2][11] != "refused by recipient" || rows[1][2] != p.ID {
		t.Fatalf("rows %q", rows)
	}
	if !strings.HasPrefix(rows[1][4], "'=") {
		t.Fatalf("a code that is a formula went out as one: %q", rows[1][4])
	}
	if a := r.audits(); len(a) != 1 || !strings.HasPrefix(a[0], "report:") {
		t.Fatalf("audits %v", a)
	}
	if resp := r.get(admin, "/api/report.csv?day=yesterday"); resp.StatusCode != 400 {
		t.Fatalf("bad day: %d", resp.StatusCode)
	}
}

func TestCheckSignature(t *testing.T) {
	for _, tc := range []struct {
		d  string
		ok bool
	}{
		{sig, true},
		{"M 1 1 L 2 2", true},
		{"M 0 0 L 1000 400", true},
		{"", false},
		{"M 1 1", false},
		{"L 1 1 L 2 2", false},
		{"M 1 1 L 2", false},
		{"M 1 1 L -2 2", false},
		{"M 1 1 C 2 2", false},
		{"M 1.5 1 L 2 2", false},
		{" M 1 1 L 2 2", false},
		{"M 1 1 L 2 2 ", false},
		{"M 1 1  L 2 2", false},
		{"M 1 1\tL 2 2", false},
		{"M +1 1 L 2 2", false},
		{"M 01 1 L 2 2", false},
		{"M 1 1 M 2 2 L 3 3", false},
		{"M 1 1 L 2 2 M 3 3", false},
		{"M 1001 1 L 2 2", false},
	} {
		if err := checkSignature(tc.d); (err == nil) != tc.ok {
			t.Errorf("checkSignature(%q) = %v", tc.d, err)
		}
	}
}

// canonicalSignature is the form the page writes: strokes of M and at
// least one L, whole numbers without sign or leading zero, single spaces.
var canonicalSignature = regexp.MustCompile(`^(M (0|[1-9][0-9]*) (0|[1-9][0-9]*)( L (0|[1-9][0-9]*) (0|[1-9][0-9]*))+)( M (0|[1-9][0-9]*) (0|[1-9][0-9]*)( L (0|[1-9][0-9]*) (0|[1-9][0-9]*))+)*$`)

func FuzzCheckSignature(f *testing.F) {
	f.Add("M 1 1 L 2 2 M 3 3 L 4 4")
	f.Add("M 01 1 L 2 2")
	f.Add(sig)
	f.Add("M 1 1 L")
	f.Fuzz(func(t *testing.T, d string) {
		if checkSignature(d) == nil && (len(d) > MaxSignature || !canonicalSignature.MatchString(d)) {
			t.Fatalf("accepted %q", d)
		}
	})
}

func TestOneKeyTwoRequestsAtOnce(t *testing.T) {
	r := startCustody(t)
	p := r.receive("TRACK-C", "EMP-1", "")
	for round := range 10 {
		key := fmt.Sprint("race-", round)
		codes := make(chan int, 2)
		for _, loc := range []string{"SHELF-A01", "SHELF-B02"} {
			go func() {
				code, _ := r.act(map[string]any{"key": key, "action": "move", "parcel": p.ID, "location": loc})
				codes <- code
			}()
		}
		a, b := <-codes, <-codes
		if a+b != 200+http.StatusUnprocessableEntity {
			t.Fatalf("round %d: answers %d and %d, want 200 and 422", round, a, b)
		}
	}
}

type staticPeople struct{ x *directory.Index }

func (p staticPeople) Index(context.Context) (*directory.Index, error) { return p.x, nil }

func TestHandOverFindsAPersonByName(t *testing.T) {
	r := startCustody(t)
	a := r.receive("BY-BADGE", "EMP-1", "")
	b := r.receive("BY-NAME", "Jürgen Müller", "") // a name typed at the manual entry
	r.receive("OTHER", "EMP-2", "")
	resp, err := r.c.Get(r.base + "/api/people?q=" + url.QueryEscape("mueller jurgen"))
	if err != nil {
		t.Fatal(err)
	}
	var found struct{ People []PersonView }
	json.NewDecoder(resp.Body).Decode(&found)
	resp.Body.Close()
	if len(found.People) == 0 || found.People[0].ID != "E1" || found.People[0].Location != "MS-2.14" {
		t.Fatalf("people %+v", found.People)
	}
	resp, _ = r.c.Get(r.base + "/api/parcels?person=E1")
	var list struct {
		Recipient string
		Parcels   []ParcelView
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if list.Recipient != "Jürgen Müller" || len(list.Parcels) != 2 || list.Parcels[0].ID != a.ID || list.Parcels[1].ID != b.ID {
		t.Fatalf("the person's parcels %+v", list)
	}
	if resp := r.get(r.c, "/api/parcels?person=NOPE"); resp.StatusCode != 404 {
		t.Fatalf("unknown person: %d", resp.StatusCode)
	}
	if resp := r.get(r.c, "/api/people?q="); resp.StatusCode != 400 {
		t.Fatalf("empty query: %d", resp.StatusCode)
	}
}

// A parcel nobody was found for waits on the needs-recipient list until a
// clerk assigns a person (parcel.updated, recipient_match manual); at the
// hand-over, only the person and their delegates collect it on a badge.
func TestNeedsRecipientAssignAndDelegates(t *testing.T) {
	r := startCustody(t)
	ctx := context.Background()
	ev, err := r.st.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelReceived, Time: time.Now(), Station: "dock-1",
		Parcel:         &event.Parcel{Carrier: "ups", Tracking: "NEEDS-1", Label: &barcode.Label{Format: "05", ShipTo: &barcode.ShipTo{Name: "J. Mueller"}}},
		RecipientMatch: directory.MatchNone})
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Count   int64
		Parcels []ParcelView
	}
	r.getJSON("/api/needs-recipient", &list)
	if list.Count != 1 || len(list.Parcels) != 1 || list.Parcels[0].ID != ev.ID || list.Parcels[0].Hint != "J. Mueller" || list.Parcels[0].Match != "none" {
		t.Fatalf("needs-recipient %+v", list)
	}
	for _, tc := range []struct {
		body map[string]any
		code int
		want string
	}{
		{map[string]any{"key": "a0", "action": "assign", "parcel": ev.ID}, 400, "person_required"},
		{map[string]any{"key": "a1", "action": "assign", "parcel": ev.ID, "person": "NOPE"}, 400, "unknown_person"},
	} {
		if code, m := r.act(tc.body); code != tc.code || m["code"] != tc.want {
			t.Fatalf("%v: %d %v", tc.body, code, m)
		}
	}
	if code, m := r.act(map[string]any{"key": "a2", "action": "assign", "parcel": ev.ID, "person": "E1"}); code != 200 || m["type"] != "parcel.updated" {
		t.Fatalf("assign: %d %v", code, m)
	}
	got, _ := r.st.Recent(ctx, 1, event.TypeParcelUpdated)
	if len(got) != 1 || got[0].RecipientID != "E1" || got[0].RecipientName != "Jürgen Müller" || got[0].RecipientMatch != "manual" || got[0].By != "clara" {
		t.Fatalf("the assignment event %+v", got)
	}
	list.Parcels = nil
	r.getJSON("/api/needs-recipient", &list)
	if list.Count != 0 || len(list.Parcels) != 0 {
		t.Fatalf("still on the list after the assignment: %+v", list)
	}
	var mine struct{ Parcels []ParcelView }
	r.getJSON("/api/parcels?person=E1", &mine)
	if len(mine.Parcels) != 1 || mine.Parcels[0].ID != ev.ID || mine.Parcels[0].PersonName != "Jürgen Müller" {
		t.Fatalf("the person's parcels %+v", mine)
	}
	// Anna is neither Jürgen nor his delegate: refused and audited.
	code, m := r.act(map[string]any{"key": "d1", "action": "deliver", "parcel": ev.ID, "proof": map[string]any{"method": "badge", "badge": "EMP-2"}})
	if code != 403 || m["code"] != "not_a_delegate" {
		t.Fatalf("a stranger's badge: %d %v", code, m)
	}
	if a := r.audits(); len(a) == 0 || !strings.Contains(a[len(a)-1], "not_a_delegate") {
		t.Fatalf("audits %v", a)
	}
	// Carla is his delegate: delivered, and the event says she collected.
	code, m = r.act(map[string]any{"key": "d2", "action": "deliver", "parcel": ev.ID, "proof": map[string]any{"method": "badge", "badge": "emp-3"}})
	if code != 200 {
		t.Fatalf("the delegate's badge: %d %v", code, m)
	}
	got, _ = r.st.Recent(ctx, 1, event.TypeParcelDelivered)
	if len(got) != 1 || got[0].Proxy != "emp-3" || got[0].RecipientID != "E1" || got[0].RecipientName != "Jürgen Müller" {
		t.Fatalf("the delivery %+v", got)
	}
	// His own badge collects with no proxy.
	own := r.receive("OWN-1", "", "")
	if _, err := r.st.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: time.Now(), ParcelID: own.ID,
		RecipientID: "E1", RecipientMatch: "exact"}); err != nil {
		t.Fatal(err)
	}
	if code, m := r.act(map[string]any{"key": "d3", "action": "deliver", "parcel": own.ID, "proof": map[string]any{"method": "badge", "badge": "EMP-1"}}); code != 200 {
		t.Fatalf("his own badge: %d %v", code, m)
	}
	got, _ = r.st.Recent(ctx, 1, event.TypeParcelDelivered)
	if len(got) != 1 || got[0].Proxy != "" || got[0].Recipient != "EMP-1" {
		t.Fatalf("the delivery to himself %+v", got)
	}
}

// getJSON reads a JSON answer of 200 into v.
func (r *custodyRig) getJSON(path string, v any) {
	r.t.Helper()
	resp, err := r.c.Get(r.base + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); resp.StatusCode != 200 || err != nil {
		r.t.Fatalf("%s: %d %s %v", path, resp.StatusCode, b, err)
	}
}

// A manual entry's recipient that is one person's name is committed as
// that person (recipient_id, how it matched), never as the text typed; a
// person chosen on the page is "manual"; an id in any letter case names
// its person; text that is nobody's stays text.
func TestManualEntryNamesThePersonNotTheText(t *testing.T) {
	r := startCustody(t)
	for _, tc := range []struct {
		body               string
		recipient, id, how string
	}{
		{`{"station":"dock-1","tracking":"T1","recipient":"MUELLER, JUERGEN"}`, "", "E1", "exact"},
		{`{"station":"dock-1","tracking":"T2","recipient":"Carla Voght"}`, "", "E3", "fuzzy"},
		{`{"station":"dock-1","tracking":"T3","recipient":"anything","recipient_id":"e2"}`, "", "E2", "manual"},
		{`{"station":"dock-1","tracking":"T4","recipient":"Poststelle"}`, "Poststelle", "", ""},
		{`{"station":"dock-1","tracking":"T5","recipient":"EMP-1"}`, "EMP-1", "", ""},
	} {
		m, err := r.srv.parseManual(context.Background(), []byte(tc.body))
		if err != nil || m.Recipient != tc.recipient || m.RecipientID != tc.id || m.RecipientMatch != tc.how {
			t.Errorf("%s: %+v %v", tc.body, m, err)
		}
	}
	if _, err := r.srv.parseManual(context.Background(), []byte(`{"station":"dock-1","tracking":"T6","recipient_id":"NOPE"}`)); err == nil ||
		!strings.Contains(err.Error(), "no active person") {
		t.Fatalf("unknown person: %v", err)
	}
}

type brokenPeople struct{}

func (brokenPeople) Index(context.Context) (*directory.Index, error) {
	return nil, errors.New("read directory: disk I/O error")
}

// While the directory cannot be read, a badge cannot be checked: a badge
// hand-over of a person's parcel is refused (503, not kept under the key,
// so the same request works once the directory reads again).
func TestBadgeHandOverRefusedWhileTheDirectoryCannotBeRead(t *testing.T) {
	r := startCustody(t)
	ctx := context.Background()
	own := r.receive("OWN-9", "", "")
	if _, err := r.st.Append(ctx, event.Event{Appliance: "mr-test", Type: event.TypeParcelUpdated, Time: time.Now(), ParcelID: own.ID,
		RecipientID: "E1", RecipientMatch: "exact"}); err != nil {
		t.Fatal(err)
	}
	good := r.srv.opts.People
	r.srv.opts.People = brokenPeople{}
	req := map[string]any{"key": "u1", "action": "deliver", "parcel": own.ID, "proof": map[string]any{"method": "badge", "badge": "EMP-1"}}
	if code, m := r.act(req); code != 503 || m["code"] != "directory_unavailable" {
		t.Fatalf("with the directory unreadable: %d %v", code, m)
	}
	r.srv.opts.People = good
	if code, m := r.act(req); code != 200 || m["replayed"] == true {
		t.Fatalf("the same request once the directory reads: %d %v", code, m)
	}
}

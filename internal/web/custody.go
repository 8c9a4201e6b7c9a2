package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Custody is what the hand-over, round and waiting views read and write.
type Custody interface {
	FindParcel(ctx context.Context, code string) (store.Parcel, error)
	ParcelByID(ctx context.Context, id string) (store.Parcel, error)
	OpenParcelsOf(ctx context.Context, recipient string, limit int) ([]store.Parcel, error)
	OpenParcelsOfPerson(ctx context.Context, id string, limit int) ([]store.Parcel, error)
	NeedsRecipient(ctx context.Context, limit int) ([]store.Parcel, int64, error)
	WaitingParcels(ctx context.Context, overdueBefore time.Time, limit int) (store.Waiting, error)
	EachParcelOf(ctx context.Context, from, to time.Time, fn func(store.Parcel) error) error
	AppendOnce(ctx context.Context, ev event.Event, rec store.ActionRecord) (store.ActionRecord, bool, error)
	ActionKey(ctx context.Context, key string) (store.ActionRecord, bool, error)
	Append(ctx context.Context, ev event.Event) (event.Event, error)
}

var _ Custody = (*store.Outbox)(nil)

// People finds people in the recipient directory.
type People interface {
	// Index returns the directory's current index.
	Index(ctx context.Context) (*directory.Index, error)
}

// PersonView is a person as the hand-over lists them.
type PersonView struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Location string  `json:"location"`
	Score    float64 `json:"score"`
}

func (s *Server) people(w http.ResponseWriter, r *http.Request, _ *session) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" || utf8.RuneCountInString(q) > maxCode {
		jsonErrorCode(w, http.StatusBadRequest, "query_required", "a name or badge of 1 to 128 characters is required")
		return
	}
	x, err := s.opts.People.Index(r.Context())
	if err != nil {
		s.opts.Log.Error("recipient directory cannot be read", "err", err)
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	out := []PersonView{}
	for _, m := range x.Search(q, 10) {
		out = append(out, PersonView{ID: m.ID, Name: m.Name, Location: m.Location, Score: m.Score})
	}
	writeJSON(w, map[string]any{"people": out})
}

// directory is the recipient directory as it is now; nil when there is none or it
// cannot be read.
func (s *Server) directory(ctx context.Context) *directory.Index {
	if s.opts.People == nil {
		return nil
	}
	x, err := s.opts.People.Index(ctx)
	if err != nil {
		s.opts.Log.Error("recipient directory cannot be read", "err", err)
		return nil
	}
	return x
}

// person finds an active person of the directory by id.
func (s *Server) person(ctx context.Context, id string) (directory.Entry, bool) {
	x := s.directory(ctx)
	if x == nil {
		return directory.Entry{}, false
	}
	return x.ByID(id)
}

// personParcels lists the open parcels of a person of the directory: those
// matched to them, and those received for any of their badges, their id
// or their name.
func (s *Server) personParcels(ctx context.Context, id string) (directory.Entry, []store.Parcel, error) {
	x, err := s.opts.People.Index(ctx)
	if err != nil {
		return directory.Entry{}, nil, err
	}
	e, ok := x.ByID(id)
	if !ok {
		return directory.Entry{}, nil, store.ErrNoParcel
	}
	seen := map[string]bool{}
	var out []store.Parcel
	for i, code := range append([]string{e.ID, e.ID, e.Name}, e.Badges...) {
		var ps []store.Parcel
		var err error
		if i == 0 {
			ps, err = s.opts.Custody.OpenParcelsOfPerson(ctx, e.ID, maxList)
		} else {
			ps, err = s.opts.Custody.OpenParcelsOf(ctx, code, maxList)
		}
		if err != nil {
			return e, nil, err
		}
		for _, p := range ps {
			if !seen[p.ID] {
				seen[p.ID] = true
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b store.Parcel) int { return a.Received.Compare(b.Received) })
	return e, out, nil
}

// Delivery is the site's hand-over policy.
type Delivery struct {
	// Proof lists the accepted proof methods (badge, signature, pin, clerk).
	Proof []string `json:"proof"`
	// Overdue is the age from which an open parcel is overdue.
	Overdue time.Duration `json:"-"`
}

// CodeRule is an internal barcode rule, for the handheld page to tell a
// badge from a parcel while the box is out of reach.
type CodeRule struct {
	Kind    string `json:"kind"`
	Prefix  string `json:"prefix,omitempty"`
	Pattern string `json:"pattern,omitempty"`
	Action  string `json:"action,omitempty"`
}

// Limits of what the page may send.
const (
	// MaxSignature is the longest signature path data accepted, in bytes.
	MaxSignature = 16 << 10
	maxCode      = 128
	maxText      = 200
	// pinTries wrong PINs for one parcel block PIN hand-over of it until
	// the daemon restarts; another proof still works.
	pinTries = 5
	// pinParcels is how many parcels' wrong PINs are counted at most;
	// beyond it the counts below the limit are forgotten.
	pinParcels = 10000
)

// ParcelView is a parcel as the page shows it.
type ParcelView struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Carrier   string    `json:"carrier,omitempty"`
	Tracking  string    `json:"tracking,omitempty"`
	Recipient string    `json:"recipient,omitempty"`
	Location  string    `json:"location,omitempty"`
	Round     string    `json:"round,omitempty"`
	Received  time.Time `json:"received"`
	AgeS      float64   `json:"age_s"`
	Overdue   bool      `json:"overdue"`
	HasPIN    bool      `json:"has_pin"`
	// Proof is the delivery's proof method, once delivered.
	Proof string `json:"proof,omitempty"`
	// Person is the directory id of the person it is for, PersonName
	// their name as the directory has it now, Match how they were found
	// ("none": it needs a recipient).
	Person     string `json:"person,omitempty"`
	PersonName string `json:"person_name,omitempty"`
	Match      string `json:"match,omitempty"`
	// Hint is the name the 2D label prints, on a parcel that needs a
	// recipient.
	Hint string `json:"hint,omitempty"`
}

// views are parcels as the page lists them, with the names of their
// recipients from the directory as it is now.
func (s *Server) views(ctx context.Context, ps []store.Parcel) []ParcelView {
	x := s.directory(ctx) // without it, no names
	out := make([]ParcelView, 0, len(ps))
	for _, p := range ps {
		v := s.view(p)
		if x != nil && p.Person != "" {
			if e, ok := x.ByID(p.Person); ok {
				v.PersonName = e.Name
			}
		}
		out = append(out, v)
	}
	return out
}

func (s *Server) view(p store.Parcel) ParcelView {
	now := s.opts.Now()
	v := ParcelView{ID: p.ID, State: string(p.State), Carrier: p.Carrier, Tracking: p.Tracking, Recipient: p.Recipient,
		Location: p.Location, Round: p.Round, Received: p.Received, AgeS: now.Sub(p.Received).Seconds(), HasPIN: p.PickupPIN != "",
		Person: p.Person, Match: p.Match, Hint: p.Hint}
	if s.opts.PrivacyID {
		v.Hint = "" // kept from before the setting changed: not shown
	}
	v.Overdue = !p.State.Closed() && s.opts.Delivery.Overdue > 0 && now.Sub(p.Received) >= s.opts.Delivery.Overdue
	if p.Proof != nil {
		v.Proof = p.Proof.Method
	}
	return v
}

func (s *Server) findParcel(w http.ResponseWriter, r *http.Request, _ *session) {
	code := strings.TrimSpace(r.URL.Query().Get("code"))
	if code == "" || utf8.RuneCountInString(code) > maxCode {
		jsonErrorCode(w, http.StatusBadRequest, "code_required", "a code of 1 to 128 characters is required")
		return
	}
	p, err := s.lookup(r.Context(), code)
	if errors.Is(err, store.ErrNoParcel) {
		jsonErrorCode(w, http.StatusNotFound, store.RefusedUnknownParcel, "no parcel with that code on this box: receive it first")
		return
	}
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, s.views(r.Context(), []store.Parcel{p})[0])
}

// lookup finds a parcel by a scanned or typed code: its id (the code on
// the receiving label, in any case) or its tracking number.
func (s *Server) lookup(ctx context.Context, code string) (store.Parcel, error) {
	p, err := s.opts.Custody.FindParcel(ctx, code)
	if errors.Is(err, store.ErrNoParcel) {
		if up := strings.ToUpper(strings.ReplaceAll(code, " ", "")); up != code {
			p, err = s.opts.Custody.FindParcel(ctx, up)
		}
		if errors.Is(err, store.ErrNoParcel) && strings.ToLower(code) != code {
			p, err = s.opts.Custody.FindParcel(ctx, strings.ToLower(code))
		}
	}
	return p, err
}

// maxList is how many parcels of one recipient the page lists.
const maxList = 500

func (s *Server) recipientParcels(w http.ResponseWriter, r *http.Request, _ *session) {
	if r.URL.Query().Has("person") && s.opts.People != nil {
		id := strings.TrimSpace(r.URL.Query().Get("person"))
		if id == "" {
			jsonErrorCode(w, http.StatusBadRequest, "person_required", "a person's directory id is required")
			return
		}
		e, ps, err := s.personParcels(r.Context(), id)
		if errors.Is(err, store.ErrNoParcel) {
			jsonErrorCode(w, http.StatusNotFound, "unknown_person", "no active person with that id in the directory")
			return
		}
		if err != nil {
			jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
			return
		}
		out := s.views(r.Context(), ps)
		badge := ""
		if len(e.Badges) > 0 {
			badge = e.Badges[0]
		}
		writeJSON(w, map[string]any{"recipient": e.Name, "person": e.ID, "badge": badge, "parcels": out})
		return
	}
	who := strings.TrimSpace(r.URL.Query().Get("recipient"))
	if who == "" || utf8.RuneCountInString(who) > maxCode {
		jsonErrorCode(w, http.StatusBadRequest, "recipient_required", "a recipient code of 1 to 128 characters is required")
		return
	}
	ps, err := s.opts.Custody.OpenParcelsOf(r.Context(), who, maxList)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, map[string]any{"recipient": who, "parcels": s.views(r.Context(), ps)})
}

// needsRecipient lists the open parcels no person of the directory was
// found for, oldest first.
func (s *Server) needsRecipient(w http.ResponseWriter, r *http.Request, _ *session) {
	ps, n, err := s.opts.Custody.NeedsRecipient(r.Context(), maxList)
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	writeJSON(w, map[string]any{"count": n, "parcels": s.views(r.Context(), ps)})
}

// GroupView is one recipient's or location's waiting parcels.
type GroupView struct {
	Key string `json:"key"`
	// Person and Name are the directory person of a recipient group (all
	// their parcels, whatever recipient code each has), and the person's
	// name while the directory has them.
	Person  string  `json:"person,omitempty"`
	Name    string  `json:"name,omitempty"`
	Count   int64   `json:"count"`
	Overdue int64   `json:"overdue"`
	OldestS float64 `json:"oldest_s"`
}

// maxGroups is how many recipients and locations the waiting view lists.
const maxGroups = 100

func (s *Server) waiting(w http.ResponseWriter, r *http.Request, _ *session) {
	now := s.opts.Now()
	wt, err := s.opts.Custody.WaitingParcels(r.Context(), now.Add(-s.opts.Delivery.Overdue), maxGroups)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	x := s.directory(r.Context()) // without it, no names
	wt.ByRecipient = mergeImported(wt.ByRecipient, x)
	conv := func(gs []store.Group) []GroupView {
		out := make([]GroupView, 0, len(gs))
		for _, g := range gs {
			v := GroupView{Key: g.Key, Person: g.Person, Count: g.Count, Overdue: g.Overdue, OldestS: now.Sub(g.Oldest).Seconds()}
			if x != nil && g.Person != "" {
				if e, ok := x.ByID(g.Person); ok {
					v.Name = e.Name
				}
			}
			out = append(out, v)
		}
		return out
	}
	writeJSON(w, map[string]any{"open": wt.Open, "overdue": wt.Overdue, "overdue_after_s": s.opts.Delivery.Overdue.Seconds(),
		"by_recipient": conv(wt.ByRecipient), "by_location": conv(wt.ByLocation)})
}

// mergeImported moves each row of a recipient code that is now an active
// person's badge or id into that person's row, as the person's hand-over
// list finds those parcels: a parcel received for a code before its person
// was imported keeps no person of its own. A person without a row of
// their own among gs gets the code's row. The rows stay in order of their
// oldest parcel. gs is changed in place.
func mergeImported(gs []store.Group, x *directory.Index) []store.Group {
	if x == nil {
		return gs
	}
	rowOf := map[string]int{} // person id: index in gs
	for i, g := range gs {
		if g.Person != "" {
			rowOf[g.Person] = i
		}
	}
	merged := false
	for i := range gs {
		g := &gs[i]
		if g.Person != "" || g.Key == "" {
			continue
		}
		e, ok := x.ByBadge(g.Key)
		if !ok {
			e, ok = x.ByID(g.Key)
		}
		if !ok {
			continue
		}
		j, has := rowOf[e.ID]
		if !has {
			g.Person = e.ID
			rowOf[e.ID] = i
			continue
		}
		p := &gs[j]
		p.Count += g.Count
		p.Overdue += g.Overdue
		if g.Oldest.Before(p.Oldest) {
			p.Oldest, p.Key = g.Oldest, g.Key
		}
		g.Count = -1 // merged away
		merged = true
	}
	if !merged {
		return gs
	}
	gs = slices.DeleteFunc(gs, func(g store.Group) bool { return g.Count < 0 })
	slices.SortStableFunc(gs, func(a, b store.Group) int { return a.Oldest.Compare(b.Oldest) })
	return gs
}

// CustodyRequest is the body of POST /api/custody: one action on one
// parcel.
type CustodyRequest struct {
	// Key is the action's idempotency key: the same key again returns the
	// first answer and commits nothing.
	Key string `json:"key"`
	// Action is move, out_for_delivery, deliver, hold, return or forward.
	Action string `json:"action"`
	// Parcel is the parcel's id or tracking number.
	Parcel    string        `json:"parcel"`
	Station   string        `json:"station"`
	Location  string        `json:"location"`
	Round     string        `json:"round"`
	Recipient string        `json:"recipient"`
	Proxy     string        `json:"proxy"`
	Proof     *ProofRequest `json:"proof"`
	Reason    string        `json:"reason"`
	To        string        `json:"to"`
	// Person is the directory id of the person an assign action names.
	Person string `json:"person"`
	// At is when the action was done on a handheld that was offline
	// (RFC 3339); the box's time is used when it is empty or implausible.
	At string `json:"at"`
}

// ProofRequest is the proof of a deliver action.
type ProofRequest struct {
	Method    string `json:"method"`
	Badge     string `json:"badge"`
	PIN       string `json:"pin"`
	Signature string `json:"signature"`
}

var custodyTypes = map[string]event.Type{
	"move": event.TypeParcelMoved, "out_for_delivery": event.TypeParcelOutForDelivery, "deliver": event.TypeParcelDelivered,
	"hold": event.TypeParcelHeld, "return": event.TypeParcelReturned, "forward": event.TypeParcelForwarded,
	"assign": event.TypeParcelUpdated,
}

// custodyError is an action the page refuses; code names it for the page.
type custodyError struct {
	status     int
	code, msg  string
	state      string
	auditable  bool // a refusal by the parcel's state or by its proof: audited, recorded under the key
	replayed   bool // the key answered this refusal before
	parcelID   string
	actionType event.Type
}

func (e *custodyError) Error() string { return e.msg }

func refused(code, msg string) *custodyError {
	return &custodyError{status: http.StatusBadRequest, code: code, msg: msg}
}

// pinFailures counts wrong PINs per parcel.
type pinFailures struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *pinFailures) blocked(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[id] >= pinTries
}

func (f *pinFailures) fail(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	if len(f.n) >= pinParcels {
		for id, n := range f.n {
			if n < pinTries {
				delete(f.n, id) // locked parcels stay locked
			}
		}
		if len(f.n) >= 10*pinParcels {
			clear(f.n) // bounded however many are locked
		}
	}
	f.n[id]++
}

func (s *Server) custody(w http.ResponseWriter, r *http.Request, sess *session) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxSignature+8192))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeRefusal(w, &custodyError{status: http.StatusRequestEntityTooLarge, code: "too_large",
			msg: "request too large: at most 24 KiB, of which a signature at most 16 KiB"})
		return
	case err != nil:
		writeRefusal(w, &custodyError{status: http.StatusBadRequest, code: "malformed", msg: "the request could not be read: " + err.Error()})
		return
	}
	var req CustodyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeRefusal(w, &custodyError{status: http.StatusBadRequest, code: "malformed",
			msg: "malformed request: the body must be one JSON object as docs/custody.md describes"})
		return
	}
	res, cerr := s.doCustody(r.Context(), &req, sess.user)
	if cerr != nil && cerr.auditable && !cerr.replayed {
		res, cerr = s.auditRefusal(r.Context(), &req, sess.user, cerr)
	}
	if cerr != nil {
		s.opts.Log.Warn("custody action refused", "user", sess.user, "action", req.Action, "reason", cerr.code, "parcel", cerr.parcelID,
			"replayed", cerr.replayed)
		writeRefusal(w, cerr)
		return
	}
	writeJSON(w, res)
}

// writeRefusal answers a refused custody action.
func writeRefusal(w http.ResponseWriter, e *custodyError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{"error": e.msg, "code": e.code, "state": e.state, "parcel_id": e.parcelID, "replayed": e.replayed})
}

// requestHash identifies a request, so that the same key sent with
// another request is told from a retry: a hash of what the action does,
// trimmed, version 1. Proof secrets (signature, PIN, badge) are left out:
// the hash is kept in clear.
func requestHash(req *CustodyRequest) string {
	h := sha256.New()
	method := ""
	if req.Proof != nil {
		method = req.Proof.Method
	}
	fields := []string{"v1", req.Key, req.Action, req.Parcel, req.Station, req.Location, req.Round, req.Recipient, req.Proxy,
		req.Reason, req.To, strings.TrimSpace(method), strings.TrimSpace(req.At)}
	if p := strings.TrimSpace(req.Person); p != "" {
		fields = append(fields, p) // only then: keys answered before it existed keep their hash
	}
	for _, f := range fields {
		h.Write([]byte(strconv.Itoa(len(f))))
		h.Write([]byte{':'})
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// replay answers a key that was used before as it was answered then, or
// refuses a key used before for another request.
func replay(rec store.ActionRecord, hash string) (CustodyResult, *custodyError) {
	if rec.Request != hash {
		return CustodyResult{}, &custodyError{status: http.StatusUnprocessableEntity, code: "key_reused",
			msg: "this key was used for another action: every action needs a key of its own"}
	}
	if rec.Status == http.StatusOK {
		return CustodyResult{OK: true, EventID: rec.EventID, Seq: rec.Seq, ParcelID: rec.ParcelID, Type: string(rec.Type), Replayed: true}, nil
	}
	return CustodyResult{}, &custodyError{status: rec.Status, code: rec.Code, state: rec.State, parcelID: rec.ParcelID, actionType: rec.Type,
		replayed: true, msg: "refused when this key was first sent: " + rec.Code}
}

// CustodyResult is the answer to POST /api/custody.
type CustodyResult struct {
	OK       bool   `json:"ok"`
	EventID  string `json:"event_id"`
	Seq      int64  `json:"seq"`
	ParcelID string `json:"parcel_id"`
	Type     string `json:"type"`
	// Replayed is true when the key was committed before: nothing new was
	// committed.
	Replayed bool `json:"replayed"`
}

func (s *Server) doCustody(ctx context.Context, req *CustodyRequest, user string) (CustodyResult, *custodyError) {
	trim := func(v *string) { *v = strings.TrimSpace(*v) }
	for _, v := range []*string{&req.Key, &req.Action, &req.Parcel, &req.Station, &req.Location, &req.Round, &req.Recipient, &req.Proxy, &req.Reason, &req.To, &req.Person} {
		trim(v)
	}
	switch {
	case req.Key == "":
		return CustodyResult{}, refused("key_required", "an action key of 1 to 128 characters is required")
	case utf8.RuneCountInString(req.Key) > maxCode:
		return CustodyResult{}, refused("too_long", fmt.Sprintf("key is longer than %d characters", maxCode))
	}
	// The key first: an action answered before gets that answer again,
	// whatever changed since (a station removed, a parcel's state dropped).
	hash := requestHash(req)
	if rec, found, err := s.opts.Custody.ActionKey(ctx, req.Key); err != nil {
		return CustodyResult{}, &custodyError{status: http.StatusServiceUnavailable, code: "refused", msg: err.Error()}
	} else if found {
		return replay(rec, hash)
	}
	typ, ok := custodyTypes[req.Action]
	switch {
	case !ok:
		return CustodyResult{}, refused("unknown_action", "unknown action "+strconv.Quote(req.Action)+" (move, out_for_delivery, deliver, hold, return, forward, assign)")
	case req.Parcel == "":
		return CustodyResult{}, refused("parcel_required", "a parcel code is required")
	case req.Station != "" && !s.hasStation(req.Station):
		return CustodyResult{}, refused("unknown_station", "unknown station "+strconv.Quote(req.Station))
	}
	for _, f := range []struct {
		v, name string
		max     int
	}{{req.Key, "key", maxCode}, {req.Parcel, "parcel", maxCode}, {req.Location, "location", maxCode}, {req.Round, "round", maxCode},
		{req.Recipient, "recipient", maxCode}, {req.Proxy, "proxy", maxCode}, {req.Person, "person", maxCode}, {req.Reason, "reason", maxText}, {req.To, "to", maxText}} {
		if n := utf8.RuneCountInString(f.v); n > f.max {
			return CustodyResult{}, refused("too_long", fmt.Sprintf("%s is longer than %d characters", f.name, f.max))
		}
	}
	var at time.Time
	if req.At != "" {
		var err error
		if at, err = time.Parse(time.RFC3339Nano, req.At); err != nil {
			return CustodyResult{}, refused("bad_at", "at must be an RFC 3339 time such as 2026-11-29T10:14:03Z")
		}
	}
	// An incomplete request is refused before the parcel is looked up: it
	// is neither audited nor keyed, whatever parcel it names.
	if code, msg := incomplete(req); code != "" {
		return CustodyResult{}, &custodyError{status: http.StatusBadRequest, code: code, msg: msg, actionType: typ}
	}
	p, err := s.lookup(ctx, req.Parcel)
	if errors.Is(err, store.ErrNoParcel) {
		return CustodyResult{}, &custodyError{status: http.StatusNotFound, code: store.RefusedUnknownParcel, auditable: true, actionType: typ,
			msg: "no parcel with that code on this box: receive it first"}
	}
	if err != nil {
		return CustodyResult{}, &custodyError{status: http.StatusServiceUnavailable, code: "refused", msg: err.Error()}
	}
	now := s.opts.Now()
	if at.IsZero() || !at.Before(now.Add(time.Minute)) || !at.After(now.Add(-7*24*time.Hour)) {
		at = now
	}
	if at.Before(p.Received) {
		at = p.Received // nothing happens to a parcel before it was received
	}
	ev := event.Event{Appliance: s.opts.Appliance, Site: s.opts.Site, Type: typ, Time: at, Station: req.Station,
		ParcelID: p.ID, By: user}
	bad := func(code, msg string) (CustodyResult, *custodyError) {
		return CustodyResult{}, &custodyError{status: http.StatusBadRequest, code: code, msg: msg, parcelID: p.ID, state: string(p.State), actionType: typ}
	}
	switch req.Action {
	case "assign":
		e, ok := s.person(ctx, req.Person)
		if !ok {
			return bad("unknown_person", "no active person with that id in the directory")
		}
		ev.RecipientID, ev.RecipientMatch = e.ID, directory.MatchManual
		if !s.opts.PrivacyID {
			ev.RecipientName = e.Name
		}
	case "move":
		ev.Location = req.Location
	case "out_for_delivery":
		ev.Round = req.Round
	case "hold":
		ev.Reason, ev.Location = req.Reason, req.Location
	case "return":
		ev.Reason = req.Reason
	case "forward":
		ev.Reason, ev.To = req.Reason, req.To
	case "deliver":
		proof, cerr := s.checkProof(p, req)
		if cerr != nil {
			cerr.parcelID, cerr.state, cerr.actionType = p.ID, string(p.State), typ
			return CustodyResult{}, cerr
		}
		ev.Proof = proof
		ev.Recipient = p.Recipient
		collector := req.Recipient
		if proof.Method == event.ProofBadge {
			collector = proof.Badge
		}
		self, delegate := false, false
		if p.Person != "" {
			// A parcel for a person of the directory goes, on a badge, to
			// that person or one of their delegates only.
			var x *directory.Index
			if s.opts.People != nil {
				var err error
				if x, err = s.opts.People.Index(ctx); err != nil && proof.Method == event.ProofBadge {
					s.opts.Log.Error("recipient directory cannot be read; a badge hand-over is refused", "err", err)
					// Not recorded under the key: the same request may work once
					// the directory reads again.
					return CustodyResult{}, &custodyError{status: http.StatusServiceUnavailable, code: store.RefusedNoDirectory,
						parcelID: p.ID, state: string(p.State), actionType: typ,
						msg: "the recipient directory cannot be read, so the badge cannot be checked: use another proof"}
				}
			}
			person, known := directory.Entry{}, false
			if x != nil {
				person, known = x.ByID(p.Person)
			}
			if known && proof.Method == event.ProofBadge {
				holder, ok := x.ByBadge(proof.Badge)
				if !ok || !directory.MayCollect(person, holder) {
					return CustodyResult{}, &custodyError{status: http.StatusForbidden, code: "not_a_delegate", auditable: true,
						parcelID: p.ID, state: string(p.State), actionType: typ,
						msg: "this badge's holder may not collect for the recipient: only the recipient and their delegates may"}
				}
				self = strings.EqualFold(holder.ID, person.ID)
				delegate = !self
			}
			ev.RecipientID, ev.RecipientMatch = p.Person, p.Match
			if known && !s.opts.PrivacyID {
				ev.RecipientName = person.Name
			}
		}
		switch {
		case delegate:
			ev.Proxy = collector // a delegate collects for the recipient
		case ev.Recipient == "":
			ev.Recipient = collector
		case collector != "" && !self && !strings.EqualFold(collector, ev.Recipient):
			ev.Proxy = collector
		}
		if req.Proxy != "" {
			ev.Proxy = req.Proxy
		}
	}
	rec := store.ActionRecord{Key: req.Key, Request: hash, Type: typ, ParcelID: p.ID, Status: http.StatusOK}
	committed, replayed, err := s.opts.Custody.AppendOnce(ctx, ev, rec)
	var rerr *store.RefusedError
	if errors.As(err, &rerr) {
		status := http.StatusConflict
		if rerr.Code == store.RefusedUnknownParcel {
			status = http.StatusNotFound // its state was dropped meanwhile
		}
		return CustodyResult{}, &custodyError{status: status, code: rerr.Code, state: string(rerr.State), msg: rerr.Error(),
			auditable: true, parcelID: p.ID, actionType: typ}
	}
	if err != nil {
		return CustodyResult{}, &custodyError{status: http.StatusServiceUnavailable, code: "refused", msg: "not recorded: " + err.Error(),
			parcelID: p.ID, state: string(p.State)}
	}
	if replayed { // a retry that raced the first send
		return replay(committed, hash)
	}
	s.opts.Log.Info("parcel "+strings.TrimPrefix(string(typ), "parcel."), "user", user, "parcel", p.ID, "location", ev.Location,
		"round", ev.Round, "proof", proofMethodOf(ev.Proof), "seq", committed.Seq)
	if typ == event.TypeParcelDelivered && s.opts.Actions != nil {
		s.opts.Actions.Handed(p.ID)
	}
	return CustodyResult{OK: true, EventID: committed.EventID, Seq: committed.Seq, ParcelID: p.ID, Type: string(typ)}, nil
}

func proofMethodOf(p *event.Proof) string {
	if p == nil {
		return ""
	}
	return p.Method
}

// checkProof checks the proof of a delivery against the site's policy.
func (s *Server) checkProof(p store.Parcel, req *CustodyRequest) (*event.Proof, *custodyError) {
	pr := req.Proof
	if pr == nil || pr.Method == "" {
		return nil, &custodyError{status: http.StatusBadRequest, code: "proof_required", auditable: true,
			msg: "a delivery needs proof: one of " + strings.Join(s.opts.Delivery.Proof, ", ")}
	}
	if !slices.Contains(s.opts.Delivery.Proof, pr.Method) {
		return nil, &custodyError{status: http.StatusBadRequest, code: "proof_not_accepted", auditable: true,
			msg: "this site does not accept " + strconv.Quote(pr.Method) + " as proof (delivery.proof: " + strings.Join(s.opts.Delivery.Proof, ", ") + ")"}
	}
	switch pr.Method {
	case event.ProofBadge:
		b := strings.TrimSpace(pr.Badge)
		if b == "" || utf8.RuneCountInString(b) > maxCode {
			return nil, refused("badge_required", "scan the recipient's badge")
		}
		if s.badges != nil && s.badges.Classify([]byte(b)).Kind != barcode.KindRecipient {
			return nil, refused("not_a_badge", "that code is no recipient's badge (barcodes.internal, kind recipient)")
		}
		return &event.Proof{Method: event.ProofBadge, Badge: b}, nil
	case event.ProofSignature:
		if err := checkSignature(pr.Signature); err != nil {
			return nil, refused("bad_signature", err.Error())
		}
		sum := sha256.Sum256([]byte(pr.Signature))
		return &event.Proof{Method: event.ProofSignature, SHA256: hex.EncodeToString(sum[:]), Size: len(pr.Signature), Signature: pr.Signature}, nil
	case event.ProofPIN:
		switch {
		case strings.TrimSpace(pr.PIN) == "":
			return nil, refused("pin_required", "enter the pickup PIN")
		case p.PickupPIN == "":
			return nil, &custodyError{status: http.StatusBadRequest, code: "no_pin", auditable: true, msg: "this parcel has no pickup PIN"}
		case s.pins.blocked(p.ID):
			return nil, &custodyError{status: http.StatusForbidden, code: "pin_locked", auditable: true,
				msg: "too many wrong PINs for this parcel: take another proof"}
		case subtle.ConstantTimeCompare([]byte(strings.TrimSpace(pr.PIN)), []byte(p.PickupPIN)) != 1:
			s.pins.fail(p.ID)
			return nil, &custodyError{status: http.StatusForbidden, code: "bad_pin", auditable: true, msg: "wrong PIN"}
		}
		return &event.Proof{Method: event.ProofPIN}, nil
	case event.ProofClerk:
		return &event.Proof{Method: event.ProofClerk}, nil
	}
	return nil, refused("proof_not_accepted", "unknown proof method")
}

// checkSignature accepts SVG path data as the page writes it: strokes of
// an absolute M and one or more L commands, with integer coordinates
// (digits only, no sign, no leading zero) in the 1000×400 signing box,
// separated by single spaces, nothing before or after.
func checkSignature(d string) error {
	switch {
	case d == "":
		return errors.New("the signature is empty")
	case len(d) > MaxSignature:
		return fmt.Errorf("the signature is longer than %d bytes", MaxSignature)
	}
	fields := strings.Split(d, " ")
	if len(fields)%3 != 0 {
		return errors.New("the signature is not path data of M x y and L x y commands separated by single spaces")
	}
	inStroke := 0 // points of the current stroke
	for i := 0; i < len(fields); i += 3 {
		cmd := fields[i]
		switch {
		case cmd == "M":
			if i > 0 && inStroke < 2 {
				return errors.New("every stroke of the signature needs an M and at least one L")
			}
			inStroke = 1
		case cmd == "L" && i > 0:
			inStroke++
		default:
			return errors.New("the signature is not path data of M x y and L x y commands starting with M")
		}
		for j, limit := range []int{1000, 400} {
			v := fields[i+1+j]
			n, err := strconv.Atoi(v)
			if err != nil || v == "" || v[0] < '0' || v[0] > '9' || (len(v) > 1 && v[0] == '0') {
				return fmt.Errorf("signature coordinate %q is not a whole number written plainly", v)
			}
			if n > limit {
				return errors.New("a signature point is outside the 1000×400 box")
			}
		}
	}
	if inStroke < 2 {
		return errors.New("every stroke of the signature needs an M and at least one L")
	}
	return nil
}

// auditRefusal commits a refusal as an audit event and records it under
// the action's key, so that the same key again gets the same refusal and
// commits nothing. A retry that raced it gets the first answer.
func (s *Server) auditRefusal(ctx context.Context, req *CustodyRequest, user string, cerr *custodyError) (CustodyResult, *custodyError) {
	ev := event.Event{Appliance: s.opts.Appliance, Site: s.opts.Site, Type: event.TypeAudit, Time: s.opts.Now(),
		Station: req.Station, ParcelID: cerr.parcelID, By: user,
		Audit: &event.Audit{Action: "custody", Name: string(cerr.actionType), Outcome: "rejected", Reason: cerr.code}}
	rec := store.ActionRecord{Key: req.Key, Request: requestHash(req), Type: cerr.actionType, ParcelID: cerr.parcelID,
		Status: cerr.status, Code: cerr.code, State: cerr.state}
	first, replayed, err := s.opts.Custody.AppendOnce(ctx, ev, rec)
	if err != nil {
		s.opts.Log.Error("refusal not audited", "reason", cerr.code, "err", err)
		return CustodyResult{}, cerr
	}
	if replayed {
		return replay(first, rec.Request)
	}
	return CustodyResult{}, cerr
}

func (s *Server) signature(w http.ResponseWriter, r *http.Request, _ *session) {
	p, err := s.lookup(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNoParcel) {
		jsonErrorCode(w, http.StatusNotFound, store.RefusedUnknownParcel, "no parcel with that id or tracking number on this box")
		return
	}
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if p.Proof == nil || p.Proof.Method != event.ProofSignature {
		jsonErrorCode(w, http.StatusNotFound, "no_signature", "the parcel was not handed over with a signature")
		return
	}
	writeJSON(w, map[string]any{"parcel_id": p.ID, "signature": p.Proof.Signature, "sha256": p.Proof.SHA256, "size": p.Proof.Size,
		"recipient": p.Recipient, "proxy": p.Proxy, "delivered": p.Closed, "by": p.By})
}

func (s *Server) setMode(w http.ResponseWriter, r *http.Request, sess *session) {
	var req struct {
		Station string `json:"station"`
		Mode    string `json:"mode"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		jsonErrorCode(w, http.StatusBadRequest, "malformed", `malformed request: the body must be {"station": "…", "mode": "…"}`)
		return
	}
	if !s.hasStation(req.Station) {
		jsonErrorCode(w, http.StatusBadRequest, "unknown_station", "unknown station "+strconv.Quote(req.Station))
		return
	}
	if !slices.Contains(barcode.Actions, req.Mode) {
		jsonErrorCode(w, http.StatusBadRequest, "unknown_mode", "unknown scan mode "+strconv.Quote(req.Mode)+" (receive, move, out_for_delivery, deliver, return)")
		return
	}
	if err := s.opts.Actions.SetMode(req.Station, req.Mode); err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", err.Error())
		return
	}
	s.opts.Log.Info("scan mode set on the page", "user", sess.user, "station", req.Station, "mode", req.Mode)
	writeJSON(w, map[string]bool{"ok": true})
}

// report writes the parcels received or closed on one day (box time) as
// CSV, streaming. Every download is audited.
func (s *Server) report(w http.ResponseWriter, r *http.Request, sess *session) {
	now := s.opts.Now()
	day := r.URL.Query().Get("day")
	if day == "" {
		day = now.Format(time.DateOnly)
	}
	from, err := time.ParseInLocation(time.DateOnly, day, now.Location())
	if err != nil {
		jsonErrorCode(w, http.StatusBadRequest, "bad_day", "day must be a date such as 2026-11-29")
		return
	}
	to := from.AddDate(0, 0, 1)
	ev := event.Event{Appliance: s.opts.Appliance, Site: s.opts.Site, Type: event.TypeAudit, Time: now, By: sess.user,
		Audit: &event.Audit{Action: "report", Name: "daily_log " + day, Outcome: "applied"}}
	if _, err := s.opts.Custody.Append(r.Context(), ev); err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", "the download cannot be audited, so it is refused: "+err.Error())
		return
	}
	s.opts.Log.Info("daily log downloaded", "user", sess.user, "day", day)
	cw := csv.NewWriter(w)
	write := func(rec []string) {
		for i, v := range rec {
			rec[i] = cell(v)
		}
		cw.Write(rec)
	}
	// The headers go out with the first row read, or at the end: a day
	// that cannot be read at all is answered with an error, not an empty
	// file.
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Disposition", `attachment; filename="mailroom-`+s.opts.Appliance+"-"+day+`.csv"`)
		write([]string{"time", "event", "parcel_id", "carrier", "tracking", "recipient", "location", "round", "by", "proof", "proxy", "reason", "to"})
	}
	in := func(t time.Time) bool { return !t.Before(from) && t.Before(to) }
	err = s.opts.Custody.EachParcelOf(r.Context(), from, to, func(p store.Parcel) error {
		start()
		if in(p.Received) {
			write([]string{p.Received.In(now.Location()).Format(time.RFC3339), "received", p.ID, p.Carrier, p.Tracking,
				p.Recipient, "", "", "", "", "", "", ""})
		}
		if !p.Closed.IsZero() && in(p.Closed) {
			write([]string{p.Closed.In(now.Location()).Format(time.RFC3339), string(p.State), p.ID, p.Carrier, p.Tracking,
				p.Recipient, p.Location, p.Round, p.By, proofMethodOf(p.Proof), p.Proxy, p.Reason, p.To})
		}
		cw.Flush()
		return cw.Error()
	})
	if err != nil && !started {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", "the day's parcels cannot be read: "+err.Error())
		return
	}
	start()
	cw.Flush()
	if err != nil {
		// The rows sent so far are out: the file ends early. The log says so.
		s.opts.Log.Error("daily log cut short", "err", err)
	}
}

// modes returns each station's scan mode for the status.
func (s *Server) modes() map[string]station.ModeView {
	if s.opts.Actions == nil {
		return nil
	}
	return s.opts.Actions.Modes()
}

// cell keeps a CSV value from being read as a formula by a spreadsheet: a
// code scanned off a parcel is outside data.
func cell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// incomplete returns the code and message of a request that lacks a field
// its action needs (the proof of a hand-over aside: that is checked
// against the parcel), or "".
func incomplete(req *CustodyRequest) (code, msg string) {
	switch req.Action {
	case "assign":
		if req.Person == "" {
			return "person_required", "the directory id of the person is required"
		}
	case "move":
		if req.Location == "" {
			return "location_required", "a location is required"
		}
	case "out_for_delivery":
		if req.Round == "" {
			return "round_required", "a round is required"
		}
	case "hold", "return":
		if req.Reason == "" {
			return "reason_required", "a reason is required"
		}
	case "forward":
		if req.Reason == "" {
			return "reason_required", "a reason is required"
		}
		if req.To == "" {
			return "to_required", "where the parcel goes (to) is required"
		}
	}
	return "", ""
}

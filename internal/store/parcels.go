package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
)

// State is where a parcel is in its life on the box.
type State string

// Parcel states. delivered, returned and forwarded are closed: no custody
// event changes a closed parcel.
const (
	StateReceived       State = "received"
	StateStored         State = "stored"
	StateOutForDelivery State = "out_for_delivery"
	StateDelivered      State = "delivered"
	StateHeld           State = "held"
	StateReturned       State = "returned"
	StateForwarded      State = "forwarded"
)

// Closed reports whether the parcel has left the mailroom's hands.
func (s State) Closed() bool {
	return s == StateDelivered || s == StateReturned || s == StateForwarded
}

// Parcel is a parcel's state on the box, kept in step with its events in
// the transaction of each event.
type Parcel struct {
	// ID is the id of the parcel's parcel.received event.
	ID       string    `json:"id"`
	State    State     `json:"state"`
	Carrier  string    `json:"carrier,omitempty"`
	Tracking string    `json:"tracking,omitempty"`
	Station  string    `json:"station,omitempty"`
	Received time.Time `json:"received"`
	// Updated is when the last event about it happened; Closed when it
	// was delivered, returned or forwarded (zero while open).
	Updated   time.Time `json:"updated"`
	Closed    time.Time `json:"closed,omitzero"`
	Recipient string    `json:"recipient,omitempty"`
	// Person is the directory id of the person it is for, Match how that
	// person was found (recipient_match); Match "none" puts an open parcel
	// on the needs-recipient list. Both are empty for parcels received
	// while the box had no directory.
	Person string `json:"person,omitempty"`
	Match  string `json:"match,omitempty"`
	// Hint is the name the parcel's 2D label prints, kept while no person
	// is found for it, for the clerk who finds one.
	Hint     string `json:"hint,omitempty"`
	Location string `json:"location,omitempty"`
	Round    string `json:"round,omitempty"`
	// By is who did the last thing to it; LastEvent is that event's id.
	By        string `json:"by,omitempty"`
	LastEvent string `json:"last_event"`
	// Proof, Proxy, Reason and To are those of the closing or holding
	// event.
	Proof  *event.Proof `json:"proof,omitempty"`
	Proxy  string       `json:"proxy,omitempty"`
	Reason string       `json:"reason,omitempty"`
	To     string       `json:"to,omitempty"`
	// PickupPIN is the PIN the recipient gives to collect it, if the site
	// uses PINs.
	PickupPIN string `json:"pickup_pin,omitempty"`
}

// Refusal codes of a custody event the parcel's state does not allow.
const (
	RefusedUnknownParcel = "unknown_parcel"
	RefusedClosed        = "parcel_closed"
	RefusedHeld          = "parcel_held"
	// RefusedNotDelegate is a hand-over to a badge whose holder is neither
	// the recipient nor one of their delegates (refused by the station or
	// the page, never by the store).
	RefusedNotDelegate = "not_a_delegate"
	// RefusedNoDirectory is a hand-over on a badge of a parcel for a person
	// of the directory while the directory cannot be read: the badge
	// cannot be checked (another proof still works on the page).
	RefusedNoDirectory = "directory_unavailable"
	// RefusedAssigned is a conditional recipient (AppendUnassigned) for a
	// parcel that has a person by the time it would be committed.
	RefusedAssigned = "recipient_known"
)

// RefusedError is a custody event that was not committed because the
// parcel's state does not allow it. Nothing was changed.
type RefusedError struct {
	// Code is one of the Refused constants.
	Code     string
	ParcelID string
	// State is the parcel's state (empty for an unknown parcel).
	State State
}

func (e *RefusedError) Error() string {
	switch e.Code {
	case RefusedUnknownParcel:
		return fmt.Sprintf("parcel %s is not known on this box", e.ParcelID)
	case RefusedClosed:
		return fmt.Sprintf("parcel %s is already %s", e.ParcelID, e.State)
	case RefusedHeld:
		return fmt.Sprintf("parcel %s is held: release it (move it to a location) before it goes out", e.ParcelID)
	case RefusedNotDelegate:
		return fmt.Sprintf("parcel %s: the badge's holder may not collect for its recipient", e.ParcelID)
	case RefusedNoDirectory:
		return fmt.Sprintf("parcel %s: the recipient directory cannot be read, so the badge cannot be checked", e.ParcelID)
	case RefusedAssigned:
		return fmt.Sprintf("parcel %s has its recipient already", e.ParcelID)
	}
	return fmt.Sprintf("parcel %s: %s", e.ParcelID, e.Code)
}

// ErrNoParcel is returned by FindParcel and ParcelByID for a code or id
// that names no parcel on the box.
var ErrNoParcel = errors.New("no parcel with that code on this box")

// parcelSealID binds a sealed parcel row to its id.
func parcelSealID(id string) string { return "parcel/" + id }

// tag is what the lookup columns hold for a code: the code in upper case
// (codes match in any letter case, as the classifier's rules do), or its
// keyed hash when payloads are sealed.
func (o *Outbox) tag(v string) string {
	v = strings.ToUpper(strings.TrimSpace(v))
	if v == "" || o.opts.Seal == nil {
		return v
	}
	return o.opts.Seal.Tag(v)
}

// sealParcel encodes a parcel row's detail, sealed when encryption is on.
func (o *Outbox) sealParcel(p *Parcel) ([]byte, driver.Value, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, err
	}
	if o.opts.Seal == nil {
		return b, nil, nil
	}
	return o.opts.Seal.Seal(parcelSealID(p.ID), b), o.opts.Seal.Current(), nil
}

// openParcel decodes a parcel row's detail.
func (o *Outbox) openParcel(id string, detail []byte, keyID sql.NullString) (Parcel, error) {
	if keyID.Valid {
		if o.opts.Seal == nil {
			return Parcel{}, fmt.Errorf("parcel %s is sealed with key %q but no storage.encryption_key_file is configured", id, keyID.String)
		}
		var err error
		if detail, err = o.opts.Seal.Open(keyID.String, parcelSealID(id), detail); err != nil {
			return Parcel{}, fmt.Errorf("parcel %s: %w", id, err)
		}
	}
	var p Parcel
	if err := json.Unmarshal(detail, &p); err != nil {
		return Parcel{}, fmt.Errorf("parcel %s: %w", id, err)
	}
	return p, nil
}

// parcelEvent reports whether an event changes a parcel's state.
func parcelEvent(t event.Type) bool {
	return t == event.TypeParcelReceived || t == event.TypeParcelUpdated || t.Custody()
}

const parcelRow = "SELECT detail, key_id FROM parcels WHERE id = ?"

// checkParcel reads the parcel an event is about and says whether its
// state allows the event (writer only). It returns the parcel to update,
// nil for a parcel.received or an event about a parcel that is not kept
// and needs none (a parcel.updated of a pruned parcel).
func (o *Outbox) checkParcel(ev *event.Event) (*Parcel, error) {
	if ev.Type == event.TypeParcelReceived {
		return nil, nil
	}
	var detail []byte
	var keyID sql.NullString
	found, err := o.wc.queryRow(parcelRow, []driver.Value{ev.ParcelID}, &detail, &keyID)
	if err != nil {
		return nil, err
	}
	if !found {
		if ev.Type == event.TypeParcelUpdated {
			return nil, nil
		}
		return nil, &RefusedError{Code: RefusedUnknownParcel, ParcelID: ev.ParcelID}
	}
	p, err := o.openParcel(ev.ParcelID, detail, keyID)
	if err != nil {
		return nil, err
	}
	if p.State.Closed() {
		return nil, &RefusedError{Code: RefusedClosed, ParcelID: p.ID, State: p.State}
	}
	if ev.Type == event.TypeParcelOutForDelivery && p.State == StateHeld {
		return nil, &RefusedError{Code: RefusedHeld, ParcelID: p.ID, State: p.State}
	}
	return &p, nil
}

// applyParcel writes the state an event leaves its parcel in (writer
// only); p is what checkParcel returned.
func (o *Outbox) applyParcel(ev *event.Event, p *Parcel) error {
	if ev.Type == event.TypeParcelReceived {
		np := Parcel{ID: ev.ID, State: StateReceived, Station: ev.Station, Received: ev.Time, Updated: ev.Time,
			Recipient: ev.Recipient, Person: ev.RecipientID, Match: ev.RecipientMatch, Location: ev.Location, By: ev.By,
			LastEvent: ev.ID, PickupPIN: ev.PickupPIN}
		if ev.Parcel != nil {
			np.Carrier, np.Tracking = ev.Parcel.Carrier, ev.Parcel.Tracking
			if l := ev.Parcel.Label; l != nil && l.ShipTo != nil && np.Match == directory.MatchNone {
				np.Hint = l.ShipTo.Name
			}
		}
		if np.By == "" {
			np.By = ev.Device
		}
		if np.Location != "" {
			np.State = StateStored
		}
		return o.writeParcel(&np, true)
	}
	if p == nil {
		return nil
	}
	if ev.Time.After(p.Updated) {
		p.Updated = ev.Time
	}
	p.LastEvent = ev.ID
	if ev.By != "" {
		p.By = ev.By
	} else if ev.Device != "" {
		p.By = ev.Device
	}
	switch ev.Type {
	case event.TypeParcelUpdated:
		if ev.Recipient != "" {
			p.Recipient = ev.Recipient
		}
		if ev.RecipientMatch != "" {
			p.Person, p.Match = ev.RecipientID, ev.RecipientMatch
			if p.Match != directory.MatchNone {
				p.Hint = ""
			}
		}
		if ev.Location != "" {
			p.Location = ev.Location
			if p.State == StateReceived {
				p.State = StateStored
			}
		}
	case event.TypeParcelMoved:
		// A move puts the parcel on a shelf: a held parcel is released.
		p.State, p.Location, p.Round, p.Reason = StateStored, ev.Location, "", ""
	case event.TypeParcelOutForDelivery:
		p.State, p.Round, p.Location = StateOutForDelivery, ev.Round, ""
	case event.TypeParcelDelivered:
		p.State, p.Proof, p.Proxy = StateDelivered, ev.Proof, ev.Proxy
		if ev.Recipient != "" {
			p.Recipient = ev.Recipient
		}
		if ev.RecipientID != "" {
			p.Person, p.Match = ev.RecipientID, ev.RecipientMatch
		}
	case event.TypeParcelHeld:
		p.State, p.Reason = StateHeld, ev.Reason
		if ev.Location != "" {
			p.Location = ev.Location
		}
	case event.TypeParcelReturned:
		p.State, p.Reason = StateReturned, ev.Reason
	case event.TypeParcelForwarded:
		p.State, p.Reason, p.To = StateForwarded, ev.Reason, ev.To
	}
	if p.State.Closed() {
		p.Closed = ev.Time
	}
	return o.writeParcel(p, false)
}

// writeParcel inserts or replaces a parcel row (writer only).
func (o *Outbox) writeParcel(p *Parcel, insert bool) error {
	detail, keyID, err := o.sealParcel(p)
	if err != nil {
		return err
	}
	var closed driver.Value
	if !p.Closed.IsZero() {
		closed = p.Closed.UnixMilli()
	}
	needs := int64(0)
	if p.Match == directory.MatchNone {
		needs = 1
	}
	if insert {
		// A parcel.received carried over by a salvage or seen again by a
		// rebuild is kept as it is.
		_, err = o.wc.exec(`INSERT OR IGNORE INTO parcels(id, state, code_tag, recipient_tag, location_tag, received_at, updated_at, closed_at,
			detail, key_id, person_tag, needs_recipient) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`, p.ID, string(p.State), o.tag(p.Tracking),
			o.tag(p.Recipient), o.tag(p.Location), p.Received.UnixMilli(), p.Updated.UnixMilli(), closed, detail, keyID, o.tag(p.Person), needs)
		return err
	}
	_, err = o.wc.exec(`UPDATE parcels SET state = ?, recipient_tag = ?, location_tag = ?, updated_at = ?, closed_at = ?, detail = ?, key_id = ?,
		person_tag = ?, needs_recipient = ? WHERE id = ?`, string(p.State), o.tag(p.Recipient), o.tag(p.Location), p.Updated.UnixMilli(), closed,
		detail, keyID, o.tag(p.Person), needs, p.ID)
	return err
}

// ActionKeyLifetime is how long an action key is remembered: a page that
// retries an action within it gets the first answer, not a second event.
const ActionKeyLifetime = 30 * 24 * time.Hour

// ActionRecord is what the box answered to an action sent with a key: the
// event committed (the action's, or the audit event of its refusal) and
// the answer, so that the same key again gets the same answer.
type ActionRecord struct {
	Key string
	// Request is a hash of the request: the same key with another request
	// is a reuse, not a retry.
	Request  string
	Type     event.Type
	ParcelID string
	// Status is 200, or the HTTP status of the refusal; Code and State are
	// the refusal's.
	Status  int
	Code    string
	State   string
	EventID string
	Epoch   string
	Seq     int64
}

const actionKeyRow = `SELECT request, type, parcel_id, status, code, state, event_id, epoch, seq FROM action_keys WHERE key = ?`

// actionKey reads an action record (writer only).
func (o *Outbox) actionKey(key string) (ActionRecord, bool, error) {
	rec := ActionRecord{Key: key}
	var typ string
	var status int64
	found, err := o.wc.queryRow(actionKeyRow, []driver.Value{key}, &rec.Request, &typ, &rec.ParcelID, &status, &rec.Code, &rec.State,
		&rec.EventID, &rec.Epoch, &rec.Seq)
	rec.Type, rec.Status = event.Type(typ), int(status)
	return rec, found, err
}

// ActionKey returns what was answered to an action key, if it was used.
func (o *Outbox) ActionKey(ctx context.Context, key string) (ActionRecord, bool, error) {
	rec := ActionRecord{Key: key}
	var typ string
	err := o.rdb.QueryRowContext(ctx, actionKeyRow, key).Scan(&rec.Request, &typ, &rec.ParcelID, &rec.Status, &rec.Code, &rec.State,
		&rec.EventID, &rec.Epoch, &rec.Seq)
	rec.Type = event.Type(typ)
	if errors.Is(err, sql.ErrNoRows) {
		return ActionRecord{}, false, nil
	}
	if err != nil {
		return ActionRecord{}, false, fmt.Errorf("read action key: %w", err)
	}
	return rec, true, nil
}

// AppendOnce commits an event and records rec under rec.Key in the same
// transaction, unless the key was recorded before: then nothing is
// committed and the first record is returned with replayed true. A page
// that sends an action again after a lost answer gets the first answer.
// A custody event the parcel's state does not allow fails with a
// *RefusedError and records nothing.
func (o *Outbox) AppendOnce(ctx context.Context, ev event.Event, rec ActionRecord) (committed ActionRecord, replayed bool, err error) {
	if rec.Key == "" || len(rec.Key) > 512 {
		return ActionRecord{}, false, errors.New("commit event: an action key is required")
	}
	res, err := o.submit(ctx, request{kind: opAppend, ev: ev, action: rec})
	if err != nil {
		if errors.Is(err, ErrFull) || isRefusal(err) {
			o.refused.Add(1)
		}
		return ActionRecord{}, false, fmt.Errorf("commit %s event: %w", ev.Type, err)
	}
	if res.n == 1 {
		return res.action, true, nil
	}
	rec.EventID, rec.Epoch, rec.Seq = res.ev.ID, res.ev.Epoch, res.ev.Seq
	return rec, false, nil
}

// ParcelByID returns the state of the parcel received with the given
// event id.
func (o *Outbox) ParcelByID(ctx context.Context, id string) (Parcel, error) {
	var detail []byte
	var keyID sql.NullString
	err := o.rdb.QueryRowContext(ctx, parcelRow, id).Scan(&detail, &keyID)
	if errors.Is(err, sql.ErrNoRows) {
		return Parcel{}, ErrNoParcel
	}
	if err != nil {
		return Parcel{}, fmt.Errorf("read parcel: %w", err)
	}
	return o.openParcel(id, detail, keyID)
}

// FindParcel returns the parcel a scanned code names: the parcel id
// printed on its receiving label, or the carrier tracking number it was
// received with (the open parcel first, then the newest).
func (o *Outbox) FindParcel(ctx context.Context, code string) (Parcel, error) {
	if code == "" {
		return Parcel{}, ErrNoParcel
	}
	p, err := o.ParcelByID(ctx, strings.ToLower(code))
	if !errors.Is(err, ErrNoParcel) {
		return p, err
	}
	var id string
	var detail []byte
	var keyID sql.NullString
	err = o.rdb.QueryRowContext(ctx, `SELECT id, detail, key_id FROM parcels WHERE code_tag = ?
		ORDER BY closed_at IS NULL DESC, received_at DESC LIMIT 1`, o.tag(code)).Scan(&id, &detail, &keyID)
	if errors.Is(err, sql.ErrNoRows) {
		return Parcel{}, ErrNoParcel
	}
	if err != nil {
		return Parcel{}, fmt.Errorf("find parcel: %w", err)
	}
	return o.openParcel(id, detail, keyID)
}

// OpenParcelsOfPerson returns up to limit open parcels of a directory
// person, oldest first.
func (o *Outbox) OpenParcelsOfPerson(ctx context.Context, id string, limit int) ([]Parcel, error) {
	return o.parcels(ctx, `SELECT id, detail, key_id FROM parcels WHERE person_tag = ? AND closed_at IS NULL
		ORDER BY received_at LIMIT ?`, o.tag(id), limit)
}

// NeedsRecipient returns up to limit open parcels that no directory person
// was found for, oldest first, and how many there are.
func (o *Outbox) NeedsRecipient(ctx context.Context, limit int) ([]Parcel, int64, error) {
	var n int64
	if err := o.rdb.QueryRowContext(ctx, "SELECT count(*) FROM parcels WHERE needs_recipient = 1 AND closed_at IS NULL").Scan(&n); err != nil {
		return nil, 0, fmt.Errorf("count parcels that need a recipient: %w", err)
	}
	ps, err := o.parcels(ctx, `SELECT id, detail, key_id FROM parcels WHERE needs_recipient = 1 AND closed_at IS NULL
		ORDER BY received_at LIMIT ?`, limit)
	return ps, n, err
}

// OpenParcelsOf returns up to limit open parcels of a recipient code,
// oldest first.
func (o *Outbox) OpenParcelsOf(ctx context.Context, recipient string, limit int) ([]Parcel, error) {
	return o.parcels(ctx, `SELECT id, detail, key_id FROM parcels WHERE recipient_tag = ? AND closed_at IS NULL
		ORDER BY received_at LIMIT ?`, o.tag(recipient), limit)
}

func (o *Outbox) parcels(ctx context.Context, q string, args ...any) ([]Parcel, error) {
	rows, err := o.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read parcels: %w", err)
	}
	defer rows.Close()
	var out []Parcel
	for rows.Next() {
		var id string
		var detail []byte
		var keyID sql.NullString
		if err := rows.Scan(&id, &detail, &keyID); err != nil {
			return nil, fmt.Errorf("read parcels: %w", err)
		}
		p, err := o.openParcel(id, detail, keyID)
		if err != nil {
			return nil, fmt.Errorf("read parcels: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read parcels: %w", err)
	}
	return out, nil
}

// Group is the open parcels of one recipient or one location.
type Group struct {
	// Key is the recipient or location code ("" for parcels without one).
	// A recipient group of a directory person holds all the person's
	// parcels, whatever their recipient codes; Key is then the code of the
	// oldest, perhaps "" (a parcel matched by name keeps none).
	Key string
	// Person is the directory id of a recipient group's person, "" for a
	// group by code alone.
	Person  string
	Count   int64
	Overdue int64
	// Oldest is when the longest-waiting parcel of the group was received.
	Oldest time.Time
}

// Waiting is what waits in the mailroom.
type Waiting struct {
	Open, Overdue int64
	// ByRecipient and ByLocation are the groups whose parcels waited
	// longest, at most the limit given to WaitingParcels each.
	ByRecipient []Group
	ByLocation  []Group
}

// OpenCounts returns how many parcels are open, and how many of them were
// received before overdueBefore.
func (o *Outbox) OpenCounts(ctx context.Context, overdueBefore time.Time) (open, overdue int64, err error) {
	err = o.rdb.QueryRowContext(ctx, "SELECT count(*), COALESCE(sum(received_at < ?), 0) FROM parcels WHERE closed_at IS NULL",
		overdueBefore.UnixMilli()).Scan(&open, &overdue)
	if err != nil {
		return 0, 0, fmt.Errorf("count open parcels: %w", err)
	}
	return open, overdue, nil
}

// WaitingParcels summarises the open parcels by recipient and by location,
// longest waiting first, at most limit groups each.
func (o *Outbox) WaitingParcels(ctx context.Context, overdueBefore time.Time, limit int) (Waiting, error) {
	var w Waiting
	var err error
	if w.Open, w.Overdue, err = o.OpenCounts(ctx, overdueBefore); err != nil {
		return w, err
	}
	// The parcels of a directory person form one group, those without a
	// person one per recipient code: two queries, each grouping along an
	// index of open parcels, merged by the oldest parcel.
	byRecipient := func(p Parcel) (key, person string) { return p.Recipient, p.Person }
	persons, err := o.waitingGroups(ctx, "parcels_open_person", "person_tag <> ''", "person_tag", byRecipient, overdueBefore, limit)
	if err != nil {
		return w, err
	}
	codes, err := o.waitingGroups(ctx, "parcels_open_waiting", "person_tag = ''", "recipient_tag", byRecipient, overdueBefore, limit)
	if err != nil {
		return w, err
	}
	w.ByRecipient = append(persons, codes...)
	slices.SortStableFunc(w.ByRecipient, func(a, b Group) int { return a.Oldest.Compare(b.Oldest) })
	if limit >= 0 {
		w.ByRecipient = w.ByRecipient[:min(len(w.ByRecipient), limit)]
	}
	byLocation := func(p Parcel) (key, person string) { return p.Location, "" }
	if w.ByLocation, err = o.waitingGroups(ctx, "parcels_open_location", "1", "location_tag", byLocation, overdueBefore, limit); err != nil {
		return w, err
	}
	return w, nil
}

// waitingGroups groups the open parcels that where selects by the column
// by, along index (an index of open parcels that starts with by), the
// longest waiting first, at most limit groups; name gives a group's Key
// and Person from its oldest parcel.
func (o *Outbox) waitingGroups(ctx context.Context, index, where, by string, name func(Parcel) (key, person string),
	overdueBefore time.Time, limit int) ([]Group, error) {
	// A bare column next to min() comes from the row of the minimum: the
	// detail of the group's oldest parcel names the group.
	rows, err := o.rdb.QueryContext(ctx, `SELECT id, detail, key_id, min(received_at), count(*), sum(received_at < ?)
		FROM parcels INDEXED BY `+index+` WHERE closed_at IS NULL AND `+where+` GROUP BY `+by+` ORDER BY min(received_at) LIMIT ?`, overdueBefore.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("read waiting parcels: %w", err)
	}
	defer rows.Close()
	var out []Group
	for rows.Next() {
		var id string
		var detail []byte
		var keyID sql.NullString
		var oldest int64
		var gr Group
		if err := rows.Scan(&id, &detail, &keyID, &oldest, &gr.Count, &gr.Overdue); err != nil {
			return nil, fmt.Errorf("read waiting parcels: %w", err)
		}
		p, err := o.openParcel(id, detail, keyID)
		if err != nil {
			return nil, fmt.Errorf("read waiting parcels: %w", err)
		}
		gr.Key, gr.Person = name(p)
		gr.Oldest = time.UnixMilli(oldest)
		out = append(out, gr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read waiting parcels: %w", err)
	}
	return out, nil
}

// EachParcelOf calls fn, in order of receipt, with every parcel received
// or closed in [from, to). It reads a page of rows at a time in short
// queries, so a slow consumer holds no read transaction open, and a day of
// any size costs a page of memory. It stops at the first error fn returns.
func (o *Outbox) EachParcelOf(ctx context.Context, from, to time.Time, fn func(Parcel) error) error {
	const page = 500
	lastAt, lastID := int64(-1<<62), ""
	for {
		ps, err := o.parcelsPage(ctx, from.UnixMilli(), to.UnixMilli(), lastAt, lastID, page)
		if err != nil {
			return fmt.Errorf("read parcels of the day: %w", err)
		}
		for _, p := range ps {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(ps) < page {
			return nil
		}
		last := ps[len(ps)-1]
		lastAt, lastID = last.Received.UnixMilli(), last.ID
	}
}

func (o *Outbox) parcelsPage(ctx context.Context, from, to, afterAt int64, afterID string, limit int) ([]Parcel, error) {
	return o.parcels(ctx, `SELECT id, detail, key_id FROM parcels
		WHERE ((received_at >= ?1 AND received_at < ?2) OR (closed_at >= ?1 AND closed_at < ?2)) AND (received_at, id) > (?3, ?4)
		ORDER BY received_at, id LIMIT ?5`, from, to, afterAt, afterID, limit)
}

// StationMode is a scan mode set on the page, kept until it ends so that
// a restart replays it before the scans that followed it.
type StationMode struct {
	Station string
	// Mode is empty to clear it.
	Mode string
	At   time.Time
	// Seq is the last seq committed when the mode was set: scans with a
	// higher seq came after it.
	Seq int64
}

// SetStationMode records a scan mode set on the page at a station, or
// clears it (Mode "").
func (o *Outbox) SetStationMode(ctx context.Context, m StationMode) error {
	if _, err := o.submit(ctx, request{kind: opStationMode, mode: m}); err != nil {
		return fmt.Errorf("record scan mode of %s: %w", m.Station, err)
	}
	return nil
}

// StationModeOf returns the scan mode recorded for a station, if any.
func (o *Outbox) StationModeOf(ctx context.Context, station string) (StationMode, bool, error) {
	m := StationMode{Station: station}
	var at int64
	err := o.rdb.QueryRowContext(ctx, "SELECT mode, at, seq FROM station_modes WHERE station = ?", station).Scan(&m.Mode, &at, &m.Seq)
	if errors.Is(err, sql.ErrNoRows) {
		return StationMode{}, false, nil
	}
	if err != nil {
		return StationMode{}, false, fmt.Errorf("read scan mode of %s: %w", station, err)
	}
	m.At = time.UnixMilli(at)
	return m, true, nil
}

// rebuildParcels recomputes the parcel states from the events in the
// buffer, in commit order, in a transaction of its own, and returns how
// many parcels there are. With keep, the states there are stay and the
// events are applied on top (after a salvage, which carries the states
// over as far as they could be read, and the unsent events); otherwise the
// states are made from the events alone (parcels whose parcel.received
// was pruned are then gone). Only Open calls it, before anything else
// uses the buffer.
func (o *Outbox) rebuildParcels(ctx context.Context, keep bool) (int64, error) {
	req := request{kind: opRebuildParcels}
	if keep {
		req.ids = []string{}
	}
	res, err := o.submit(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("rebuild parcel states: %w", err)
	}
	return res.n, nil
}

// rebuildInWriter runs in the writer's transaction: it reads the events on
// the reader connection, streaming (the transaction is the only one of its
// batch when Open runs it, so the reader sees everything committed).
func (o *Outbox) rebuildInWriter(keep bool) (int64, error) {
	if !keep {
		if _, err := o.wc.exec("DELETE FROM parcels"); err != nil {
			return 0, err
		}
	} else if err := o.resealParcels(true); err != nil {
		// The rows a salvage carried over get the columns the detail
		// implies (an older schema's rows have no person columns).
		return 0, err
	}
	rows, err := o.rdb.Query(`SELECT id, payload, key_id FROM events WHERE type IN
		('parcel.received','parcel.updated','parcel.moved','parcel.out_for_delivery','parcel.delivered','parcel.held','parcel.returned','parcel.forwarded')
		ORDER BY pos`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var payload []byte
		var keyID sql.NullString
		if err := rows.Scan(&id, &payload, &keyID); err != nil {
			return 0, err
		}
		if payload, err = o.open(keyID, id, payload); err != nil {
			return 0, err
		}
		ev, err := event.Decode(payload)
		if err != nil {
			return 0, err
		}
		p, err := o.checkParcel(&ev)
		var refused *RefusedError
		if errors.As(err, &refused) {
			continue // its parcel.received was pruned, or the state has it already
		}
		if err != nil {
			return 0, err
		}
		if err := o.applyParcel(&ev, p); err != nil {
			return 0, err
		}
		// The photos the events name, whose files are still there, wait
		// for their upload again (a salvage may not have carried their
		// rows over; a photo uploaded twice is the same bytes).
		for _, ph := range ev.Photos {
			sha := ph.SHA256
			if len(sha) != 64 {
				continue
			}
			if _, err := os.Stat(filepath.Join(BlobDir(o.opts.Path), sha[:2], sha)); err != nil {
				continue
			}
			if _, err := o.wc.exec("INSERT OR IGNORE INTO blobs(sha256, size, content_type, kind, stored_at) VALUES (?,?,?,?,?)",
				sha, ph.Size, ph.ContentType, ph.Kind, ev.Time.UnixMilli()); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var n int64
	_, err = o.wc.queryRow("SELECT count(*) FROM parcels", nil, &n)
	return n, err
}

// resealParcels seals every parcel row with the current key and computes
// its lookup tags again, after the key changed (writer only). With
// salvaged, a row that cannot be read (carried over from a damaged file)
// is dropped with a warning instead of stopping the start: the events
// applied on top make its parcel again if they are there.
func (o *Outbox) resealParcels(salvaged bool) error {
	rows, err := o.rdb.Query("SELECT id, detail, key_id FROM parcels")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var detail []byte
		var keyID sql.NullString
		if err := rows.Scan(&id, &detail, &keyID); err != nil {
			return err
		}
		p, err := o.openParcel(id, detail, keyID)
		if err != nil && salvaged {
			o.log.Warn("a salvaged parcel state cannot be read; dropped", "parcel", id, "err", err)
			if _, err := o.wc.exec("DELETE FROM parcels WHERE id = ?", id); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := o.writeParcel(&p, false); err != nil {
			return err
		}
		if _, err := o.wc.exec("UPDATE parcels SET code_tag = ? WHERE id = ?", o.tag(p.Tracking), p.ID); err != nil {
			return err
		}
	}
	return rows.Err()
}

// parcelKey names how the parcel rows are sealed: the current key's id,
// or "" in clear.
func (o *Outbox) parcelKey() string {
	if o.opts.Seal == nil {
		return ""
	}
	return o.opts.Seal.Current()
}

// checkDirectoryKeys makes sure the directory can be opened, as checkKeys
// does for events.
func (o *Outbox) checkDirectoryKeys(ctx context.Context) error {
	return o.checkTableKeys(ctx, "directory", "entry", "the recipient directory", func(key, id string, b []byte) error {
		if o.opts.Seal == nil {
			return fmt.Errorf("entry %s is sealed with key %q but no storage.encryption_key_file is configured", id, key)
		}
		_, err := o.opts.Seal.Open(key, personSealID(id), b)
		return err
	})
}

// resealDirectory seals every directory entry with the current key, or
// opens them all when encryption was turned off (writer only).
func (o *Outbox) resealDirectory() error {
	entries, _, err := readDirectory(context.Background(), o.rdb, o.opts.Seal)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		var keyID driver.Value
		if o.opts.Seal != nil {
			b, keyID = o.opts.Seal.Seal(personSealID(e.ID), b), o.opts.Seal.Current()
		}
		if _, err := o.wc.exec("UPDATE directory SET entry = ?, key_id = ? WHERE id = ?", b, keyID, e.ID); err != nil {
			return err
		}
	}
	return nil
}

// checkParcelKeys makes sure the parcel states can be opened, as
// checkKeys does for events.
func (o *Outbox) checkParcelKeys(ctx context.Context) error {
	return o.checkTableKeys(ctx, "parcels", "detail", "parcel states", func(key, id string, b []byte) error {
		_, err := o.openParcel(id, b, sql.NullString{String: key, Valid: true})
		return err
	})
}

// checkTableKeys opens one sealed row of a table per key id in use, so
// that a missing or wrong key stops the start with a clear error instead
// of surprising a reader later.
func (o *Outbox) checkTableKeys(ctx context.Context, table, col, what string, open func(key, id string, b []byte) error) error {
	rows, err := o.wdb.QueryContext(ctx, "SELECT key_id, min(id) FROM "+table+" WHERE key_id IS NOT NULL GROUP BY key_id")
	if err != nil {
		return fmt.Errorf("open buffer: check keys: %w", err)
	}
	type row struct{ key, id string }
	var check []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.key, &r.id); err != nil {
			rows.Close()
			return fmt.Errorf("open buffer: check keys: %w", err)
		}
		check = append(check, r)
	}
	rows.Close()
	for _, r := range check {
		var b []byte
		if err := o.wdb.QueryRowContext(ctx, "SELECT "+col+" FROM "+table+" WHERE id = ?", r.id).Scan(&b); err != nil {
			return fmt.Errorf("open buffer: check key %q: %w", r.key, err)
		}
		if err := open(r.key, r.id, b); err != nil {
			return fmt.Errorf("open buffer %s: %s sealed with key %q cannot be opened: %w", o.opts.Path, what, r.key, err)
		}
	}
	return nil
}

package station

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Scan modes of a station. A station is in ModeReceive unless an action
// code (or the page) switched it to another; it falls back to
// ModeReceive after Config.ModeIdle without a scan.
const (
	ModeReceive        = "receive"
	ModeMove           = "move"
	ModeOutForDelivery = "out_for_delivery"
	ModeDeliver        = "deliver"
	ModeReturn         = "return"
)

// Notice codes: what a custody scan did, for the page to say in the
// clerk's language. They name no person.
const (
	NoticeMode            = "mode"             // the scan mode changed
	NoticeDone            = "done"             // a custody event was committed
	NoticeUnknownParcel   = "unknown_parcel"   // no parcel with that code: receive it first
	NoticeClosed          = "parcel_closed"    // already delivered, returned or forwarded
	NoticeHeld            = "parcel_held"      // a held parcel cannot go out
	NoticeBadgeRequired   = "badge_required"   // deliver mode: scan the recipient's badge first
	NoticeAwaitingProof   = "awaiting_proof"   // deliver mode: the parcel waits on the page for a signature or PIN
	NoticeLocationNeeded  = "location_needed"  // move mode: scan the location for the parcels scanned
	NoticeNotMoved        = "not_moved"        // move mode ended before a location was scanned
	NoticeIgnored         = "code_not_in_mode" // a code that means nothing in this mode
	NoticeAlreadyReceived = "already_received" // receive mode: a receiving label of a parcel on the box
)

// isParcelID reports whether a code has the shape of a parcel id (the
// UUID printed on receiving labels), in lower case.
func isParcelID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// Notice is one thing a custody scan did, shown on the page.
type Notice struct {
	Time time.Time `json:"time"`
	// Code is one of the Notice constants; Mode the mode it happened in.
	Code string `json:"code"`
	Mode string `json:"mode"`
	// Type is the event committed (NoticeDone) or refused.
	Type     event.Type `json:"type,omitempty"`
	ParcelID string     `json:"parcel_id,omitempty"`
	// State is the parcel's state of a refusal (NoticeClosed).
	State string `json:"state,omitempty"`
	// Location is where a parcel was moved (a location code; no person).
	Location string `json:"location,omitempty"`
}

// noticeLimit is how many notices a station keeps for the page.
const noticeLimit = 20

// Awaiting is a parcel scanned in deliver mode that waits on the page for a
// signature or PIN, because the site does not take a badge as proof.
type Awaiting struct {
	ParcelID  string    `json:"parcel_id"`
	Tracking  string    `json:"tracking"`
	Carrier   string    `json:"carrier"`
	Recipient string    `json:"recipient"`
	Badge     string    `json:"badge"`
	Scanned   time.Time `json:"scanned"`
}

// ModeView is a station's scan mode as the page shows it.
type ModeView struct {
	Mode string `json:"mode"`
	// Since is the last scan in the mode; the mode ends ModeIdle later.
	Since    time.Time  `json:"since,omitzero"`
	Ends     time.Time  `json:"ends,omitzero"`
	Location string     `json:"location,omitempty"`
	Round    string     `json:"round,omitempty"`
	Badge    bool       `json:"badge"` // a recipient's badge is scanned (deliver)
	Waiting  int        `json:"waiting_for_location,omitempty"`
	Awaiting []Awaiting `json:"awaiting,omitempty"`
	Notices  []Notice   `json:"notices"`
}

// pendingMove is a parcel scanned in move mode before any location.
type pendingMove struct {
	scanID string
	parcel store.Parcel
	device string
	at     time.Time
}

// modeState is the station's scan mode. The scans that set it up (the
// action code, a location, a round, a badge) stay unresolved while it
// lasts, so that after a power cut Recover replays them before the parcel
// scans that followed, and every parcel scan means what it meant.
type modeState struct {
	mode     string
	at       time.Time // the last scan in the mode
	scans    []string  // scan ids resolved when the mode ends
	location string
	round    string
	badge    string
	pending  []pendingMove
	// recorded: the mode was set on the page and is recorded in the
	// store until it ends.
	recorded bool
}

// SetMode switches the station's scan mode from the page; it never blocks.
// An unknown mode is an error.
func (s *Station) SetMode(mode string) error {
	switch mode {
	case ModeReceive, ModeMove, ModeOutForDelivery, ModeDeliver, ModeReturn:
	default:
		return fmt.Errorf("station %s: unknown scan mode %q", s.cfg.Name, mode)
	}
	s.mu.Lock()
	s.queue = append(s.queue, item{mode: mode})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Mode returns the station's scan mode for the page.
func (s *Station) Mode() ModeView {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mode
	v := ModeView{Mode: m.mode, Location: m.location, Round: m.round, Badge: m.badge != "", Waiting: len(m.pending),
		Awaiting: append([]Awaiting(nil), s.awaiting...), Notices: make([]Notice, 0, len(s.notices))}
	if m.mode != ModeReceive {
		v.Since, v.Ends = m.at, m.at.Add(s.cfg.ModeIdle)
	}
	for i := len(s.notices) - 1; i >= 0; i-- {
		v.Notices = append(v.Notices, s.notices[i])
	}
	return v
}

// Handed removes parcels from the awaiting list once they were delivered
// from the page.
func (s *Station) Handed(parcelIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.awaiting[:0]
	for _, a := range s.awaiting {
		drop := false
		for _, id := range parcelIDs {
			drop = drop || a.ParcelID == id
		}
		if !drop {
			kept = append(kept, a)
		}
	}
	s.awaiting = kept
}

func (s *Station) notice(n Notice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notices = append(s.notices, n)
	if len(s.notices) > noticeLimit {
		s.notices = append(s.notices[:0:0], s.notices[len(s.notices)-noticeLimit:]...)
	}
}

// modeExpired reports whether the mode has seen no scan for ModeIdle at
// time at.
func (s *Station) modeExpired(at time.Time) bool {
	return s.mode.mode != ModeReceive && at.Sub(s.mode.at) >= s.cfg.ModeIdle
}

// endMode falls back to receive mode and resolves the scans that set the
// old mode up; parcels still waiting for a location are not moved.
func (s *Station) endMode(ctx context.Context, at time.Time, why string) error {
	return s.endModeFor(ctx, at, why, false)
}

// endModeFor ends the mode; with replaced, a page-set mode follows at once
// and overwrites the record in the same step, so no crash between the two
// finds the station without one.
func (s *Station) endModeFor(ctx context.Context, at time.Time, why string, replaced bool) error {
	m := s.mode
	if m.mode == ModeReceive {
		return nil
	}
	ids := append([]string(nil), m.scans...)
	for _, p := range m.pending {
		ids = append(ids, p.scanID)
	}
	if err := s.store.Resolve(ctx, ids...); err != nil {
		return err
	}
	if m.recorded && !replaced {
		if err := s.store.SetStationMode(ctx, store.StationMode{Station: s.cfg.Name}); err != nil {
			return err
		}
	}
	for _, p := range m.pending {
		s.notice(Notice{Time: at, Code: NoticeNotMoved, Mode: m.mode, ParcelID: p.parcel.ID})
	}
	s.mu.Lock()
	s.mode = modeState{mode: ModeReceive}
	s.mu.Unlock()
	s.log.Info("scan mode ended", "mode", m.mode, "why", why)
	s.notice(Notice{Time: at, Code: NoticeMode, Mode: ModeReceive})
	return nil
}

// switchMode ends the current mode and starts another; scanID is the
// action code's scan, kept unresolved while the new mode lasts ("" when
// the page switched).
func (s *Station) switchMode(ctx context.Context, mode, scanID string, at time.Time) error {
	if err := s.endModeFor(ctx, at, "switched to "+mode, scanID == "" && mode != ModeReceive); err != nil {
		return err
	}
	if mode == ModeReceive {
		if scanID != "" {
			return s.store.Resolve(ctx, scanID)
		}
		return nil
	}
	m := modeState{mode: mode, at: at}
	if scanID != "" {
		m.scans = []string{scanID}
	} else {
		// Set on the page: recorded, so that a restart replays it before
		// the scans that follow.
		// Scans after the last one this station took are in the new mode.
		if err := s.store.SetStationMode(ctx, store.StationMode{Station: s.cfg.Name, Mode: mode, At: at, Seq: s.lastSeq}); err != nil {
			return err
		}
		m.recorded = true
	}
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
	s.log.Info("scan mode", "mode", mode)
	s.notice(Notice{Time: at, Code: NoticeMode, Mode: mode})
	return nil
}

// resumeMode puts the station back into a mode set on the page before a
// restart (it is recorded already).
func (s *Station) resumeMode(ctx context.Context, m store.StationMode) error {
	if err := s.endMode(ctx, m.At, "switched to "+m.Mode); err != nil {
		return err
	}
	s.mu.Lock()
	s.mode = modeState{mode: m.Mode, at: m.At, recorded: true}
	s.mu.Unlock()
	s.log.Info("scan mode set on the page before the restart", "mode", m.Mode)
	return nil
}

// keep records a scan that sets the mode up, replacing the value of the
// one it supersedes; both stay unresolved until the mode ends, so that a
// replay after a restart ends with the same value.
func (s *Station) keep(old *string, value, scanID string) error {
	s.mu.Lock()
	*old = value
	s.mode.scans = append(s.mode.scans, scanID)
	s.mu.Unlock()
	return nil
}

// custody resolves a scan in a mode other than receive.
func (s *Station) custody(ctx context.Context, scan event.Event, res barcode.Result) error {
	at := scan.Time
	s.mu.Lock()
	if at.After(s.mode.at) {
		s.mode.at = at
	}
	mode := s.mode.mode
	s.mu.Unlock()
	ignore := func() error {
		s.notice(Notice{Time: at, Code: NoticeIgnored, Mode: mode})
		s.log.Info("code means nothing in this scan mode; ignored", "mode", mode, "kind", string(res.Kind))
		return s.store.Resolve(ctx, scan.ID)
	}
	switch {
	case res.Kind == barcode.KindLocation:
		if mode != ModeMove {
			return ignore()
		}
		if pending := s.mode.pending; len(pending) > 0 {
			// Parcel first, then its location.
			for i, p := range pending {
				resolves := []string{p.scanID}
				if i == len(pending)-1 {
					// The location is resolved with the last move: after a
					// power cut between the moves, the replay moves the rest.
					resolves = append(resolves, scan.ID)
				}
				ev := s.custodyEvent(event.TypeParcelMoved, scan, p.parcel.ID, resolves)
				ev.ScanID = p.scanID // the parcel's scan; the location's is resolved with it
				ev.Location = res.Tracking
				if err := s.commitCustody(ctx, ev, mode); err != nil {
					return err
				}
				s.mu.Lock()
				s.mode.pending = s.mode.pending[1:]
				s.mu.Unlock()
			}
			return nil
		}
		return s.keep(&s.mode.location, res.Tracking, scan.ID)
	case res.Kind == barcode.KindRound:
		if mode != ModeOutForDelivery {
			return ignore()
		}
		return s.keep(&s.mode.round, res.Tracking, scan.ID)
	case res.Kind == barcode.KindRecipient:
		if mode != ModeDeliver {
			return ignore()
		}
		s.mu.Lock()
		if s.mode.badge != res.Tracking {
			s.awaiting = nil // the next recipient at the counter
		}
		s.mu.Unlock()
		return s.keep(&s.mode.badge, res.Tracking, scan.ID)
	case !res.IsParcel():
		return ignore()
	}

	p, err := s.findParcel(ctx, res)
	if errors.Is(err, store.ErrNoParcel) {
		return s.refuse(ctx, scan, mode, modeEventType(mode), "", &store.RefusedError{Code: store.RefusedUnknownParcel})
	}
	if err != nil {
		return err
	}
	switch mode {
	case ModeMove:
		if s.mode.location == "" {
			s.mu.Lock()
			s.mode.pending = append(s.mode.pending, pendingMove{scanID: scan.ID, parcel: p, device: scan.Device, at: at})
			s.mu.Unlock()
			s.notice(Notice{Time: at, Code: NoticeLocationNeeded, Mode: mode, ParcelID: p.ID})
			return nil
		}
		ev := s.custodyEvent(event.TypeParcelMoved, scan, p.ID, []string{scan.ID})
		ev.Location = s.mode.location
		return s.commitCustody(ctx, ev, mode)
	case ModeOutForDelivery:
		ev := s.custodyEvent(event.TypeParcelOutForDelivery, scan, p.ID, []string{scan.ID})
		ev.Round = s.mode.round
		if ev.Round == "" {
			ev.Round = scan.Device // the scanner's own round
		}
		return s.commitCustody(ctx, ev, mode)
	case ModeReturn:
		ev := s.custodyEvent(event.TypeParcelReturned, scan, p.ID, []string{scan.ID})
		ev.Reason = "return scan"
		return s.commitCustody(ctx, ev, mode)
	case ModeDeliver:
		badge := s.mode.badge
		if badge == "" {
			return s.refuse(ctx, scan, mode, event.TypeParcelDelivered, p.ID, nil)
		}
		if p.State.Closed() {
			return s.refuse(ctx, scan, mode, event.TypeParcelDelivered, p.ID,
				&store.RefusedError{Code: store.RefusedClosed, ParcelID: p.ID, State: p.State})
		}
		person, self, refusal := s.mayCollect(ctx, p, badge)
		if refusal != "" {
			return s.refuse(ctx, scan, mode, event.TypeParcelDelivered, p.ID,
				&store.RefusedError{Code: refusal, ParcelID: p.ID, State: p.State})
		}
		if !s.cfg.BadgeIsProof {
			s.mu.Lock()
			found := false
			for _, a := range s.awaiting {
				found = found || a.ParcelID == p.ID
			}
			if !found {
				s.awaiting = append(s.awaiting, Awaiting{ParcelID: p.ID, Tracking: p.Tracking, Carrier: p.Carrier,
					Recipient: p.Recipient, Badge: badge, Scanned: at})
			}
			s.mu.Unlock()
			s.notice(Notice{Time: at, Code: NoticeAwaitingProof, Mode: mode, ParcelID: p.ID})
			return s.store.Resolve(ctx, scan.ID)
		}
		ev := s.custodyEvent(event.TypeParcelDelivered, scan, p.ID, []string{scan.ID})
		ev.Recipient = p.Recipient
		switch {
		case p.Person != "" && person.ID != "" && !self:
			ev.Proxy = badge // a delegate collects for the recipient
		case p.Recipient == "":
			ev.Recipient = badge
		case !self && !strings.EqualFold(p.Recipient, badge):
			ev.Proxy = badge // someone collects for the recipient
		}
		if p.Person != "" {
			ev.RecipientID, ev.RecipientMatch = p.Person, p.Match
			if !s.cfg.PrivacyID {
				ev.RecipientName = person.Name
			}
		}
		ev.Proof = &event.Proof{Method: event.ProofBadge, Badge: badge}
		return s.commitCustody(ctx, ev, mode)
	}
	return ignore()
}

// findParcel looks a scanned code up: the parcel id printed on the
// receiving label, or the carrier tracking number.
func (s *Station) findParcel(ctx context.Context, res barcode.Result) (store.Parcel, error) {
	p, err := s.store.FindParcel(ctx, res.Tracking)
	if !errors.Is(err, store.ErrNoParcel) {
		return p, err
	}
	// A parcel id (a UUID) read off the label: the classifier upper-cased it.
	if raw := strings.ToLower(strings.TrimSpace(res.Raw)); isParcelID(raw) {
		return s.store.FindParcel(ctx, raw)
	}
	return p, err
}

func (s *Station) custodyEvent(typ event.Type, scan event.Event, parcelID string, resolves []string) event.Event {
	return event.Event{Appliance: s.cfg.Appliance, Site: s.cfg.Site, Type: typ, Time: scan.Time, Device: scan.Device,
		Station: s.cfg.Name, ScanID: scan.ID, ParcelID: parcelID, By: scan.Device, Resolves: resolves}
}

// commitCustody commits a custody event; one the parcel's state does not
// allow is refused with an audit event instead.
func (s *Station) commitCustody(ctx context.Context, ev event.Event, mode string) error {
	committed, err := s.store.Append(ctx, ev)
	var refused *store.RefusedError
	if errors.As(err, &refused) {
		scan := event.Event{ID: ev.ScanID, Time: ev.Time, Device: ev.Device}
		return s.refuseResolving(ctx, scan, mode, ev.Type, ev.ParcelID, refused, ev.Resolves)
	}
	if err != nil {
		return err
	}
	s.log.Info("parcel "+strings.TrimPrefix(string(ev.Type), "parcel."), "parcel", ev.ParcelID, "location", ev.Location,
		"round", ev.Round, "proof", proofMethod(ev.Proof), "id", committed.ID)
	s.notice(Notice{Time: ev.Time, Code: NoticeDone, Mode: mode, Type: ev.Type, ParcelID: ev.ParcelID, Location: ev.Location})
	s.emit(committed)
	return nil
}

func proofMethod(p *event.Proof) string {
	if p == nil {
		return ""
	}
	return p.Method
}

// refuse records a custody scan that changes nothing: an audit event that
// resolves the scan, a notice and a log line without personal data. A nil
// refusal is a delivery without a badge.
func (s *Station) refuse(ctx context.Context, scan event.Event, mode string, typ event.Type, parcelID string, refused *store.RefusedError) error {
	return s.refuseResolving(ctx, scan, mode, typ, parcelID, refused, []string{scan.ID})
}

func (s *Station) refuseResolving(ctx context.Context, scan event.Event, mode string, typ event.Type, parcelID string, refused *store.RefusedError, resolves []string) error {
	code, state := NoticeBadgeRequired, ""
	if refused != nil {
		code, state = refused.Code, string(refused.State)
	}
	ev := event.Event{Appliance: s.cfg.Appliance, Site: s.cfg.Site, Type: event.TypeAudit, Time: scan.Time, Device: scan.Device,
		Station: s.cfg.Name, ScanID: scan.ID, ParcelID: parcelID, By: scan.Device, Resolves: resolves,
		Audit: &event.Audit{Action: "custody", Name: string(typ), Outcome: "rejected", Reason: code}}
	committed, err := s.store.Append(ctx, ev)
	if err != nil {
		return err
	}
	s.log.Warn("custody scan refused", "mode", mode, "type", string(typ), "reason", code, "parcel", parcelID, "state", state)
	s.notice(Notice{Time: scan.Time, Code: code, Mode: mode, Type: typ, ParcelID: parcelID, State: state})
	s.emit(committed)
	return nil
}

// modeEventType is the event a parcel scan commits in a mode.
func modeEventType(mode string) event.Type {
	switch mode {
	case ModeMove:
		return event.TypeParcelMoved
	case ModeOutForDelivery:
		return event.TypeParcelOutForDelivery
	case ModeDeliver:
		return event.TypeParcelDelivered
	case ModeReturn:
		return event.TypeParcelReturned
	}
	return ""
}

// NewPickupPIN returns a random six-digit PIN.
func NewPickupPIN() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return fmt.Sprintf("%06d", n.Int64())
}

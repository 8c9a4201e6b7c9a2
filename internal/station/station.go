// Package station turns committed scans at a receiving station into
// business events: it recognises the carrier and tracking number, takes the
// weight from the station's scale, suppresses duplicates, attaches
// recipient and location codes, and prints a receiving label.
//
// A scan is committed by the intake before the station sees it. The events
// a station writes name the scan they resolve and are committed in the same
// transaction that marks it resolved, so after a power cut Recover finds
// exactly the scans whose work was not finished and resolves them again.
package station

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/label"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Store is what a station needs of the event buffer.
type Store interface {
	Append(ctx context.Context, ev event.Event) (event.Event, error)
	Resolve(ctx context.Context, scanIDs ...string) error
	Unresolved(ctx context.Context, station string) ([]event.Event, error)
	EachRecent(ctx context.Context, limit int, fn func(store.Stored) error, types ...event.Type) error
	QueueLabel(ctx context.Context, station, parcelID string, data []byte, queued time.Time) (int64, error)
	AppendWithLabel(ctx context.Context, ev event.Event, station string, queued time.Time, render func(id string) ([]byte, error)) (event.Event, store.LabelJob, error)
	LabelPrinted(ctx context.Context, jobID int64, ev event.Event) (event.Event, error)
	DropLabel(ctx context.Context, jobID int64) error
	LabelJobs(ctx context.Context, station string) ([]store.LabelJob, error)
	FindParcel(ctx context.Context, code string) (store.Parcel, error)
	SetStationMode(ctx context.Context, m store.StationMode) error
	StationModeOf(ctx context.Context, station string) (store.StationMode, bool, error)
}

// LabelLifetime is how long a label waits for its printer in the buffer:
// one queued longer is dropped at the next start (the clerk reprints it).
const LabelLifetime = 24 * time.Hour

var _ Store = (*store.Outbox)(nil)

// LabelPrinter queues label jobs; sent is called once a job was handed to
// the printer.
type LabelPrinter interface {
	Submit(job []byte, sent func())
}

// Config describes one station.
type Config struct {
	Name      string
	Appliance string
	Site      string
	// Scale and Printer name the station's devices; empty when it has none.
	Scale   string
	Printer string
	// WeightWindow is how long a parcel scan waits for a settled weight.
	WeightWindow time.Duration
	// DuplicateWindow: the same code again within it is a duplicate.
	DuplicateWindow time.Duration
	// AttachWindow: recipient and location codes within it are attached.
	AttachWindow time.Duration
	// Label is the receiving label template; nil means label.Default.
	Label *label.Template
	// QR prints the parcel id as a QR code instead of Code 128.
	QR         bool
	Classifier *barcode.Classifier
	// ScaleReady reports whether the scale is connected and answering; a
	// reading of a scale that is not is no weight at all. Nil means ready.
	ScaleReady func() bool
	Clock      clock.Clock
	Log        *slog.Logger
	Health     health.Reporter
	// OnEvent, if set, is called with every event the station committed.
	OnEvent func(event.Event)
	// ModeIdle is how long a scan mode other than receive lasts without a
	// scan; zero means 2 minutes.
	ModeIdle time.Duration
	// BadgeIsProof: a recipient's badge scanned in deliver mode proves the
	// delivery. Otherwise the parcels wait on the page for a signature or
	// PIN.
	BadgeIsProof bool
	// PickupPINs: every parcel received gets a pickup PIN.
	PickupPINs bool
	// People is the recipient directory parcels are matched in; nil
	// matches nobody and records no match.
	People People
	// PrivacyID: events name a matched person by their id alone, and
	// leave out the name a 2D label prints (directory.privacy "id");
	// otherwise they carry the person's display name too.
	PrivacyID bool
}

// Stats counts what a station did since it started.
type Stats struct {
	Received   int64 // parcel.received events
	Updated    int64 // parcel.updated events
	Duplicates int64 // scans suppressed as duplicates
	Printed    int64 // labels handed to the printer
}

// Parcel is a recently received parcel, enough to print its label again.
type Parcel struct {
	ID        string
	Time      time.Time
	Parcel    event.Parcel
	Recipient string
	Location  string
	// Person is the directory id of the person it is for, if one was found.
	Person string
}

// recentLimit is how many parcels a station remembers for reprints.
const recentLimit = 200

type hold struct {
	scanID string
	value  string
	at     time.Time
}

type lastParcel struct {
	id  string
	at  time.Time
	has map[barcode.Kind]bool
}

// Station resolves the scans of one receiving station, one at a time and
// in commit order.
type Station struct {
	cfg     Config
	store   Store
	printer LabelPrinter
	log     *slog.Logger

	mu       sync.Mutex
	queue    []item
	wake     chan struct{}
	weight   scale.Reading
	weighed  bool
	weightCh chan struct{} // closed and replaced on every reading
	recent   []*Parcel
	stats    Stats

	// Owned by the goroutine that resolves scans.
	seen    *codeWindow
	seenLen atomic.Int64
	holds   map[barcode.Kind]hold
	last    *lastParcel
	// mode is written by the goroutine that resolves scans, under mu.
	mode     modeState
	awaiting []Awaiting // under mu
	notices  []Notice   // under mu
	// lastSeq is the highest seq of the scans taken so far (owned by the
	// goroutine that resolves scans).
	lastSeq int64
}

// item is one thing for Run to do: a committed scan, or a mode the page
// switched to.
type item struct {
	scan event.Event
	mode string
}

// New returns a station. pr may be nil when the station has no printer.
func New(cfg Config, st Store, pr LabelPrinter) *Station {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Health == nil {
		cfg.Health = health.Discard{}
	}
	if cfg.Label == nil {
		cfg.Label = label.MustDefault()
	}
	if cfg.ScaleReady == nil {
		cfg.ScaleReady = func() bool { return true }
	}
	if cfg.ModeIdle <= 0 {
		cfg.ModeIdle = 2 * time.Minute
	}
	return &Station{cfg: cfg, store: st, printer: pr, log: cfg.Log.With("station", cfg.Name),
		wake: make(chan struct{}, 1), weightCh: make(chan struct{}),
		seen: newCodeWindow(cfg.DuplicateWindow), holds: map[barcode.Kind]hold{}, mode: modeState{mode: ModeReceive}}
}

// Name returns the station's name.
func (s *Station) Name() string { return s.cfg.Name }

// Weigh records a reading of the station's scale.
func (s *Station) Weigh(r scale.Reading) {
	s.mu.Lock()
	s.weight, s.weighed = r, true
	close(s.weightCh)
	s.weightCh = make(chan struct{})
	s.mu.Unlock()
}

// Submit hands a committed scan of the station's scanner to the station.
// It never blocks; the scan is resolved by Run.
func (s *Station) Submit(scan event.Event) {
	s.mu.Lock()
	s.queue = append(s.queue, item{scan: scan})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the station's counters.
func (s *Station) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Recent returns the parcels the station remembers, newest first.
func (s *Station) Recent() []Parcel {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.remembered()
	out := make([]Parcel, 0, len(kept))
	for i := len(kept) - 1; i >= 0; i-- {
		out = append(out, *kept[i])
	}
	return out
}

// Recover loads the station's recent parcels and resolves every scan that
// was committed but not resolved before the last stop. Call it before Run
// and before the station's scanner starts.
func (s *Station) Recover(ctx context.Context) error {
	updates := map[string][]event.Event{}
	err := s.store.EachRecent(ctx, 5000, func(r store.Stored) error {
		ev := r.Event
		if ev.Station != s.cfg.Name {
			return nil
		}
		switch {
		case ev.Type == event.TypeParcelUpdated:
			updates[ev.ParcelID] = append(updates[ev.ParcelID], ev)
		case ev.Parcel != nil:
			p := &Parcel{ID: ev.ID, Time: ev.Time, Parcel: *ev.Parcel, Recipient: ev.Recipient, Location: ev.Location, Person: ev.RecipientID}
			s.mu.Lock()
			s.remember(p)
			s.mu.Unlock()
			s.see(dupKey(ev.Parcel.Carrier, ev.Parcel.Tracking), ev.Time)
			s.last = &lastParcel{id: ev.ID, at: ev.Time, has: map[barcode.Kind]bool{
				barcode.KindRecipient: hasRecipient(ev), barcode.KindLocation: ev.Location != ""}}
		}
		return nil
	}, event.TypeParcelReceived, event.TypeParcelUpdated)
	if err != nil {
		return fmt.Errorf("station %s: %w", s.cfg.Name, err)
	}
	for id, ups := range updates {
		for _, u := range ups {
			s.mu.Lock()
			s.applyUpdate(id, u)
			s.mu.Unlock()
			if s.last != nil && s.last.id == id {
				s.last.has[barcode.KindRecipient] = s.last.has[barcode.KindRecipient] || hasRecipient(u)
				s.last.has[barcode.KindLocation] = s.last.has[barcode.KindLocation] || u.Location != ""
			}
		}
	}

	if err := s.requeue(ctx); err != nil {
		return fmt.Errorf("station %s: labels: %w", s.cfg.Name, err)
	}
	scans, err := s.store.Unresolved(ctx, s.cfg.Name)
	if err != nil {
		return fmt.Errorf("station %s: %w", s.cfg.Name, err)
	}
	if len(scans) > 0 {
		s.log.Info("resolving scans left unresolved at the last stop", "count", len(scans))
	}
	// A mode set on the page applies to the scans committed after it.
	pageMode, hasMode, err := s.store.StationModeOf(ctx, s.cfg.Name)
	if err != nil {
		return fmt.Errorf("station %s: %w", s.cfg.Name, err)
	}
	for _, scan := range scans {
		s.lastSeq = max(s.lastSeq, scan.Seq)
		if hasMode && scan.Seq > pageMode.Seq {
			if err := s.resumeMode(ctx, pageMode); err != nil {
				return fmt.Errorf("station %s: %w", s.cfg.Name, err)
			}
			hasMode = false
		}
		if err := s.resolve(ctx, scan, false); err != nil {
			return fmt.Errorf("station %s: resolve scan %s: %w", s.cfg.Name, scan.ID, err)
		}
	}
	if hasMode {
		if err := s.resumeMode(ctx, pageMode); err != nil {
			return fmt.Errorf("station %s: %w", s.cfg.Name, err)
		}
	}
	now := s.cfg.Clock.Now()
	if s.modeExpired(now) {
		if err := s.endMode(ctx, now, "idle"); err != nil {
			return fmt.Errorf("station %s: %w", s.cfg.Name, err)
		}
	}
	return s.expireHolds(ctx, now)
}

// Run resolves submitted scans in order until ctx is cancelled. A scan
// whose events cannot be committed is retried; it stays unresolved in the
// store until they are.
func (s *Station) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var it item
		have := len(s.queue) > 0
		if have {
			it = s.queue[0]
			s.queue = s.queue[1:]
		}
		s.mu.Unlock()
		if have {
			for {
				var err error
				if it.mode != "" {
					err = s.switchMode(ctx, it.mode, "", s.cfg.Clock.Now())
				} else {
					s.lastSeq = max(s.lastSeq, it.scan.Seq)
					err = s.resolve(ctx, it.scan, true)
				}
				if err == nil {
					s.cfg.Health.Clear(s.conditionKey())
					break
				}
				if ctx.Err() != nil {
					return nil // unresolved; Recover finishes it after the restart
				}
				s.log.Error("scan not resolved; retrying", "scan", it.scan.ID, "mode", it.mode, "err", err)
				s.cfg.Health.Set(s.conditionKey(), health.Critical,
					fmt.Sprintf("station %s cannot record parcels: %v", s.cfg.Name, err))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
			continue
		}
		now := s.cfg.Clock.Now()
		if err := s.expireHolds(ctx, now); err != nil && ctx.Err() == nil {
			s.log.Warn("expire held codes", "err", err)
		}
		if s.modeExpired(now) {
			if err := s.endMode(ctx, now, "idle"); err != nil && ctx.Err() == nil {
				s.log.Warn("end scan mode; retrying", "err", err)
				select { // as a scan that cannot be resolved: once a second
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		}
		timer.Reset(s.nextExpiry())
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// StuckKey is raised while committed scans at the station cannot be
// resolved.
func StuckKey(station string) string { return "station." + station + ".stuck" }

func (s *Station) conditionKey() string { return StuckKey(s.cfg.Name) }

func (s *Station) nextExpiry() time.Duration {
	next := time.Hour
	now := s.cfg.Clock.Now()
	for _, h := range s.holds {
		if d := h.at.Add(s.cfg.AttachWindow).Sub(now); d < next {
			next = max(d, time.Millisecond)
		}
	}
	if s.mode.mode != ModeReceive {
		if d := s.mode.at.Add(s.cfg.ModeIdle).Sub(now); d < next {
			next = max(d, time.Millisecond)
		}
	}
	return next
}

// expireHolds resolves held recipient and location codes that no parcel
// followed within the window.
func (s *Station) expireHolds(ctx context.Context, now time.Time) error {
	for kind, h := range s.holds {
		if now.Sub(h.at) < s.cfg.AttachWindow {
			continue
		}
		if err := s.store.Resolve(ctx, h.scanID); err != nil {
			return err
		}
		delete(s.holds, kind)
		s.log.Info("code not attached: no parcel followed in time", "kind", string(kind), "code", h.value)
	}
	return nil
}

// trackingAttr logs a parcel's code: a recognised carrier's tracking
// number whose check digit does not fail as "tracking", any other code as
// "code", which the daemon's log redacts unless log.personal_data is on: a
// code of no known carrier, or one whose check digit fails (a phone number
// has the shape of a DHL number), may be a staff badge or another personal
// code.
func trackingAttr(carrier, tracking, check string) slog.Attr {
	if carrier == "" || carrier == string(barcode.Unknown) || check == string(barcode.CheckInvalid) {
		return slog.String("code", tracking)
	}
	return slog.String("tracking", tracking)
}

func dupKey(carrier, tracking string) string { return carrier + "/" + tracking }

// see records a parcel code for duplicate detection and forgets the codes
// that fell out of the duplicate window.
func (s *Station) see(key string, at time.Time) {
	s.seen.add(key, onClock(s.cfg.Clock.Now(), at))
	s.seenLen.Store(int64(s.seen.len()))
}

// seenWithin returns when the parcel code key was last received, and
// whether that was within the duplicate window before at. Both times are
// compared on the clock the window keeps its times on (onClock), so that
// a scan replayed at start is measured against replayed parcels as it was
// before the restart.
func (s *Station) seenWithin(key string, at time.Time) (time.Time, bool) {
	prev, ok := s.seen.lookup(key)
	if !ok {
		return time.Time{}, false
	}
	since := onClock(s.cfg.Clock.Now(), at).Sub(prev)
	return prev, since >= 0 && since < s.cfg.DuplicateWindow
}

// onClock puts a time replayed from the store on the clock of now: the
// same instant, with now's monotonic reading, and no later than now. A
// replayed time carries no monotonic reading, so Go compares it with a
// live one by the wall clock, and after the wall clock stepped (a box
// without a real-time clock that starts behind its stored scans) the
// duplicate window's times would sort in no one order; one ahead of now
// would stay newest and push every live code out of the window at once.
// A live time (with a monotonic reading) is returned as it is; a clock
// whose times carry none (clock.Fake) makes every time count as replayed.
func onClock(now, at time.Time) time.Time {
	if at != at.Round(0) { // Round(0) strips only a monotonic reading
		return at
	}
	return now.Add(min(at.Sub(now), 0))
}

// Remembered returns how many parcel codes are held for duplicate
// detection.
func (s *Station) Remembered() int { return int(s.seenLen.Load()) }

// resolve turns one scan into its events. live is false while recovering,
// when the scale's reading at scan time is no longer known.
func (s *Station) resolve(ctx context.Context, scan event.Event, live bool) error {
	res := s.cfg.Classifier.Classify(scan.Barcode)
	at := scan.Time
	if err := s.expireHolds(ctx, at); err != nil {
		return err
	}
	// While recovering, the scans that kept a mode going may be resolved
	// already: the mode lasts until Recover is done.
	if live && s.modeExpired(at) {
		if err := s.endMode(ctx, at, "idle"); err != nil {
			return err
		}
	}
	if scan.Manual && (res.Kind == barcode.KindAction || res.Kind == barcode.KindRound) {
		// The page's manual entry receives parcels; it switches no mode.
		s.notice(Notice{Time: at, Code: NoticeIgnored, Mode: ModeReceive})
		return s.store.Resolve(ctx, scan.ID)
	}
	if res.Kind == barcode.KindAction {
		return s.switchMode(ctx, res.Action, scan.ID, at)
	}
	// A code typed in on the page is always a parcel received.
	if s.mode.mode != ModeReceive && !scan.Manual {
		return s.custody(ctx, scan, res)
	}
	if res.Kind == barcode.KindRound { // a round means nothing at the dock
		s.notice(Notice{Time: at, Code: NoticeIgnored, Mode: ModeReceive})
		return s.store.Resolve(ctx, scan.ID)
	}
	if !res.IsParcel() {
		return s.attach(ctx, scan, res)
	}

	// The code on a receiving label names a parcel already received: a
	// rescan of the label is no new parcel.
	if id := strings.ToLower(strings.TrimSpace(res.Raw)); isParcelID(id) {
		if p, err := s.store.FindParcel(ctx, id); err == nil && p.ID == id {
			if err := s.store.Resolve(ctx, scan.ID); err != nil {
				return err
			}
			s.last = nil // a code scanned next is for no parcel just received
			s.notice(Notice{Time: at, Code: NoticeAlreadyReceived, Mode: ModeReceive, ParcelID: id, State: string(p.State)})
			s.log.Info("receiving label scanned: the parcel was received already", "parcel", id, "state", string(p.State))
			return nil
		} else if err != nil && !errors.Is(err, store.ErrNoParcel) {
			return err
		}
	}
	key := dupKey(string(res.Carrier), res.Tracking)
	// A code without a tracking number (a 2D label that could not be
	// read) is no duplicate of another such code.
	if prev, dup := s.seenWithin(key, at); dup && res.Tracking != "" {
		if err := s.store.Resolve(ctx, scan.ID); err != nil {
			return err
		}
		s.mu.Lock()
		s.stats.Duplicates++
		s.mu.Unlock()
		s.log.Info("duplicate scan ignored", trackingAttr(string(res.Carrier), res.Tracking, string(res.Check)), "first", prev, "scan", scan.ID)
		return nil
	}

	p := &event.Parcel{Carrier: string(res.Carrier), Service: res.Service, Tracking: res.Tracking, Check: string(res.Check),
		Raw: res.Raw, Symbology: res.Symbology, Country: res.Country, GS1: res.GS1, Label: res.Label}
	if !utf8.ValidString(res.Raw) {
		// The exact bytes travel as base64; the text fields get valid UTF-8.
		p.RawB64 = base64.StdEncoding.EncodeToString([]byte(res.Raw))
		p.Raw = strings.ToValidUTF8(res.Raw, "\uFFFD")
		p.Tracking = strings.ToValidUTF8(p.Tracking, "\uFFFD")
	}
	for _, c := range res.Candidates {
		p.Candidates = append(p.Candidates, string(c))
	}
	switch {
	case scan.EnteredWeight != nil:
		p.Weight = scan.EnteredWeight
	case live && s.cfg.Scale != "":
		p.Weight = s.weigh(ctx)
	case s.cfg.Scale == "" && res.Label != nil:
		p.Weight = labelWeight(res.Label)
	}
	ev := event.Event{Appliance: s.cfg.Appliance, Site: s.cfg.Site, Type: event.TypeParcelReceived, Time: at,
		Device: scan.Device, Station: s.cfg.Name, Manual: scan.Manual, ScanID: scan.ID, Parcel: p,
		Resolves: []string{scan.ID}}
	var used []barcode.Kind
	for kind, h := range s.holds {
		if at.Sub(h.at) < 0 || at.Sub(h.at) >= s.cfg.AttachWindow {
			continue
		}
		switch kind {
		case barcode.KindRecipient:
			ev.Recipient = h.value
		case barcode.KindLocation:
			ev.Location = h.value
		}
		ev.Resolves = append(ev.Resolves, h.scanID)
		used = append(used, kind)
	}
	typed := false
	if scan.Recipient != "" { // typed in with a manual entry
		ev.Recipient, typed = scan.Recipient, true
	}
	s.matchRecipient(ctx, &ev, scan, typed)
	if s.cfg.PickupPINs {
		ev.PickupPIN = NewPickupPIN()
	}
	rec := &Parcel{Time: at, Parcel: *p, Recipient: ev.Recipient, Location: ev.Location, Person: ev.RecipientID}
	var committed event.Event
	var job store.LabelJob // the label queued with the parcel
	var err error
	if live && s.printer != nil {
		// The label waits in the buffer from the parcel's own commit on.
		fields := s.labelFields(*rec)
		committed, job, err = s.store.AppendWithLabel(ctx, ev, s.cfg.Name, s.cfg.Clock.Now(), func(id string) ([]byte, error) {
			f := fields
			f.ID = id
			return s.cfg.Label.Render(f)
		})
		if lerr := (*store.LabelError)(nil); errors.As(err, &lerr) {
			s.log.Error("label not queued; reprint it from the page", "parcel", committed.ID, "err", lerr.Err)
			job, err = store.LabelJob{}, nil
		}
	} else {
		committed, err = s.store.Append(ctx, ev)
	}
	if err != nil {
		return err
	}
	if res.Label != nil && res.Label.Error != "" {
		s.log.Warn("2D label not read whole; the parcel is recorded with what could be read", "err", res.Label.Error, "id", committed.ID)
	}
	for _, k := range used {
		delete(s.holds, k)
	}
	s.see(key, at)
	s.last = &lastParcel{id: committed.ID, at: at, has: map[barcode.Kind]bool{
		barcode.KindRecipient: hasRecipient(ev), barcode.KindLocation: ev.Location != ""}}
	rec.ID = committed.ID
	s.mu.Lock()
	s.stats.Received++
	s.remember(rec)
	s.mu.Unlock()
	s.log.Info("parcel received", "carrier", p.Carrier, trackingAttr(p.Carrier, p.Tracking, p.Check), "check", p.Check,
		"weight", weightText(p.Weight), "recipient", ev.Recipient, "location", ev.Location, "id", committed.ID)
	s.emit(committed)
	if job.ID != 0 {
		s.submit(job.ID, committed.ID, job.Data)
	}
	return nil
}

// attach handles a recipient or location code: it updates the parcel just
// received if that has none of its kind yet, or is held for the next one.
func (s *Station) attach(ctx context.Context, scan event.Event, res barcode.Result) error {
	at := scan.Time
	kind := res.Kind
	if l := s.last; l != nil && at.Sub(l.at) >= 0 && at.Sub(l.at) < s.cfg.AttachWindow && !l.has[kind] {
		ev := event.Event{Appliance: s.cfg.Appliance, Site: s.cfg.Site, Type: event.TypeParcelUpdated, Time: at,
			Device: scan.Device, Station: s.cfg.Name, Manual: scan.Manual, ScanID: scan.ID, ParcelID: l.id,
			Resolves: []string{scan.ID}}
		if kind == barcode.KindRecipient {
			ev.Recipient = res.Tracking
			s.matchRecipient(ctx, &ev, event.Event{}, false)
			if ev.RecipientMatch == directory.MatchNone {
				ev.RecipientMatch = "" // a code of nobody changes no match the parcel has
			}
		} else {
			ev.Location = res.Tracking
		}
		committed, err := s.store.Append(ctx, ev)
		var refused *store.RefusedError
		switch {
		case errors.As(err, &refused):
			// The parcel was handed over (or returned) meanwhile: the code
			// is not for it. It is held for the next parcel instead.
			s.last = nil
			return s.attach(ctx, scan, res)
		case err != nil:
			return err
		}
		l.has[kind] = true
		s.mu.Lock()
		s.stats.Updated++
		s.applyUpdate(l.id, ev)
		s.mu.Unlock()
		s.log.Info("parcel updated", "parcel", l.id, string(kind), res.Tracking)
		s.emit(committed)
		return nil
	}
	if old, ok := s.holds[kind]; ok {
		if err := s.store.Resolve(ctx, old.scanID); err != nil {
			return err
		}
		s.log.Info("held code replaced by a newer one", "kind", string(kind), "code", res.Tracking)
	}
	s.holds[kind] = hold{scanID: scan.ID, value: res.Tracking, at: at}
	return nil
}

// applyUpdate records a parcel.updated's recipient, person or location on
// a remembered parcel.
func (s *Station) applyUpdate(id string, u event.Event) {
	for _, p := range s.remembered() {
		if p.ID == id {
			if u.Recipient != "" {
				p.Recipient = u.Recipient
			}
			if u.RecipientID != "" {
				p.Person = u.RecipientID
			}
			if u.Location != "" {
				p.Location = u.Location
			}
			return
		}
	}
}

// hasRecipient reports whether a parcel event names its recipient: a code,
// or a person of the directory (found by name: a badge scanned next is
// then for the next parcel, not this one).
func hasRecipient(ev event.Event) bool {
	return ev.Recipient != "" || ev.RecipientID != "" && ev.RecipientMatch != directory.MatchNone
}

// remembered is the last recentLimit parcels, oldest first; s.mu held.
func (s *Station) remembered() []*Parcel {
	return s.recent[max(0, len(s.recent)-recentLimit):]
}

func (s *Station) remember(p *Parcel) {
	s.recent = append(s.recent, p)
	// Trimmed in place once it holds twice the limit: a copy per parcel
	// would cost a new array each time.
	if len(s.recent) >= 2*recentLimit {
		n := copy(s.recent, s.recent[len(s.recent)-recentLimit:])
		clear(s.recent[n:])
		s.recent = s.recent[:n]
	}
}

func (s *Station) emit(ev event.Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// weigh returns the settled weight on the scale, waiting up to the weight
// window for it; at the end of the window it takes what the scale shows,
// marked unstable, or nil when the scale shows nothing or is not ready.
func (s *Station) weigh(ctx context.Context) *event.Weight {
	timer := time.NewTimer(s.cfg.WeightWindow)
	defer timer.Stop()
	for {
		s.mu.Lock()
		r, ok, changed := s.weight, s.weighed, s.weightCh
		s.mu.Unlock()
		ready := s.cfg.ScaleReady()
		if ok && ready && r.Stable && r.Value > 0 {
			return toWeight(r)
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
		case <-timer.C:
		}
		if ok && ready && r.Value > 0 && (r.Status == scale.StatusStable || r.Status == scale.StatusMotion) {
			w := toWeight(r)
			w.Stable = false
			s.log.Warn("scale did not settle in time; recording the unsettled weight", "weight", weightText(w), "window", s.cfg.WeightWindow)
			return w
		}
		s.log.Warn("no weight available for the parcel", "scale", s.cfg.Scale, "ready", ready, "status", string(r.Status))
		return nil
	}
}

// labelWeight is the weight a 2D label prints, for a station without a
// scale: a weight printed without a unit is in pounds on a label for the
// US (country 840), in kilograms on any other.
func labelWeight(l *barcode.Label) *event.Weight {
	if l.Weight == nil || l.Weight.Value <= 0 {
		return nil
	}
	unit := strings.ToLower(l.Weight.Unit)
	switch unit {
	case "lbs", "l":
		unit = "lb"
	case "kgs", "k":
		unit = "kg"
	case "":
		unit = "kg"
		if l.ShipTo != nil && l.ShipTo.Country == "840" {
			unit = "lb"
		}
	}
	per, ok := map[string]float64{"g": 1, "kg": 1000, "lb": 453.59237, "oz": 28.349523125}[unit]
	if !ok {
		return nil
	}
	return &event.Weight{Value: l.Weight.Value, Unit: unit, Grams: math.Round(l.Weight.Value*per*100) / 100, Stable: true, Scale: "label"}
}

func toWeight(r scale.Reading) *event.Weight {
	g, _ := r.Grams()
	return &event.Weight{Value: r.Value, Unit: string(r.Unit), Grams: math.Round(g*100) / 100, Stable: r.Stable, Scale: r.Device}
}

func weightText(w *event.Weight) string {
	if w == nil {
		return "none"
	}
	return fmt.Sprintf("%g %s", w.Value, w.Unit)
}

// print queues the receiving label of a parcel; label.printed is committed
// once the printer took it.
func (s *Station) print(p Parcel) {
	if s.printer == nil {
		return
	}
	job, err := s.cfg.Label.Render(s.labelFields(p))
	if err != nil {
		s.log.Error("label not printed", "parcel", p.ID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The label is kept in the buffer first: if the printer cannot print
	// it now, it survives a restart.
	id, err := s.store.QueueLabel(ctx, s.cfg.Name, p.ID, job, s.cfg.Clock.Now())
	if err != nil {
		s.log.Error("label not queued; reprint it from the page", "parcel", p.ID, "err", err)
		return
	}
	s.submit(id, p.ID, job)
}

// labelFields is what the label of parcel p shows.
func (s *Station) labelFields(p Parcel) label.Fields {
	w := ""
	if p.Parcel.Weight != nil {
		w = weightText(p.Parcel.Weight)
	}
	recipient := p.Recipient
	if p.Person != "" {
		// The person's name as the directory has it, for the shelf.
		recipient = p.Person
		if x := s.directoryIndex(context.Background()); x != nil {
			if e, ok := x.ByID(p.Person); ok {
				recipient = e.Name
			}
		}
	}
	return label.Fields{ID: p.ID, Carrier: p.Parcel.Carrier, Service: p.Parcel.Service,
		Tracking: p.Parcel.Tracking, Recipient: recipient, Location: p.Location, Station: s.cfg.Name,
		Weight: w, Time: p.Time.In(time.Local), QR: s.cfg.QR}
}

// submit hands a queued label to the printer; once sent, its label.printed
// event is committed and the job removed in one transaction.
func (s *Station) submit(jobID int64, parcelID string, job []byte) {
	s.printer.Submit(job, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ev, err := s.store.LabelPrinted(ctx, jobID, event.Event{Appliance: s.cfg.Appliance, Site: s.cfg.Site, Type: event.TypeLabelPrinted,
			Time: s.cfg.Clock.Now(), Device: s.cfg.Printer, Station: s.cfg.Name, ParcelID: parcelID, Printer: s.cfg.Printer})
		if err != nil {
			s.log.Error("label printed but not recorded", "parcel", parcelID, "err", err)
			return
		}
		s.mu.Lock()
		s.stats.Printed++
		s.mu.Unlock()
		s.emit(ev)
	})
}

// requeue hands the labels that waited in the buffer at the last stop to
// the printer again, and drops those older than LabelLifetime.
func (s *Station) requeue(ctx context.Context) error {
	if s.printer == nil {
		return nil
	}
	jobs, err := s.store.LabelJobs(ctx, s.cfg.Name)
	if err != nil {
		return err
	}
	now := s.cfg.Clock.Now()
	for _, j := range jobs {
		if j.Err != nil {
			s.log.Error("label cannot be read; dropped, reprint it from the page", "parcel", j.ParcelID, "err", j.Err)
			if err := s.store.DropLabel(ctx, j.ID); err != nil {
				return err
			}
			continue
		}
		if now.Sub(j.Queued) > LabelLifetime {
			s.log.Warn("label waited longer than a day for its printer; dropped, reprint it from the page", "parcel", j.ParcelID)
			if err := s.store.DropLabel(ctx, j.ID); err != nil {
				return err
			}
			continue
		}
		s.submit(j.ID, j.ParcelID, j.Data)
	}
	if len(jobs) > 0 {
		s.log.Info("labels from before the restart queued for the printer again", "count", len(jobs))
	}
	return nil
}

// ErrUnknownParcel is returned by Reprint for a parcel the station does not
// remember.
var ErrUnknownParcel = errors.New("no recent parcel with that id at this station")

// Reprint queues the label of a recent parcel again.
func (s *Station) Reprint(id string) error {
	if s.printer == nil {
		return fmt.Errorf("reprint at station %s: the station has no printer", s.cfg.Name)
	}
	s.mu.Lock()
	var found *Parcel
	for _, p := range s.remembered() {
		if p.ID == id {
			c := *p
			found = &c
		}
	}
	s.mu.Unlock()
	if found == nil {
		return fmt.Errorf("reprint %s: %w", id, ErrUnknownParcel)
	}
	s.log.Info("reprinting label", "parcel", id)
	s.print(*found)
	return nil
}

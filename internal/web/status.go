package web

import (
	"context"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// Store is what the page reads from the event buffer.
type Store interface {
	Stats(ctx context.Context) (store.Stats, error)
	Recent(ctx context.Context, limit int, types ...event.Type) ([]store.Stored, error)
	Check(ctx context.Context) error
}

var _ Store = (*store.Outbox)(nil)

// Health is the daemon's health model.
type Health interface {
	Active() []health.Condition
	Devices() []health.DeviceStatus
}

var _ Health = (*health.Tracker)(nil)

// Link is the uplink's state.
type Link interface {
	State() uplink.LinkState
}

// Status is what the page shows; it is pushed to every open page.
type Status struct {
	Appliance string       `json:"appliance"`
	Site      string       `json:"site,omitempty"`
	Version   string       `json:"version"`
	Now       time.Time    `json:"now"`
	Link      LinkStatus   `json:"link"`
	Queue     QueueStatus  `json:"queue"`
	Devices   []Device     `json:"devices"`
	Events    []Row        `json:"events"`
	Alerts    []Alert      `json:"alerts"`
	Chart     Chart        `json:"chart"`
	Stations  []StationRef `json:"stations"`
	// Modes is each station's scan mode, by station name.
	Modes map[string]station.ModeView `json:"modes"`
	// Delivery is the hand-over policy; Codes the internal barcode rules.
	Delivery Delivery   `json:"delivery"`
	Codes    []CodeRule `json:"codes"`
}

// LinkStatus is the cloud link.
type LinkStatus struct {
	Connected bool      `json:"connected"`
	Broker    string    `json:"broker,omitempty"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
}

// QueueStatus is the buffer.
type QueueStatus struct {
	Pending          int64   `json:"pending"`
	OldestAgeSeconds float64 `json:"oldest_age_s"`
	LastHour         int64   `json:"last_hour"`
}

// Device is one device's state.
type Device struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Driver      string    `json:"driver"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	LastSeen    time.Time `json:"last_seen"`
	LastReading string    `json:"last_reading,omitempty"`
}

// Row is one recent parcel, or a scan of a scanner at no station.
type Row struct {
	ID       string    `json:"id"`
	Seq      int64     `json:"seq"`
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	Station  string    `json:"station,omitempty"`
	Carrier  string    `json:"carrier,omitempty"`
	Tracking string    `json:"tracking"`
	Check    string    `json:"check,omitempty"`
	Weight   string    `json:"weight,omitempty"`
	Recip    string    `json:"recipient,omitempty"`
	// Person is the directory id of the parcel's recipient, Match how it
	// was found ("none": the parcel needs a recipient).
	Person string `json:"person,omitempty"`
	Match  string `json:"match,omitempty"`
	Manual bool   `json:"manual,omitempty"`
	Sent   bool   `json:"sent"`
}

// Alert is an active condition.
type Alert struct {
	Key      string    `json:"key"`
	Severity string    `json:"severity"`
	Message  string    `json:"message"`
	Since    time.Time `json:"since"`
}

// Chart holds the last 24 hours, oldest first.
type Chart struct {
	Hours   []time.Time `json:"hours"`
	Scans   []int64     `json:"scans"`
	Pending []int64     `json:"pending"`
}

// StationRef names a station for the manual entry and reprint forms.
type StationRef struct {
	Name       string `json:"name"`
	HasPrinter bool   `json:"has_printer"`
}

// History keeps per-minute scan counts and per-hour peak pending counts of
// the last 24 hours, for the chart and the last-hour figure.
type History struct {
	mu      sync.Mutex
	minutes map[int64]int64 // unix minute -> scans
	pending map[int64]int64 // unix hour -> peak pending
}

// NewHistory returns an empty history.
func NewHistory() *History {
	return &History{minutes: map[int64]int64{}, pending: map[int64]int64{}}
}

// Scan counts one scan at t.
func (h *History) Scan(t time.Time) {
	h.mu.Lock()
	h.minutes[t.Unix()/60]++
	h.mu.Unlock()
}

// Scans records n scans in the minute of t (the chart's start from the
// buffer, one call per minute).
func (h *History) Scans(t time.Time, n int64) {
	h.mu.Lock()
	h.minutes[t.Unix()/60] += n
	h.mu.Unlock()
}

// Pending records the pending count seen at t.
func (h *History) Pending(t time.Time, n int64) {
	h.mu.Lock()
	hr := t.Unix() / 3600
	h.pending[hr] = max(h.pending[hr], n)
	h.mu.Unlock()
}

// chart returns the last 24 hours up to now, and the scans of the last hour.
func (h *History) chart(now time.Time) (Chart, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nowMin, nowHour := now.Unix()/60, now.Unix()/3600
	for m := range h.minutes {
		if m < nowMin-24*60 {
			delete(h.minutes, m)
		}
	}
	for hr := range h.pending {
		if hr < nowHour-24 {
			delete(h.pending, hr)
		}
	}
	var c Chart
	var lastHour int64
	for i := int64(23); i >= 0; i-- {
		hr := nowHour - i
		c.Hours = append(c.Hours, time.Unix(hr*3600, 0).UTC())
		var n int64
		for m := hr * 60; m < hr*60+60; m++ {
			n += h.minutes[m]
		}
		c.Scans = append(c.Scans, n)
		c.Pending = append(c.Pending, h.pending[hr])
	}
	for m := nowMin - 59; m <= nowMin; m++ {
		lastHour += h.minutes[m]
	}
	return c, lastHour
}

// snapshot builds the status from its sources.
func (s *Server) snapshot(ctx context.Context) Status {
	now := s.opts.Now()
	st := Status{Appliance: s.opts.Appliance, Site: s.opts.Site, Version: s.opts.Version, Now: now,
		Stations: s.opts.Stations, Devices: []Device{}, Events: []Row{}, Alerts: []Alert{},
		Modes: s.modes(), Delivery: s.opts.Delivery, Codes: s.opts.Codes}
	if st.Codes == nil {
		st.Codes = []CodeRule{}
	}
	if st.Delivery.Proof == nil {
		st.Delivery.Proof = []string{}
	}
	ls := s.opts.Link.State()
	st.Link = LinkStatus{Connected: ls.Connected, Broker: ls.Broker, Since: ls.Since, LastError: ls.LastError}
	if stats, err := s.opts.Store.Stats(ctx); err == nil {
		st.Queue.Pending = stats.Pending
		if !stats.OldestPending.IsZero() {
			st.Queue.OldestAgeSeconds = now.Sub(stats.OldestPending).Seconds()
		}
		s.opts.History.Pending(now, stats.Pending)
	}
	st.Chart, st.Queue.LastHour = s.opts.History.chart(now)
	for _, d := range s.opts.Health.Devices() {
		st.Devices = append(st.Devices, Device{Name: d.Name, Kind: d.Kind, Driver: d.Driver, State: d.State,
			Reason: d.Reason, LastSeen: d.LastSeen, LastReading: d.LastReading})
	}
	for _, c := range s.opts.Health.Active() {
		st.Alerts = append(st.Alerts, Alert{Key: c.Key, Severity: c.Severity.String(), Message: c.Message, Since: c.Since})
	}
	recent, err := s.opts.Store.Recent(ctx, 200, event.TypeScan, event.TypeParcelReceived)
	var people *directory.Index
	if s.opts.People != nil {
		people, _ = s.opts.People.Index(ctx) // without it, ids are shown
	}
	if err == nil {
		resolved := map[string]bool{}
		for _, r := range recent {
			if r.Type == event.TypeParcelReceived {
				resolved[r.ScanID] = true
			}
		}
		for _, r := range recent {
			if len(st.Events) == 50 {
				break
			}
			// Parcels only: a scan at a station is shown as its parcel
			// once resolved, and not at all when it was a badge, a
			// location or a duplicate. Scans of a scanner that belongs to
			// no station are all the box records of them: they are shown.
			if r.Type == event.TypeScan && (resolved[r.ID] || r.Station != "") {
				continue
			}
			st.Events = append(st.Events, row(r, people))
		}
	}
	return st
}

// row is an event as the page lists it. A recipient of the directory is
// shown by the name the directory has now (a person forgotten since is
// shown by id), never by a name the event carries.
func row(r store.Stored, people *directory.Index) Row {
	out := Row{ID: r.ID, Seq: r.Seq, Type: string(r.Type), Time: r.Time, Station: r.Station, Manual: r.Manual,
		Sent: r.Sent, Tracking: string(r.Barcode), Recip: r.Recipient, Person: r.RecipientID, Match: r.RecipientMatch}
	if r.RecipientID != "" {
		out.Recip = r.RecipientID
		if people != nil {
			if e, ok := people.ByID(r.RecipientID); ok {
				out.Recip = e.Name
			}
		}
	}
	if p := r.Parcel; p != nil {
		out.Carrier, out.Tracking, out.Check = p.Carrier, p.Tracking, p.Check
		if w := p.Weight; w != nil {
			out.Weight = formatWeight(w)
		}
	}
	return out
}

func formatWeight(w *event.Weight) string {
	s := trimFloat(w.Value) + " " + w.Unit
	if !w.Stable {
		s += " ~"
	}
	return s
}

// Package intake turns device readings into committed events: the first
// thing that happens to a scan is its commit to the store. Nothing is
// reported as received before that commit succeeded.
package intake

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Appender commits events; *store.Outbox implements it.
type Appender interface {
	Append(ctx context.Context, ev event.Event) (event.Event, error)
}

var _ Appender = (*store.Outbox)(nil)

// ConditionRefusing is raised while the store refuses new events.
const ConditionRefusing = "store.refusing"

// Intake commits scanner readings as scan events.
type Intake struct {
	store     Appender
	appliance string
	site      string
	log       *slog.Logger
	health    health.Reporter
	mu        sync.RWMutex
	stations  map[string]string

	committed atomic.Int64
	refused   atomic.Int64
	// OnCommit, if set, is called after each commit (for the status page).
	OnCommit func(event.Event)
}

// New returns an Intake that commits into s. stations maps a scanner's name
// to the station it belongs to, if any; its scans carry the station.
func New(s Appender, appliance, site string, stations map[string]string, log *slog.Logger, h health.Reporter) *Intake {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = health.Discard{}
	}
	return &Intake{store: s, appliance: appliance, site: site, stations: stations, log: log, health: h}
}

// Commit commits one reading and returns the committed event.
func (in *Intake) Commit(ctx context.Context, r scanner.Reading) (event.Event, error) {
	return in.commit(ctx, event.Event{
		Appliance: in.appliance, Site: in.site, Type: event.TypeScan,
		Time: r.At, Device: r.Device, Barcode: r.Barcode, Station: in.station(r.Device),
	})
}

func (in *Intake) station(device string) string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.stations[device]
}

// SetStations replaces the map of scanners to stations.
func (in *Intake) SetStations(m map[string]string) {
	in.mu.Lock()
	in.stations = m
	in.mu.Unlock()
}

// Manual is what a clerk typed in instead of scanning.
type Manual struct {
	Station   string
	Code      string
	Recipient string
	// RecipientID is the directory person the clerk chose, or the one the
	// name typed is; RecipientMatch says which (manual, exact or fuzzy)
	// and RecipientScore how well a fuzzy name fit.
	RecipientID    string
	RecipientMatch string
	RecipientScore float64
	// Weight is optional.
	Weight *event.Weight
	At     time.Time
}

// CommitManual commits a code a clerk typed in at a station, exactly as a
// scan of it, marked as manual, with the recipient and weight typed in.
func (in *Intake) CommitManual(ctx context.Context, m Manual) (event.Event, error) {
	return in.commit(ctx, event.Event{
		Appliance: in.appliance, Site: in.site, Type: event.TypeScan,
		Time: m.At, Barcode: []byte(m.Code), Station: m.Station, Manual: true,
		Recipient: m.Recipient, RecipientID: m.RecipientID, RecipientMatch: m.RecipientMatch, RecipientScore: m.RecipientScore,
		EnteredWeight: m.Weight,
	})
}

func (in *Intake) commit(ctx context.Context, e event.Event) (event.Event, error) {
	device := e.Device
	if e.Manual {
		device = "manual@" + e.Station
	}
	ev, err := in.store.Append(ctx, e)
	if err != nil {
		in.refused.Add(1)
		if errors.Is(err, context.Canceled) {
			return ev, err
		}
		in.log.Error("scan NOT recorded", "device", device, "err", err)
		msg := "new scans are being refused: " + err.Error()
		if errors.Is(err, store.ErrFull) {
			msg = "buffer full: new scans are refused until the cloud link drains the backlog"
		}
		in.health.Set(ConditionRefusing, health.Critical, msg)
		return ev, err
	}
	in.committed.Add(1)
	in.health.Clear(ConditionRefusing)
	in.log.Info("scan committed", "device", device, "station", e.Station, "seq", ev.Seq, "id", ev.ID, "barcode", printable(e.Barcode))
	if in.OnCommit != nil {
		in.OnCommit(ev)
	}
	return ev, nil
}

// Counts returns how many readings were committed and refused.
func (in *Intake) Counts() (committed, refused int64) {
	return in.committed.Load(), in.refused.Load()
}

// printable renders a barcode for a log line without control bytes.
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			out = append(out, '·')
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

package station

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	upsCode  = "1Z999AA10123456784"
	uspsCode = "9400111899223855718403"
)

// jobs is a label printer that takes every job at once, or, while held,
// keeps them as a printer out of paper does.
type jobs struct {
	mu   sync.Mutex
	got  []string
	held bool
}

func (j *jobs) Submit(job []byte, sent func()) {
	j.mu.Lock()
	if j.held {
		j.mu.Unlock()
		return // never sent: the daemon stops before the paper is back
	}
	j.got = append(j.got, string(job))
	j.mu.Unlock()
	sent()
}

func (j *jobs) labels() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.got...)
}

type rig struct {
	t       *testing.T
	path    string
	store   *store.Outbox
	st      *Station
	printer *jobs
	cancel  context.CancelFunc
	done    chan error
	t0      time.Time
}

func newRig(t *testing.T, path string, mod func(*Config)) *rig {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "buffer.db")
	}
	o, err := store.Open(context.Background(), store.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	cls, err := barcode.NewClassifier([]barcode.Rule{{Kind: barcode.KindRecipient, Prefix: "EMP-"}, {Kind: barcode.KindLocation, Prefix: "MS-"},
		{Kind: barcode.KindLocation, Prefix: "SHELF-"}, {Kind: barcode.KindRound, Prefix: "RND-"},
		{Kind: barcode.KindAction, Prefix: "ACT-RECEIVE", Action: "receive"}, {Kind: barcode.KindAction, Prefix: "ACT-MOVE", Action: "move"},
		{Kind: barcode.KindAction, Prefix: "ACT-OUT", Action: "out_for_delivery"}, {Kind: barcode.KindAction, Prefix: "ACT-DELIVER", Action: "deliver"},
		{Kind: barcode.KindAction, Prefix: "ACT-RETURN", Action: "return"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "dock-1", Appliance: "mr-test", Scale: "dock-scale", Printer: "dock-printer",
		WeightWindow: 300 * time.Millisecond, DuplicateWindow: 30 * time.Second, AttachWindow: 30 * time.Second, Classifier: cls}
	if mod != nil {
		mod(&cfg)
	}
	r := &rig{t: t, path: path, store: o, printer: &jobs{}, t0: time.Now()}
	r.st = New(cfg, o, r.printer)
	t.Cleanup(func() { r.stop(); o.Close() })
	return r
}

func (r *rig) run() {
	r.t.Helper()
	if err := r.st.Recover(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.st.Run(ctx) }()
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.cancel()
		if err := <-r.done; err != nil {
			r.t.Error(err)
		}
		r.cancel = nil
	}
}

// scan commits a scan at the station, as the intake does, at t0+offset.
func (r *rig) scan(code string, offset time.Duration, submit bool) event.Event {
	r.t.Helper()
	ev, err := r.store.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeScan,
		Time: r.t0.Add(offset), Device: "dock-scanner", Station: "dock-1", Barcode: []byte(code)})
	if err != nil {
		r.t.Fatal(err)
	}
	if submit {
		r.st.Submit(ev)
	}
	return ev
}

// events returns the committed events of the given type, oldest first.
func (r *rig) events(typ event.Type) []event.Event {
	r.t.Helper()
	got, err := r.store.Recent(context.Background(), 1000, typ)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]event.Event, len(got))
	for i := range got {
		out[len(got)-1-i] = got[i].Event
	}
	return out
}

func (r *rig) waitEvents(typ event.Type, n int) []event.Event {
	r.t.Helper()
	return waitfor.Value(r.t, 10*time.Second, fmt.Sprintf("%d %s events", n, typ), func() []event.Event { return r.events(typ) },
		func(got []event.Event) bool { return len(got) >= n })
}

func (r *rig) unresolved() int {
	got, err := r.store.Unresolved(context.Background(), "dock-1")
	if err != nil {
		r.t.Fatal(err)
	}
	return len(got)
}

func kg(v float64, stable bool) scale.Reading {
	st := scale.StatusStable
	if !stable {
		st = scale.StatusMotion
	}
	return scale.Reading{Device: "dock-scale", Value: v, Unit: scale.Kilogram, Stable: stable, Status: st, At: time.Now()}
}

func TestParcelWithSettledWeightAndLabel(t *testing.T) {
	r := newRig(t, "", nil)
	r.run()
	r.st.Weigh(kg(1.25, true))
	scan := r.scan(upsCode, 0, true)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	p := got.Parcel
	if p.Carrier != "ups" || p.Tracking != upsCode || p.Check != "valid" || p.Raw != upsCode || got.ScanID != scan.ID || got.Station != "dock-1" {
		t.Fatalf("parcel.received = %+v %+v", got, p)
	}
	if p.Weight == nil || p.Weight.Value != 1.25 || p.Weight.Unit != "kg" || p.Weight.Grams != 1250 || !p.Weight.Stable {
		t.Fatalf("weight = %+v", p.Weight)
	}
	printed := r.waitEvents(event.TypeLabelPrinted, 1)[0]
	if printed.ParcelID != got.ID || printed.Printer != "dock-printer" {
		t.Fatalf("label.printed = %+v", printed)
	}
	labels := r.printer.labels()
	if len(labels) != 1 || !strings.Contains(labels[0], got.ID) || !strings.Contains(labels[0], upsCode) {
		t.Fatalf("labels = %q", labels)
	}
	if n := r.unresolved(); n != 0 {
		t.Fatalf("%d scans unresolved", n)
	}
}

func TestWeightSettlesWithinWindow(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.WeightWindow = 5 * time.Second })
	r.run()
	r.st.Weigh(kg(0, true)) // empty scale
	r.scan(upsCode, 0, true)
	time.Sleep(50 * time.Millisecond)
	r.st.Weigh(kg(0.8, false))
	r.st.Weigh(kg(2.1, false))
	r.st.Weigh(kg(2.04, true))
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	if w := got.Parcel.Weight; w == nil || w.Value != 2.04 || !w.Stable {
		t.Fatalf("weight = %+v, want the settled 2.04 kg", w)
	}
}

func TestUnstableScaleRecordsWhatItHas(t *testing.T) {
	r := newRig(t, "", nil)
	r.run()
	r.st.Weigh(kg(3.3, false))
	r.scan(upsCode, 0, true)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	if w := got.Parcel.Weight; w == nil || w.Value != 3.3 || w.Stable {
		t.Fatalf("weight = %+v, want 3.3 kg unstable", w)
	}
}

func TestNoWeightWhenScaleSilentOrNotReady(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.ScaleReady = func() bool { return false } })
	r.run()
	r.st.Weigh(kg(1, true)) // a reading from before the scale went away
	r.scan(upsCode, 0, true)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	if got.Parcel.Weight != nil {
		t.Fatalf("weight = %+v from a scale that is not ready", got.Parcel.Weight)
	}
}

func TestDuplicateWithinWindow(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.DuplicateWindow = "", 10*time.Second })
	r.run()
	r.scan(upsCode, 0, true)
	r.scan(strings.ToLower(upsCode), 2*time.Second, true) // same parcel, read differently
	r.scan(uspsCode, 3*time.Second, true)
	r.scan(upsCode, 11*time.Second, true) // outside the window: received again
	r.waitEvents(event.TypeParcelReceived, 3)
	waitfor.True(t, 10*time.Second, "the duplicate and the parcels counted", func() bool {
		s := r.st.Stats()
		return s.Duplicates == 1 && s.Received == 3
	})
	got := r.events(event.TypeParcelReceived)
	if len(got) != 3 {
		t.Fatalf("%d parcel.received, want 3", len(got))
	}
	if got[0].Parcel.Tracking != upsCode || got[1].Parcel.Carrier != "usps" || got[2].Parcel.Tracking != upsCode {
		t.Fatalf("parcels = %v %v %v", got[0].Parcel, got[1].Parcel, got[2].Parcel)
	}
	if s := r.st.Stats(); s.Duplicates != 1 || s.Received != 3 {
		t.Fatalf("stats = %+v", s)
	}
	if n := r.unresolved(); n != 0 {
		t.Fatalf("%d scans unresolved; the duplicate must be resolved too", n)
	}
}

func TestRecipientBeforeAndAfter(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale = "" })
	r.run()
	badge := r.scan("EMP-0042", 0, true)
	r.scan(upsCode, time.Second, true)
	r.scan("MS-4.12", 2*time.Second, true) // right after: updates the parcel
	r.scan("EMP-0077", 3*time.Second, true)
	r.scan(uspsCode, 4*time.Second, true) // takes the held badge
	got := r.waitEvents(event.TypeParcelReceived, 2)
	if got[0].Recipient != "EMP-0042" || got[0].Location != "" || got[1].Recipient != "EMP-0077" {
		t.Fatalf("recipients = %q %q", got[0].Recipient, got[1].Recipient)
	}
	upd := r.waitEvents(event.TypeParcelUpdated, 1)
	if len(upd) != 1 || upd[0].ParcelID != got[0].ID || upd[0].Location != "MS-4.12" {
		t.Fatalf("parcel.updated = %+v", upd)
	}
	if n := r.unresolved(); n != 0 {
		t.Fatalf("%d scans unresolved", n)
	}
	_ = badge
	// The station updates what it remembers just after the commit that
	// the store reported above: wait for it rather than race it.
	waitfor.True(t, 5*time.Second, "the station remembers both parcels, the first on its shelf", func() bool {
		recent := r.st.Recent()
		return len(recent) == 2 && recent[1].Location == "MS-4.12" && recent[1].Recipient == "EMP-0042"
	})
}

func TestHeldCodeExpires(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.AttachWindow = "", 200*time.Millisecond })
	r.t0 = time.Now()
	r.run()
	r.scan("EMP-0042", 0, true)
	deadline := time.Now().Add(5 * time.Second)
	for r.unresolved() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("held badge never resolved after its window")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.scan(upsCode, time.Second, true)
	if got := r.waitEvents(event.TypeParcelReceived, 1); got[0].Recipient != "" {
		t.Fatalf("expired badge attached: %+v", got[0])
	}
}

func TestRecoverResolvesLeftoverScans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	r := newRig(t, path, func(c *Config) { c.Scale = "" })
	// Committed, but the station never saw them (a power cut).
	r.scan("EMP-0042", 0, false)
	r.scan(upsCode, time.Second, false)
	r.scan(upsCode, 2*time.Second, false) // duplicate
	r.scan(uspsCode, 3*time.Second, false)
	r.store.Close()

	r2 := newRig(t, path, func(c *Config) { c.Scale = "" })
	r2.run()
	got := r2.events(event.TypeParcelReceived)
	if len(got) != 2 || got[0].Recipient != "EMP-0042" || got[0].Parcel.Tracking != upsCode || got[1].Parcel.Carrier != "usps" {
		t.Fatalf("recovered parcels = %+v", got)
	}
	if got[0].Parcel.Weight != nil {
		t.Fatalf("a recovered parcel has a weight it cannot know: %+v", got[0].Parcel.Weight)
	}
	if n := r2.unresolved(); n != 0 {
		t.Fatalf("%d scans still unresolved", n)
	}
	if len(r2.printer.labels()) != 0 {
		t.Fatal("labels printed for recovered parcels; a reprint is the clerk's choice")
	}
	// A rescan of the same parcel right after the restart is still a duplicate.
	r2.t0 = r.t0
	r2.scan(upsCode, 4*time.Second, true)
	waitfor.True(t, 10*time.Second, "the rescan counted as a duplicate", func() bool { return r2.st.Stats().Duplicates == 1 })
	if n := len(r2.events(event.TypeParcelReceived)); n != 2 {
		t.Fatalf("%d parcels after a rescan, want 2", n)
	}
	r2.stop()
	r2.store.Close()

	r3 := newRig(t, path, func(c *Config) { c.Scale = "" })
	r3.run()
	if n := len(r3.events(event.TypeParcelReceived)); n != 2 {
		t.Fatalf("second recovery produced %d parcels, want still 2", n)
	}
	if err := r3.st.Reprint(got[1].ID); err != nil {
		t.Fatal(err)
	}
	if l := r3.printer.labels(); len(l) != 1 || !strings.Contains(l[0], uspsCode) {
		t.Fatalf("reprint labels = %q", l)
	}
	if err := r3.st.Reprint("nope"); err == nil {
		t.Fatal("reprint of an unknown parcel accepted")
	}
}

func TestManualEntryCarriesRecipientAndWeight(t *testing.T) {
	r := newRig(t, "", nil)
	r.run()
	ev, err := r.store.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeScan, Time: r.t0,
		Station: "dock-1", Manual: true, Barcode: []byte(uspsCode), Recipient: "Frau Müller",
		EnteredWeight: &event.Weight{Value: 750, Unit: "g", Grams: 750, Stable: true}})
	if err != nil {
		t.Fatal(err)
	}
	r.st.Submit(ev)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	if !got.Manual || got.Recipient != "Frau Müller" || got.Parcel.Weight == nil || got.Parcel.Weight.Grams != 750 || got.Parcel.Carrier != "usps" {
		t.Fatalf("manual parcel = %+v %+v", got, got.Parcel)
	}
}

func TestDuplicateMemoryBoundedByWindow(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.DuplicateWindow = "", 10*time.Second })
	r.run()
	const n = 300
	for i := range n {
		r.scan(fmt.Sprintf("PKG%06d", i), time.Duration(i)*time.Second, true)
	}
	last := fmt.Sprintf("PKG%06d", n-1)
	r.scan(last, time.Duration(n)*time.Second, true) // within the window: a duplicate
	r.waitEvents(event.TypeParcelReceived, n)
	waitfor.True(t, 10*time.Second, "the duplicate counted", func() bool { return r.st.Stats().Duplicates == 1 })
	// One parcel a second with a 10 s window: the codes of the last 10 s
	// (received at 290 s to 299 s), not one per parcel ever seen.
	if got := r.st.Remembered(); got != 10 {
		t.Fatalf("%d codes remembered after %d parcels with a 10s window; want 10", got, n)
	}
}

func TestDuplicateWindowZeroDisablesDetection(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.DuplicateWindow = "", 0 })
	r.run()
	r.scan(upsCode, 0, true)
	r.scan(upsCode, time.Second, true)
	r.waitEvents(event.TypeParcelReceived, 2)
	if s := r.st.Stats(); s.Duplicates != 0 || s.Received != 2 {
		t.Fatalf("stats = %+v; with duplicate_window 0 every scan is a parcel", s)
	}
	if got := r.st.Remembered(); got != 0 {
		t.Fatalf("%d codes remembered with duplicate detection off", got)
	}
}

// TestBytesThatAreNotUTF8 keeps a code's exact bytes in raw_b64 and puts
// only valid UTF-8 into the text fields of the event and the label.
func TestBytesThatAreNotUTF8(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale = "" })
	r.run()
	code := "PKG-\xff\xfe-42"
	r.scan(code, 0, true)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0].Parcel
	raw, err := base64.StdEncoding.DecodeString(got.RawB64)
	if err != nil || string(raw) != code {
		t.Fatalf("raw_b64 %q decodes to %q (%v), want the exact bytes %q", got.RawB64, raw, err, code)
	}
	if !utf8.ValidString(got.Raw) || !utf8.ValidString(got.Tracking) || !strings.Contains(got.Raw, "\uFFFD") {
		t.Fatalf("raw %q, tracking %q: want valid UTF-8 with U+FFFD for the bad bytes", got.Raw, got.Tracking)
	}
	labels := waitfor.Value(t, 10*time.Second, "the label", r.printer.labels, func(l []string) bool { return len(l) == 1 })
	if !utf8.ValidString(labels[0]) {
		t.Fatalf("the label holds bytes that are not UTF-8: %q", labels[0])
	}
	// A valid code has no raw_b64.
	r.scan("1Z999AA10123456784", time.Second, true)
	if p := r.waitEvents(event.TypeParcelReceived, 2)[1].Parcel; p.RawB64 != "" {
		t.Fatalf("raw_b64 %q on a valid UTF-8 code", p.RawB64)
	}
}

// TestQueuedLabelSurvivesARestart: a label that its printer could not take
// before the daemon stopped is printed after the restart, and recorded as
// printed once.
func TestQueuedLabelSurvivesARestart(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale = "" })
	r.printer.held = true
	r.run()
	r.scan(upsCode, 0, true)
	r.waitEvents(event.TypeParcelReceived, 1)
	jobsLeft := func(o *store.Outbox) int {
		j, err := o.LabelJobs(context.Background(), "dock-1")
		if err != nil {
			t.Fatal(err)
		}
		return len(j)
	}
	// Queued in the parcel's own transaction: there as soon as it is.
	if n := jobsLeft(r.store); n != 1 {
		t.Fatalf("%d label jobs once the parcel is recorded; want its label waiting", n)
	}
	r.stop()
	r.store.Close()

	r2 := newRig(t, r.path, func(c *Config) { c.Scale = "" })
	r2.run()
	printed := r2.waitEvents(event.TypeLabelPrinted, 1)
	if len(r2.printer.labels()) != 1 || !strings.Contains(r2.printer.labels()[0], "1Z999AA10123456784") {
		t.Fatalf("after the restart the printer got %q", r2.printer.labels())
	}
	parcel := r2.events(event.TypeParcelReceived)[0]
	if printed[0].ParcelID != parcel.ID {
		t.Fatalf("label.printed names %s, want the parcel %s", printed[0].ParcelID, parcel.ID)
	}
	if n := jobsLeft(r2.store); n != 0 {
		t.Fatalf("%d label jobs left after printing", n)
	}
}

// TestRememberKeepsTheNewest200: the reprint list holds the newest
// recentLimit parcels however many were remembered, and an update to an
// older one changes nothing.
func TestRememberKeepsTheNewest200(t *testing.T) {
	s := &Station{}
	for i := range 450 {
		s.mu.Lock()
		s.remember(&Parcel{ID: fmt.Sprintf("p%03d", i)})
		s.mu.Unlock()
	}
	got := s.Recent()
	if len(got) != recentLimit || got[0].ID != "p449" || got[recentLimit-1].ID != "p250" {
		t.Fatalf("recent: %d parcels from %s to %s; want %d from p449 to p250", len(got), got[0].ID, got[len(got)-1].ID, recentLimit)
	}
	s.mu.Lock()
	s.applyUpdate("p249", event.Event{Location: "MS-1"})
	s.applyUpdate("p250", event.Event{Location: "MS-2"})
	s.mu.Unlock()
	for _, p := range s.Recent() {
		if (p.ID == "p250") != (p.Location == "MS-2") || p.Location == "MS-1" {
			t.Fatalf("after updating p249 and p250: %s is at %q", p.ID, p.Location)
		}
	}
	if len(s.recent) >= 2*recentLimit {
		t.Fatalf("%d parcels held; the list is trimmed at %d", len(s.recent), 2*recentLimit)
	}
}

// TestRecoverWithTheClockBehind: a box whose wall clock starts an hour
// behind its stored scans (no real-time clock, no NTP yet) still counts a
// leftover rescan as a duplicate, and goes on detecting duplicates of live
// scans after it.
func TestRecoverWithTheClockBehind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	r := newRig(t, path, func(c *Config) { c.Scale = "" })
	r.scan(upsCode, 0, false)
	r.scan(upsCode, 2*time.Second, false) // a duplicate, left unresolved
	r.store.Close()

	behind := clock.NewOffset(clock.Real{}, -time.Hour)
	r2 := newRig(t, path, func(c *Config) { c.Scale = ""; c.Clock = behind })
	r2.run()
	if n := len(r2.events(event.TypeParcelReceived)); n != 1 || r2.st.Stats().Duplicates != 1 {
		t.Fatalf("after recovery: %d parcels, %d duplicates; want 1 and 1", n, r2.st.Stats().Duplicates)
	}
	// Live scans, on the box's clock: a rescan is a duplicate, a new code
	// a parcel, and its rescan a duplicate again.
	r2.t0 = behind.Now()
	r2.scan(upsCode, time.Second, true)
	r2.scan(uspsCode, 2*time.Second, true)
	r2.scan(uspsCode, 3*time.Second, true)
	waitfor.True(t, 10*time.Second, "three duplicates", func() bool { return r2.st.Stats().Duplicates == 3 })
	if n := len(r2.events(event.TypeParcelReceived)); n != 2 {
		t.Fatalf("%d parcels, want 2", n)
	}
}

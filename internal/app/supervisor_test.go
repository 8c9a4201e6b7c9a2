package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl/zpltest"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a box with a PTY scanner and printer fakes, whose uplink points
// at a dead broker: no mosquitto is needed to switch its configs.
type rig struct {
	t        *testing.T
	dir      string
	scanner  *serialtest.Scanner
	printers []*zpltest.Printer
	logs     *records
	hash     string
}

func newRig(t *testing.T, printers int) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dir: dir, logs: &records{}}
	r.scanner = serialtest.New(t, filepath.Join(dir, "scanner"))
	for range printers {
		r.printers = append(r.printers, zpltest.Start(t))
	}
	h, err := bcrypt.GenerateFromPassword([]byte("secret-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	r.hash = string(h)
	return r
}

// deadBroker is a loopback address nothing listens on.
func deadBroker(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "mqtt://" + addr
}

// yaml is a config whose station prints on printer i; trial is the
// config_trial, and site changes what is not the front.
func (r *rig) yaml(printer int, trial, site string) string {
	return fmt.Sprintf(`version: 1
appliance: {id: mr-app-test, site: %s}
storage: {path: %s}
uplink: {brokers: ["%s"], insecure: true, reconnect_min: 50ms, reconnect_max: 200ms, connect_timeout: 200ms}
fleet: {config_trial: %s, telemetry_interval: 0, probe_interval: 0}
devices:
  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
  - {name: dock-printer, kind: printer, driver: zpl, address: "tcp://%s", poll_interval: 50ms, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner, printer: dock-printer, duplicate_window: 0s}
web:
  listen: 127.0.0.1:0
  users: [{name: clerk, role: clerk, password_hash: "%s"}]
`, site, filepath.Join(r.dir, "buffer.db"), deadBroker(r.t), trial, r.scanner.Link, r.printers[printer].Addr(), r.hash)
}

func (r *rig) config(text string) *config.Config {
	r.t.Helper()
	cfg, err := config.Parse(filepath.Join(r.dir, "mailroomd.yaml"), []byte(text))
	if err != nil {
		r.t.Fatal(err)
	}
	return cfg
}

func (r *rig) supervisor(local *config.Config) *Supervisor {
	r.t.Helper()
	s, err := NewSupervisor(local, Options{Version: "test", Log: slog.New(r.logs), TrialPoll: 10 * time.Millisecond,
		AlertGrace: 50 * time.Millisecond})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	return s
}

// push hands a verified desired config to the supervisor as the fleet
// link would, and returns the status it answered.
func push(s *Supervisor, version int64, yaml string) string {
	return s.onConfig(context.Background(), envelope.Payload{Version: version, Config: yaml}, "it-test").Status
}

// inUse waits until the given remote config version is in use and the
// loop has finished switching to it.
func inUse(t *testing.T, s *Supervisor, version int64) {
	t.Helper()
	waitfor.True(t, 10*time.Second, fmt.Sprintf("remote config %d in use", version), func() bool {
		var ok bool
		s.call(func() {
			s.mu.Lock()
			pending := s.pending != nil
			s.mu.Unlock()
			ok = !pending && len(s.wake) == 0 && s.remote.InUse() == version
		})
		return ok
	})
}

// inspect runs fn on the supervisor's loop, where its state may be read.
func inspect(t *testing.T, s *Supervisor, fn func()) {
	t.Helper()
	if !s.call(fn) {
		t.Fatal("the supervisor's loop has stopped")
	}
}

// front returns the running generation (on the loop, see inspect).
func (s *Supervisor) front() (g *generation) {
	s.call(func() { g = s.app.front.Load() })
	return g
}

// withListen puts the status page on addr.
func withListen(yaml, addr string) string {
	return strings.Replace(yaml, "listen: 127.0.0.1:0", "listen: "+addr, 1)
}

func TestReconfigureKeepsOneStationPerNameAndUsesTheNewPrinter(t *testing.T) {
	r := newRig(t, 4)
	s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
	defer s.Stop()
	for v := int64(1); v <= 3; v++ {
		if st := push(s, v, r.yaml(int(v), "1m", "berlin")); st != remoteconfig.StatusApplying {
			t.Fatalf("config %d: status %q", v, st)
		}
		inUse(t, s, v)
		g := s.front()
		if len(g.stations) != 1 || len(g.byName) != 1 || len(g.byScanner) != 1 {
			t.Fatalf("after switch %d: %d stations, %d by name, %d by scanner; want exactly one each",
				v, len(g.stations), len(g.byName), len(g.byScanner))
		}
	}
	g := s.front()
	ev, err := actions{g}.Manual(context.Background(), intake.Manual{Station: "dock-1", Code: "1Z999AA10123456784", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, "the label printed on the printer of the newest config", func() bool {
		return len(r.printers[3].Labels()) == 1
	})
	for i := range 3 {
		if n := len(r.printers[i].Labels()); n != 0 {
			t.Fatalf("printer %d of an old config got %d labels", i, n)
		}
	}
	received := waitfor.Value(t, 10*time.Second, "parcel.received of the manual entry", func() []store.Stored {
		got, _ := s.app.store.Recent(context.Background(), 10, event.TypeParcelReceived)
		return got
	}, func(v []store.Stored) bool { return len(v) == 1 })
	if received[0].Event.ScanID != ev.ID || received[0].Event.Station != "dock-1" {
		t.Fatalf("parcel.received %+v does not resolve the manual entry %s", received[0].Event, ev.ID)
	}
	// Nothing of the old generations is subscribed any more.
	if n := s.app.hotplug.Subscribers(); n != len(g.devices) {
		t.Fatalf("%d hotplug subscriptions, want %d (the running generation's devices)", n, len(g.devices))
	}
}

func TestReconfigureDoesNotLeakGoroutinesOrSubscriptions(t *testing.T) {
	r := newRig(t, 2)
	s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
	inUse(t, s, 0)
	waitfor.True(t, 5*time.Second, "devices connected", func() bool { return s.app.health.DeviceConnectedNow("dock-printer") })
	before := goroutines()
	for v := int64(1); v <= 20; v++ {
		push(s, v, r.yaml(int(v%2), "1m", "berlin"))
		inUse(t, s, v)
	}
	waitfor.True(t, 5*time.Second, "devices connected", func() bool { return s.app.health.DeviceConnectedNow("dock-printer") })
	// A few goroutines come and go (a reconnecting driver, a page's
	// pusher); one left per switch would be twenty.
	waitfor.Value(t, 10*time.Second, "goroutines back at the baseline", goroutines,
		func(n int) bool { return n <= before+3 })
	if n := s.app.hotplug.Subscribers(); n != 2 {
		t.Fatalf("%d hotplug subscriptions after 20 switches, want 2", n)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func goroutines() int { return runtime.NumGoroutine() }

// TestStopDuringReconfigureLosesNoScan writes codes to the scanner while
// configs are switched and the box is stopped in the middle of a switch,
// then starts it again on the same buffer and tty: every code written is
// committed exactly once, in order.
func TestStopDuringReconfigureLosesNoScan(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			r := newRig(t, 2)
			local := r.config(r.yaml(0, "1m", "berlin"))
			s := r.supervisor(local)
			// Codes written before the driver put the tty in line mode
			// would be cooked by the line discipline (CR to NL).
			r.waitLog(t, "tty line mode", 1)
			var written []string
			var mu sync.Mutex
			stopWriting := make(chan struct{})
			writerDone := make(chan struct{})
			go func() {
				defer close(writerDone)
				// At most 200 codes: they fit the tty's buffer while no
				// driver reads it, so a write never blocks.
				for i := range 200 {
					select {
					case <-stopWriting:
						return
					default:
					}
					code := fmt.Sprintf("PKG-%d-%05d", round, i)
					if r.scanner.Scan(code) == nil {
						mu.Lock()
						written = append(written, code)
						mu.Unlock()
					}
					time.Sleep(time.Millisecond)
				}
			}()
			push(s, 1, r.yaml(1, "1m", "berlin")) // the front only
			push(s, 2, r.yaml(0, "1m", "hamburg"))
			time.Sleep(time.Duration(round*7) * time.Millisecond) // stop at a different point of the switch each round
			stopped := make(chan error, 1)
			go func() { stopped <- s.Stop() }()
			select {
			case err := <-stopped:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("stop during a config switch did not return")
			}
			close(stopWriting)
			<-writerDone

			// Start again: what the first run had not taken from the tty is
			// read now.
			s = r.supervisor(local)
			want := slices.Clone(written)
			if err := waitfor.Until(20*time.Second, func() bool { return len(scanCodes(t, s)) >= len(want) }); err != nil {
				got := scanCodes(t, s)
				i := firstDiff(got, want)
				t.Errorf("%v: %d of %d codes committed; first difference at %d: got %q, want %q", err, len(got), len(want), i,
					got[max(0, i-2):min(len(got), i+3)], want[max(0, i-2):min(len(want), i+3)])
			}
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			got := scanCodes(t, nil, filepath.Join(r.dir, "buffer.db"))
			if !slices.Equal(got, want) {
				t.Fatalf("committed %d codes, written %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			for _, rec := range r.logs.all() {
				if rec.Level >= slog.LevelError && strings.Contains(rec.String(), store.ErrClosed.Error()) {
					t.Fatalf("a code hit the closed buffer: %s", rec.String())
				}
			}
		})
	}
}

// waitLog waits until the n-th record whose message is msg.
func (r *rig) waitLog(t *testing.T, msg string, n int) {
	t.Helper()
	waitfor.True(t, 10*time.Second, fmt.Sprintf("log %q %d times", msg, n), func() bool {
		c := 0
		for _, rec := range r.logs.all() {
			if rec.Message == msg {
				c++
			}
		}
		return c >= n
	})
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// scanCodes returns the codes of the committed scan events, in seq order,
// from the running supervisor's buffer or from the file at path.
func scanCodes(t *testing.T, s *Supervisor, path ...string) []string {
	t.Helper()
	var o *store.Outbox
	if s != nil {
		o = s.app.store
	} else {
		var err error
		if o, err = store.Open(context.Background(), store.Options{Path: path[0]}); err != nil {
			t.Fatal(err)
		}
		defer o.Close()
	}
	got, err := o.Recent(context.Background(), 1_000_000, event.TypeScan)
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]string, 0, len(got))
	for i := len(got) - 1; i >= 0; i-- {
		codes = append(codes, string(got[i].Event.Barcode))
	}
	return codes
}

func TestNewerDesiredConfigWinsAndTheOlderNeverRollsItBack(t *testing.T) {
	r := newRig(t, 1)
	s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
	defer s.Stop()
	// Two configs in quick succession, the broker down: the first has a
	// short trial. The loop may or may not take the first before the
	// second; either way only the newest stays, and the first's trial
	// never ends the second's.
	push(s, 1, r.yaml(0, "200ms", "hamburg"))
	push(s, 2, r.yaml(0, "1h", "munich"))
	inUse(t, s, 2)
	time.Sleep(600 * time.Millisecond) // three times the first config's trial
	inspect(t, s, func() {
		if v := s.remote.InUse(); v != 2 {
			t.Errorf("config %d in use after the first config's trial time; want 2", v)
		}
		if s.cfg.Appliance.Site != "munich" {
			t.Errorf("running site %q, want munich", s.cfg.Appliance.Site)
		}
		if s.trial == nil || s.trial.version != 2 {
			t.Errorf("trial %+v, want the trial of version 2", s.trial)
		}
	})
	// An older config arriving after a newer one is ignored.
	if st := push(s, 1, r.yaml(0, "1m", "hamburg")); st != remoteconfig.StatusIgnored {
		t.Fatalf("older config: status %q, want ignored", st)
	}
}

func TestTrialRollsBackToTheLastProvenConfig(t *testing.T) {
	r := newRig(t, 1)
	s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
	defer s.Stop()
	push(s, 1, r.yaml(0, "300ms", "hamburg"))
	push(s, 2, r.yaml(0, "300ms", "munich"))
	waitfor.True(t, 10*time.Second, "rolled back to the local config", func() bool {
		last, _ := s.remote.LastReport()
		return strings.Contains(string(last), remoteconfig.StatusRolledBack)
	})
	inspect(t, s, func() {
		if v := s.remote.InUse(); v != 0 {
			t.Errorf("config %d in use after the rollback; want 0, the local file (neither 1 nor 2 ever connected)", v)
		}
		if s.cfg.Appliance.Site != "berlin" || !s.running {
			t.Errorf("running %v with site %q after the rollback; want the local config", s.running, s.cfg.Appliance.Site)
		}
	})
}

func TestStopDuringTrialStopsAtOnce(t *testing.T) {
	r := newRig(t, 1)
	s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
	push(s, 1, r.yaml(0, "1h", "hamburg"))
	inUse(t, s, 1)
	began := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("stop during a trial took %s", d)
	}
	// Stopped during the trial: the next start continues it.
	s2, err := NewSupervisor(r.config(r.yaml(0, "1m", "berlin")), Options{Log: slog.New(r.logs)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, trial, err := s2.remote.Effective()
	if err != nil || !trial || cfg.Appliance.Site != "hamburg" {
		t.Fatalf("after a stop in trial: site %q, trial %v, err %v; want hamburg still in trial", cfg.Appliance.Site, trial, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
}

func TestFailedSwitchRollsBackAndKeepsRunning(t *testing.T) {
	for _, tc := range []struct {
		name, site string
	}{
		{"front only", "berlin"}, // Reconfigure fails: the previous front runs again
		{"whole app", "hamburg"}, // the new App does not start: the previous App starts again
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1)
			s := r.supervisor(r.config(r.yaml(0, "1m", "berlin")))
			defer s.Stop()
			// The status page's port is taken: the config checks, but does
			// not start.
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			if st := push(s, 1, withListen(r.yaml(0, "1m", tc.site), busy.Addr().String())); st != remoteconfig.StatusApplying {
				t.Fatalf("status %q, want applying", st)
			}
			waitfor.True(t, 10*time.Second, "rolled back", func() bool {
				last, _ := s.remote.LastReport()
				return strings.Contains(string(last), remoteconfig.StatusRolledBack)
			})
			inspect(t, s, func() {
				if !s.running || s.cfg.Appliance.Site != "berlin" || s.remote.InUse() != 0 {
					t.Errorf("after a failed switch: running %v, site %q, in use %d; want the local config running",
						s.running, s.cfg.Appliance.Site, s.remote.InUse())
				}
				if g := s.app.front.Load(); len(g.stations) != 1 || g.web == nil {
					t.Errorf("after a failed switch: %d stations, page %v", len(g.stations), g.web != nil)
				}
			})
		})
	}
}

// records is a slog handler that keeps every record.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *records) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *records) WithGroup(string) slog.Handler      { return h }

func (h *records) all() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]record, len(h.recs))
	for i, r := range h.recs {
		out[i] = record{r}
	}
	return out
}

type record struct{ slog.Record }

func (r record) String() string {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	return b.String()
}

// Package app is the daemon's application: the subsystems of one running
// configuration (buffer, uplink, intake, fleet link, metrics) and the
// front that a config change rebuilds (devices, stations, status page),
// and the Supervisor, the one goroutine that owns the daemon's life: it
// starts and stops the application, applies remote configs, runs their
// trial and rolls them back, one message at a time.
//
// The daemon's command line (package main) only parses flags, sets up
// logging and signals, and hands over to a Supervisor.
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroomd/mailroomd/drivers/hotplug"
	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/logring"
	"github.com/mailroomd/mailroomd/internal/metrics"
	"github.com/mailroomd/mailroomd/internal/ocr"
	"github.com/mailroomd/mailroomd/internal/photo"
	"github.com/mailroomd/mailroomd/internal/seal"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/web"
)

// ConditionLoginLockout is raised while a status page user is locked out
// after repeated failed logins.
const ConditionLoginLockout = "security.login_lockout"

// ConditionStoreRecovered is raised when the buffer database was unreadable
// at start and has been moved aside and replaced.
const ConditionStoreRecovered = "store.recovered"

// Options are what the daemon gives the application: nothing in this
// package reads global state.
type Options struct {
	// Version is the daemon's version, published in status and telemetry.
	Version string
	// Log receives every subsystem's log lines.
	Log *slog.Logger
	// Clock is the daemon's clock; nil means the system clock.
	Clock clock.Clock
	// Logs holds recent log lines for the logs command; nil disables it.
	Logs *logring.Ring
	// Restart asks for a graceful restart; nil disables the command.
	Restart func()
	// Handover asks for a clean stop without restart: an updater takes over.
	Handover func()
	// Args are the daemon's arguments (without the program name), for the
	// updater that starts the new version the same way.
	Args []string
	// TrialPoll is how often a config in trial checks its uplink; zero
	// means 100ms.
	TrialPoll time.Duration
	// AlertGrace is how long restored alerts are kept, after a start or a
	// config switch, before an absent condition clears them; zero means
	// fleet.DefaultSettle.
	AlertGrace time.Duration
	// Started is when the daemon started; zero means when the Supervisor
	// was made. Status and telemetry report it across config switches.
	Started time.Time
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.TrialPoll <= 0 {
		o.TrialPoll = 100 * time.Millisecond
	}
	if o.Started.IsZero() {
		o.Started = o.Clock.Now()
	}
}

// hooks are what the Supervisor gives each App it builds.
type hooks struct {
	// onConfig takes a verified desired config; it must not block.
	onConfig func(ctx context.Context, p envelope.Payload, keyID string) fleet.ConfigOutcome
	// reported returns the last config report.
	reported func() ([]byte, bool)
	// configTried reports whether a remote config version was considered.
	configTried func(version int64) bool
	// configInUse is the remote config version in use now (0: the local file).
	configInUse func() int64
	// configRefused records a signed config refused as expired.
	configRefused func(version int64, reason string) []byte
	// configVersion is the remote config version in use (0: the local file).
	configVersion int64
}

// App is the set of subsystems of one running configuration, started in
// order and stopped in reverse: buffer, uplink, fleet link, hotplug watcher,
// then the front (stations, devices, status page), which Reconfigure
// replaces whole. Only the Supervisor calls Start, Stop and Reconfigure.
type App struct {
	opts   Options
	hooks  hooks
	log    *slog.Logger
	clock  clock.Clock
	health *health.Tracker
	// base is the config the App was built with. Its non-front parts never
	// change; the front's own config is in the generation.
	base *config.Config

	store   *store.Outbox
	uplink  *uplink.Publisher
	intake  *intake.Intake
	metrics *metrics.Metrics
	hotplug *hotplug.Watcher
	fleet   *fleet.Fleet
	tlsCfg  *tls.Config
	latency atomic.Int64 // last publish latency, ns
	history *web.History
	// auth is the status pages' sign-in state, kept across front switches.
	auth   *web.Auth
	people *people // the recipient directory's index, shared by the fronts
	blobs  *blobstore.Store
	// photoLocks are shared by every photo.Keeper of blobs.
	photoLocks *photo.Locks
	photos     *uplink.BlobSender
	labels     *labelReader // nil when label photos are not read
	changed    chan struct{}

	// front is the running generation; it is swapped whole by Reconfigure.
	front atomic.Pointer[generation]
	gens  atomic.Int64 // generations built, for their names in logs

	bgCtx    context.Context // cancelled by Stop; for the App's own goroutines
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// newApp builds every subsystem from cfg and opens the store. Nothing runs
// until Start.
func newApp(ctx context.Context, cfg *config.Config, opts Options, h hooks) (*App, error) {
	opts.defaults()
	log, clk := opts.Log, opts.Clock
	a := &App{opts: opts, hooks: h, log: log, clock: clk, base: cfg, changed: make(chan struct{}, 1), history: web.NewHistory(),
		auth:    web.NewAuth(clk.Now),
		hotplug: hotplug.NewWatcher(log.With("subsystem", "hotplug"))}
	a.bgCtx, a.bgCancel = context.WithCancel(context.Background())
	a.health = health.NewTracker(clk, func(c health.Condition, cleared bool) {
		if cleared {
			log.Info("condition cleared", "key", c.Key)
		} else {
			log.Warn("condition raised", "key", c.Key, "severity", c.Severity.String(), "msg", c.Message)
		}
	})

	if !allPlaintext(cfg.Uplink.Brokers) {
		var err error
		if a.tlsCfg, err = uplink.LoadTLS(cfg.Uplink.CAFile, cfg.Uplink.CertFile, cfg.Uplink.KeyFile); err != nil {
			return nil, err
		}
	}
	var keys *seal.Keys
	if cfg.Storage.EncryptionKeyFile != "" {
		var err error
		if keys, err = seal.Load(cfg.Storage.EncryptionKeyFile); err != nil {
			return nil, err
		}
	}
	// The sources are read at scrape time only, once everything is wired.
	a.metrics = metrics.New(metrics.Sources{
		Stats:     func(ctx context.Context) (store.Stats, error) { return a.store.Stats(ctx) },
		Ingested:  func() int64 { n, _ := a.intake.Counts(); return n },
		Refused:   func() int64 { _, n := a.intake.Counts(); return n },
		Connected: func() bool { return a.uplink.State().Connected },
		Connects:  func() int64 { return a.uplink.Connects() },
		Devices:   a.health.Devices, Now: clk.Now,
	})
	st, err := store.Open(ctx, store.Options{
		Path: cfg.Storage.Path, MaxPending: cfg.Storage.MaxPending, RetainSent: cfg.Storage.RetainSent.D(), Seal: keys,
		RetainClosed:  cfg.Delivery.RetainClosed.D(),
		PruneInterval: time.Minute, Clock: clk, Logger: log.With("subsystem", "store"),
		ObserveCommit: a.metrics.Committed,
	})
	if err != nil {
		return nil, err
	}
	a.store = st
	a.people = &people{store: st}
	a.blobs = blobstore.New(store.BlobDir(cfg.Storage.Path), keys)
	a.photoLocks = &photo.Locks{}
	if rec := st.Recovery(); rec != nil {
		log.Error("buffer database was unreadable: moved aside and replaced; a new epoch starts",
			"moved_to", rec.MovedTo, "cause", rec.Cause, "salvaged_unsent", rec.Salvaged, "unreadable_unsent", rec.Unreadable,
			"salvage_err", rec.SalvageErr, "epoch", st.Epoch())
		msg := fmt.Sprintf("buffer database was corrupt and moved to %s; %d unsent events salvaged", rec.MovedTo, rec.Salvaged)
		if rec.Unreadable > 0 {
			msg += fmt.Sprintf("; %d unsent events could not be read (seq %s of the old epoch)", rec.Unreadable, strings.Join(rec.UnreadableSeqs, ", "))
		}
		a.health.Set(ConditionStoreRecovered, health.Warning, msg)
	}

	fleetKeys, err := cfg.Fleet.Keys()
	if err != nil {
		st.Close()
		return nil, err
	}
	if a.fleet, err = a.newFleet(ctx, fleetKeys); err != nil {
		st.Close()
		return nil, err
	}
	a.uplink, err = uplink.New(st, uplink.Options{
		Brokers: cfg.Uplink.Brokers, TLS: a.tlsCfg, ClientID: cfg.Appliance.ID, Site: cfg.Appliance.Site,
		TopicPrefix: cfg.Uplink.TopicPrefix, Version: opts.Version, ConfigVersion: h.configVersion,
		Window: cfg.Uplink.InflightWindow, BatchMax: cfg.Uplink.BatchMax, PersonWaiting: st.PersonWaiting,
		KeepAlive: cfg.Uplink.KeepAlive.D(), ConnectTimeout: cfg.Uplink.ConnectTimeout.D(),
		WriteTimeout: cfg.Uplink.WriteTimeout.D(), ReconnectMin: cfg.Uplink.ReconnectMin.D(),
		ReconnectMax: cfg.Uplink.ReconnectMax.D(), ShutdownTimeout: shutdownTimeout(cfg.Uplink.ShutdownTimeout.D()),
		Started: opts.Started,
		Clock:   clk, Logger: log.With("subsystem", "uplink"), Health: a.health,
		OnAck: func(_ int64, latency time.Duration) {
			a.metrics.Acked(latency)
			a.latency.Store(int64(latency))
			a.notifyChanged()
		},
		Subscriptions: a.fleet.Subscriptions(), OnConnect: a.fleet.OnConnect,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.photos = uplink.NewBlobSender(a.uplink, st, a.blobs, cfg.Photos.RetainSent.D(), clk, log.With("subsystem", "photos"), a.health)
	a.photos.Locks = a.photoLocks
	if cfg.Photos.ReadsLabels() {
		reader := ocr.New(cfg.Photos.OCRCommand, time.Minute)
		if err := reader.Check(); err != nil {
			log.Warn("label photos are not read", "err", err)
			a.health.Set(ConditionOCRUnavailable, health.Warning, err.Error())
		} else {
			a.labels = &labelReader{jobs: make(chan labelJob, 64), reader: reader, blobs: a.blobs, store: st, people: a.people,
				privacyID: cfg.Directory.Privacy == config.PrivacyID, appliance: cfg.Appliance.ID, site: cfg.Appliance.Site,
				clock: clk, log: log.With("subsystem", "ocr")}
		}
	}
	a.intake = intake.New(st, cfg.Appliance.ID, cfg.Appliance.Site, nil, log.With("subsystem", "intake"), a.health)
	a.intake.OnCommit = func(ev event.Event) {
		a.history.Scan(ev.Time)
		a.notifyChanged()
	}
	// The chart starts with the scans of the last 24 hours in the buffer,
	// once per App: a rebuilt front shares the same history.
	counts, err := st.EventsPerMinute(ctx, event.TypeScan, clk.Now().Add(-24*time.Hour))
	if err != nil {
		log.Warn("status page chart starts empty", "err", err)
	}
	for _, c := range counts {
		a.history.Scans(c.Minute, c.Count)
	}

	g, err := a.buildGeneration(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	a.front.Store(g)
	return a, nil
}

// notifyChanged tells the status page that something changed.
func (a *App) notifyChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// shutdownTimeout maps the config's "0: do not wait" to the uplink's.
func shutdownTimeout(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func allPlaintext(brokers []string) bool {
	for _, b := range brokers {
		if len(b) < 7 || (b[:7] != "mqtt://" && b[:6] != "tcp://") {
			return false
		}
	}
	return true
}

// Start runs the uplink, the fleet link, the hotplug watcher and the
// front. It does not block.
func (a *App) Start() {
	st, _ := a.store.Stats(context.Background())
	a.log.Info("mailroomd starting", "version", a.opts.Version, "appliance", a.base.Appliance.ID,
		"buffer", a.base.Storage.Path, "epoch", st.Epoch, "last_seq", st.LastSeq, "pending", st.Pending)
	a.goBackground("uplink", func(ctx context.Context) error { return a.uplink.Run(ctx) })
	a.goBackground("photos", a.photos.Run)
	if a.labels != nil {
		a.goBackground("labels", a.labels.Run)
	}
	a.goBackground("fleet", a.fleet.Run)
	a.goBackground("hotplug", a.hotplug.Run)
	a.front.Load().start()
}

// goBackground runs fn until Stop.
func (a *App) goBackground(name string, fn func(context.Context) error) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if err := fn(a.bgCtx); err != nil {
			a.log.Error(name+" stopped", "err", err)
		}
	}()
}

// Stop shuts down in reverse order: the front (devices, and the commits of
// what they read; stations; status page), the hotplug watcher and the
// fleet link, the uplink (letting in-flight publishes settle), then the
// store. With handoff the uplink leaves without publishing an offline
// status: another App takes over at once (a config switch, not a shutdown).
func (a *App) Stop(handoff bool) error {
	a.fleet.Freeze() // the devices' conditions go with them, their causes need not
	a.front.Load().stop()
	if handoff {
		a.uplink.Handoff()
	}
	a.log.Info("stopping uplink")
	a.bgCancel()
	a.bg.Wait()
	st, _ := a.store.Stats(context.Background())
	err := a.store.Close()
	a.log.Info("mailroomd stopped", "last_seq", st.LastSeq, "pending", st.Pending)
	return err
}

// FrontOnly reports whether n differs from the App's config only in
// devices, stations, barcodes or the web server, so that Reconfigure can
// apply it without touching the buffer, the uplink or the fleet link. The
// photos settings are read at the start (the uploader's retention, the
// OCR), so a change of them restarts everything.
func (a *App) FrontOnly(n *config.Config) bool {
	o := a.base
	return reflect.DeepEqual(o.Appliance, n.Appliance) && reflect.DeepEqual(o.Storage, n.Storage) &&
		reflect.DeepEqual(o.Photos, n.Photos) &&
		reflect.DeepEqual(o.Uplink, n.Uplink) && reflect.DeepEqual(o.Fleet, n.Fleet) && reflect.DeepEqual(o.Log, n.Log) &&
		o.Delivery.RetainClosed == n.Delivery.RetainClosed && o.Delivery.Overdue == n.Delivery.Overdue
}

// Reconfigure replaces the front with one built from n (see FrontOnly):
// the running generation is stopped whole, its subscriptions removed, and
// a new one built and started. When n does not build, a generation of the
// previous front config is built again and the error returned.
func (a *App) Reconfigure(n *config.Config) error {
	old := a.front.Load()
	a.log.Info("reconfiguring devices, stations and status page", "generation", old.id)
	a.fleet.Settle() // before the devices, and their conditions, go
	old.stop()
	g, err := a.buildGeneration(n)
	if err != nil {
		var rerr error
		if g, rerr = a.buildGeneration(old.cfg); rerr != nil {
			a.log.Error("cannot rebuild the previous devices either", "err", rerr)
			g = a.emptyGeneration(old.cfg)
		}
	}
	a.front.Store(g)
	g.start()
	return err
}

// settle is how long alerts active at a start are kept without their
// condition: at least fleet.DefaultSettle, and long enough for the uplink
// to try every broker once.
func (a *App) settle() time.Duration {
	if a.opts.AlertGrace > 0 {
		return a.opts.AlertGrace
	}
	u := a.base.Uplink
	return max(fleet.DefaultSettle, time.Duration(len(u.Brokers))*(u.ConnectTimeout.D()+time.Second)+u.ReconnectMin.D())
}

// LinkUp reports whether the uplink is connected.
func (a *App) LinkUp() bool { return a.uplink.State().Connected }

// Fleet returns the fleet link, to report and audit remote configs.
func (a *App) Fleet() *fleet.Fleet { return a.fleet }

var _ uplink.BlobLocker = (*photo.Locks)(nil)

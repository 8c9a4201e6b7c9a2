package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"

	"github.com/mailroomd/mailroomd/drivers/hid"
	"github.com/mailroomd/mailroomd/drivers/hotplug"
	"github.com/mailroomd/mailroomd/drivers/printer"
	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scale/serialscale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/scanner/serialline"
	"github.com/mailroomd/mailroomd/drivers/scanner/sim"
	"github.com/mailroomd/mailroomd/drivers/serialport"
	"github.com/mailroomd/mailroomd/drivers/usbhid"
	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/label"
	"github.com/mailroomd/mailroomd/internal/logring"
	"github.com/mailroomd/mailroomd/internal/metrics"
	"github.com/mailroomd/mailroomd/internal/seal"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/web"
)

// device is one configured device and its driver: a scanner or a scale.
type device struct {
	name    string
	scanner scanner.Driver
	scale   scale.Driver
	printer *zpl.Printer
}

// App is the explicit set of subsystems, started in field order and stopped
// in reverse: store, uplink, intake, stations, devices.
type App struct {
	cfg    *config.Config
	log    *slog.Logger
	clock  clock.Clock
	health *health.Tracker

	store    *store.Outbox
	uplink   *uplink.Publisher
	intake   *intake.Intake
	stations []*station.Station
	devices  []device
	metrics  *metrics.Metrics
	hotplug  *hotplug.Watcher
	fleet    *fleet.Fleet
	web      *web.Server
	// logs holds the recent log lines for the logs command; restart asks
	// the service wrapper for a restart.
	logs     *logring.Ring
	restart  func()
	handover func()
	hooks    Hooks
	latency  atomic.Int64 // last publish latency, ns
	history  *web.History
	changed  chan struct{}
	// byScanner and byScale find the station a device belongs to.
	byScanner map[string]*station.Station
	byScale   map[string]*station.Station

	uplinkCancel  context.CancelFunc
	uplinkDone    chan struct{}
	devCancel     context.CancelFunc
	devWG         sync.WaitGroup
	stCancel      context.CancelFunc
	stWG          sync.WaitGroup
	frontMu       sync.RWMutex // held to swap the front (devices, stations, web)
	webCancel     context.CancelFunc
	webDone       chan struct{}
	fleetCancel   context.CancelFunc
	fleetDone     chan struct{}
	hotplugCancel context.CancelFunc
	hotplugDone   chan struct{}
}

// Hooks are what the service wrapper gives the app.
type Hooks struct {
	// Logs holds recent log lines for the logs command; nil disables it.
	Logs *logring.Ring
	// Restart asks for a graceful restart; nil disables the command.
	Restart func()
	// Handover asks for a clean stop without restart: an updater takes over.
	Handover func()
	// OnConfig takes a verified desired config; nil refuses remote configs.
	OnConfig func(ctx context.Context, p envelope.Payload, keyID string) fleet.ConfigOutcome
	// Reported returns the last config report.
	Reported func() ([]byte, bool)
}

// NewApp builds every subsystem from cfg and opens the store. Nothing runs
// until Start.
func NewApp(ctx context.Context, cfg *config.Config, log *slog.Logger, clk clock.Clock, hooks Hooks) (*App, error) {
	a := &App{cfg: cfg, log: log, clock: clk, changed: make(chan struct{}, 1), history: web.NewHistory(),
		hotplug: hotplug.NewWatcher(log.With("subsystem", "hotplug")),
		logs:    hooks.Logs, restart: hooks.Restart, handover: hooks.Handover, hooks: hooks}
	a.health = health.NewTracker(clk, func(c health.Condition, cleared bool) {
		if cleared {
			log.Info("condition cleared", "key", c.Key)
		} else {
			log.Warn("condition raised", "key", c.Key, "severity", c.Severity.String(), "msg", c.Message)
		}
	})

	var tlsCfg *tls.Config
	if !allPlaintext(cfg.Uplink.Brokers) {
		var err error
		if tlsCfg, err = uplink.LoadTLS(cfg.Uplink.CAFile, cfg.Uplink.CertFile, cfg.Uplink.KeyFile); err != nil {
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
		PruneInterval: time.Minute, Clock: clk, Logger: log.With("subsystem", "store"),
		ObserveCommit: a.metrics.Committed,
	})
	if err != nil {
		return nil, err
	}
	a.store = st
	if rec := st.Recovery(); rec != nil {
		log.Error("buffer database was unreadable: moved aside and replaced; a new epoch starts",
			"moved_to", rec.MovedTo, "cause", rec.Cause, "salvaged_unsent", rec.Salvaged, "salvage_err", rec.SalvageErr, "epoch", st.Epoch())
		a.health.Set(ConditionStoreRecovered, health.Warning,
			fmt.Sprintf("buffer database was corrupt and moved to %s; %d unsent events salvaged", rec.MovedTo, rec.Salvaged))
	}

	fleetKeys, err := cfg.Fleet.Keys()
	if err != nil {
		st.Close()
		return nil, err
	}
	a.fleet = a.newFleet(fleetKeys)
	a.uplink, err = uplink.New(st, uplink.Options{
		Brokers: cfg.Uplink.Brokers, TLS: tlsCfg, ClientID: cfg.Appliance.ID, Site: cfg.Appliance.Site,
		TopicPrefix: cfg.Uplink.TopicPrefix, Version: version, Window: cfg.Uplink.InflightWindow, BatchMax: cfg.Uplink.BatchMax,
		KeepAlive: cfg.Uplink.KeepAlive.D(), ConnectTimeout: cfg.Uplink.ConnectTimeout.D(),
		WriteTimeout: cfg.Uplink.WriteTimeout.D(), ReconnectMin: cfg.Uplink.ReconnectMin.D(),
		ReconnectMax: cfg.Uplink.ReconnectMax.D(), ShutdownTimeout: cfg.Uplink.ShutdownTimeout.D(),
		Clock: clk, Logger: log.With("subsystem", "uplink"), Health: a.health,
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
	scannerStation := map[string]string{}
	for _, sc := range cfg.Stations {
		scannerStation[sc.Scanner] = sc.Name
	}
	a.intake = intake.New(st, cfg.Appliance.ID, cfg.Appliance.Site, scannerStation, log.With("subsystem", "intake"), a.health)
	a.intake.OnCommit = func(ev event.Event) {
		a.history.Scan(ev.Time)
		a.notifyChanged()
	}

	if err := a.buildFront(); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// buildFront builds the devices, stations and web server of a.cfg: the part
// of the app that a config change can rebuild while the buffer, the uplink
// and the fleet link keep running.
func (a *App) buildFront() error {
	cfg := a.cfg
	scannerStation := map[string]string{}
	for _, sc := range cfg.Stations {
		scannerStation[sc.Scanner] = sc.Name
	}
	a.intake.SetStations(scannerStation)
	a.devices, a.web = nil, nil
	printers := map[string]*zpl.Printer{}
	for _, d := range cfg.Devices {
		dev, err := newDevice(d, a.clock, a.log.With("subsystem", "driver"), a.health, a.hotplug.Subscribe())
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Name, err)
		}
		a.health.AddDevice(d.Name, d.Kind, d.Driver)
		a.devices = append(a.devices, dev)
		if dev.printer != nil {
			printers[d.Name] = dev.printer
		}
	}
	if err := a.buildStations(printers); err != nil {
		return err
	}
	if cfg.Web.Listen != "" {
		if err := a.buildWeb(); err != nil {
			return err
		}
	}
	return nil
}

// notifyChanged tells the status page that something changed.
func (a *App) notifyChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// buildStations creates a station for every configured one.
func (a *App) buildStations(printers map[string]*zpl.Printer) error {
	cls, err := barcode.NewClassifier(a.cfg.Barcodes.Rules())
	if err != nil {
		return err
	}
	a.byScanner, a.byScale = map[string]*station.Station{}, map[string]*station.Station{}
	for _, sc := range a.cfg.Stations {
		tmpl := label.MustDefault()
		if sc.LabelTemplate != "" {
			b, err := os.ReadFile(sc.LabelTemplate)
			if err != nil {
				return fmt.Errorf("station %s: %w", sc.Name, err)
			}
			if tmpl, err = label.Parse(string(b)); err != nil {
				return fmt.Errorf("station %s: %w", sc.Name, err)
			}
		}
		scaleName := sc.Scale
		s := station.New(station.Config{
			Name: sc.Name, Appliance: a.cfg.Appliance.ID, Site: a.cfg.Appliance.Site,
			Scale: sc.Scale, Printer: sc.Printer, WeightWindow: sc.WeightWindow.D(),
			DuplicateWindow: sc.DuplicateWindow.D(), AttachWindow: sc.AttachWindow.D(),
			Label: tmpl, QR: sc.LabelCode == "qr", Classifier: cls,
			ScaleReady: func() bool { return a.health.DeviceConnectedNow(scaleName) },
			Clock:      a.clock, Log: a.log.With("subsystem", "station"), Health: a.health,
		}, a.store, labelPrinter(printers[sc.Printer]))
		a.stations = append(a.stations, s)
		a.byScanner[sc.Scanner] = s
		if sc.Scale != "" {
			a.byScale[sc.Scale] = s
		}
	}
	return nil
}

// labelPrinter keeps a nil *zpl.Printer from becoming a non-nil interface.
func labelPrinter(p *zpl.Printer) station.LabelPrinter {
	if p == nil {
		return nil
	}
	return p
}

func allPlaintext(brokers []string) bool {
	for _, b := range brokers {
		if len(b) < 7 || (b[:7] != "mqtt://" && b[:6] != "tcp://") {
			return false
		}
	}
	return true
}

func serialMode(d config.Device) (serial.Mode, error) {
	parity, err := serialline.ParseParity(d.Parity)
	if err != nil {
		return serial.Mode{}, err
	}
	stop, err := serialline.ParseStopBits(d.StopBits)
	if err != nil {
		return serial.Mode{}, err
	}
	return serial.Mode{BaudRate: d.Baud, DataBits: d.DataBits, Parity: parity, StopBits: stop}, nil
}

// serialOpener opens the configured path, or finds the port by USB id.
func serialOpener(d config.Device) (func(string, *serial.Mode) (serial.Port, error), error) {
	if d.USB == "" {
		return nil, nil // serial.Open
	}
	m, err := usbhid.ParseMatch(d.USB)
	if err != nil {
		return nil, err
	}
	return serialport.USBOpener(m), nil
}

func newDevice(d config.Device, clk clock.Clock, log *slog.Logger, h health.Reporter, wake <-chan struct{}) (device, error) {
	dev := device{name: d.Name}
	switch d.Driver {
	case "sim":
		dev.scanner = sim.New(d.Name, d.Interval.D(), d.Seed, clk)
	case "serial-line":
		term, err := config.ParseTerminator(d.Terminator)
		if err != nil {
			return dev, err
		}
		mode, err := serialMode(d)
		if err != nil {
			return dev, err
		}
		ctrl, err := serialline.ParseControlPolicy(d.ControlChars)
		if err != nil {
			return dev, err
		}
		open, err := serialOpener(d)
		if err != nil {
			return dev, err
		}
		dev.scanner = serialline.New(serialline.Config{
			Name: d.Name, Port: d.Port, Mode: mode,
			Terminator: term, Prefix: []byte(d.Prefix), Suffix: []byte(d.Suffix), MaxLength: d.MaxLength,
			Control: ctrl, ReconnectMin: 200 * time.Millisecond, ReconnectMax: d.ReconnectMax.D(), Wake: wake,
		}, open, clk, log, h)
	case "hid-keyboard", "hid-pos":
		m, err := usbhid.ParseMatch(d.USB)
		if err != nil {
			return dev, err
		}
		common := usbhid.Common{Name: d.Name, Match: m, Clock: clk, Log: log, Health: h, ReconnectMax: d.ReconnectMax.D(), Wake: wake}
		if d.Kind == "scale" {
			dev.scale = &usbhid.Scale{Common: common}
			break
		}
		layout, err := hid.LayoutByName(d.Layout)
		if err != nil {
			return dev, err
		}
		dev.scanner = &usbhid.Scanner{Common: common, Keyboard: d.Driver == "hid-keyboard", Layout: layout, MaxLength: d.MaxLength}
	case "zpl":
		u, err := url.Parse(d.Address)
		if err != nil {
			return dev, err
		}
		var dial func(context.Context) (zpl.Conn, error)
		switch u.Scheme {
		case "serial":
			baud := 9600
			if b, err := strconv.Atoi(u.Query().Get("baud")); err == nil && b > 0 {
				baud = b
			}
			dial = zpl.DialSerial(u.Path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit}, nil)
		case "usb":
			dial = zpl.DialDevice(u.Path)
		default:
			dial = zpl.DialTCP(u.Host, 5*time.Second)
		}
		dev.printer = zpl.New(zpl.Config{Name: d.Name, Where: d.Address, Dial: dial,
			Poll: d.PollInterval.D(), Timeout: d.ReadTimeout.D(), ReconnectMax: d.ReconnectMax.D(), Log: log, Health: h, Wake: wake})
	case "nci", "mt-sics", "toledo", "continuous":
		unit, _ := serialscale.ParseUnit(d.Unit)
		proto, err := serialscale.ByName(d.Driver, unit)
		if err != nil {
			return dev, err
		}
		mode, err := serialMode(d)
		if err != nil {
			return dev, err
		}
		open, err := serialOpener(d)
		if err != nil {
			return dev, err
		}
		dev.scale = serialscale.New(serialscale.Config{Name: d.Name, Port: d.Port, Mode: mode, Protocol: proto,
			Poll: d.PollInterval.D(), ReadTimeout: d.ReadTimeout.D(), ReconnectMax: d.ReconnectMax.D(), Wake: wake}, open, clk, log, h)
	default:
		return dev, errors.New("unknown driver " + strconv.Quote(d.Driver))
	}
	return dev, nil
}

// Start runs the uplink, the stations, the devices and the web server. It
// does not block.
func (a *App) Start() {
	st, _ := a.store.Stats(context.Background())
	a.log.Info("mailroomd starting", "version", version, "appliance", a.cfg.Appliance.ID,
		"buffer", a.cfg.Storage.Path, "epoch", st.Epoch, "last_seq", st.LastSeq, "pending", st.Pending)

	uctx, ucancel := context.WithCancel(context.Background())
	a.uplinkCancel, a.uplinkDone = ucancel, make(chan struct{})
	go func() {
		defer close(a.uplinkDone)
		if err := a.uplink.Run(uctx); err != nil {
			a.log.Error("uplink stopped", "err", err)
		}
	}()

	// Stations first finish what the last run left unresolved, before any
	// new scan arrives.
	fctx, fcancel := context.WithCancel(context.Background())
	a.fleetCancel, a.fleetDone = fcancel, make(chan struct{})
	go func() {
		defer close(a.fleetDone)
		a.fleet.Run(fctx)
	}()
	hctx, hcancel := context.WithCancel(context.Background())
	a.hotplugCancel, a.hotplugDone = hcancel, make(chan struct{})
	go func() {
		defer close(a.hotplugDone)
		a.hotplug.Run(hctx)
	}()

	a.startFront()
}

// startFront starts the stations (after they finished what was left
// unresolved), the devices and the web server.
func (a *App) startFront() {
	sctx, scancel := context.WithCancel(context.Background())
	a.stCancel = scancel
	for _, s := range a.stations {
		if err := s.Recover(sctx); err != nil {
			a.log.Error("station recovery incomplete; the scans stay unresolved until the next start", "err", err)
		}
		a.stWG.Add(1)
		go func() {
			defer a.stWG.Done()
			if err := s.Run(sctx); err != nil {
				a.log.Error("station stopped", "station", s.Name(), "err", err)
			}
		}()
	}

	dctx, dcancel := context.WithCancel(context.Background())
	a.devCancel = dcancel
	for _, d := range a.devices {
		if d.scale != nil {
			a.startScale(dctx, d)
			continue
		}
		if d.printer != nil {
			a.startPrinter(dctx, d)
			continue
		}
		a.devWG.Add(1)
		go func() {
			defer a.devWG.Done()
			if err := d.scanner.Run(dctx, a.commitScan); err != nil {
				a.log.Error("device stopped", "device", d.name, "err", err)
			}
		}()
	}

	if a.web != nil {
		wctx, wcancel := context.WithCancel(context.Background())
		a.webCancel, a.webDone = wcancel, make(chan struct{})
		go func() {
			defer close(a.webDone)
			if err := a.web.Run(wctx); err != nil {
				a.log.Error("web server stopped", "err", err)
			}
		}()
	}
}

// commitScan is the sink of every scanner: the driver reads no further
// until the scan is committed. A code already read is committed even while
// stopping.
func (a *App) commitScan(_ context.Context, r scanner.Reading) error {
	ev, err := a.intake.Commit(context.Background(), r)
	if err != nil {
		return err
	}
	a.health.Seen(r.Device, string(r.Barcode))
	if s := a.byScanner[r.Device]; s != nil {
		s.Submit(ev)
	}
	return nil
}

// startScale runs a scale; its latest reading goes to the health model.
func (a *App) startScale(ctx context.Context, d device) {
	readings := make(chan scale.Reading, 16)
	a.devWG.Add(2)
	go func() {
		defer a.devWG.Done()
		defer close(readings)
		if err := d.scale.Run(ctx, readings); err != nil {
			a.log.Error("device stopped", "device", d.name, "err", err)
		}
	}()
	go func() {
		defer a.devWG.Done()
		st := a.byScale[d.name]
		for r := range readings {
			a.health.Seen(r.Device, r.String())
			if st != nil {
				st.Weigh(r)
			}
			a.log.Debug("weight", "device", r.Device, "value", r.Value, "unit", string(r.Unit), "status", string(r.Status))
		}
	}()
}

// startPrinter runs a printer; its status goes to the health model.
func (a *App) startPrinter(ctx context.Context, d device) {
	readings := make(chan printer.Reading, 4)
	a.devWG.Add(2)
	go func() {
		defer a.devWG.Done()
		defer close(readings)
		if err := d.printer.Run(ctx, readings); err != nil {
			a.log.Error("device stopped", "device", d.name, "err", err)
		}
	}()
	go func() {
		defer a.devWG.Done()
		for r := range readings {
			a.health.Seen(r.Device, r.Status.String())
		}
	}()
}

// Stop shuts down in reverse order: devices (and the commits of what they
// read), the uplink (letting in-flight publishes settle), then the store.
func (a *App) Stop() error {
	a.stopFront()
	a.hotplugCancel()
	<-a.hotplugDone
	a.fleetCancel()
	<-a.fleetDone
	a.log.Info("stopping uplink")
	a.uplinkCancel()
	<-a.uplinkDone
	st, _ := a.store.Stats(context.Background())
	err := a.store.Close()
	a.log.Info("mailroomd stopped", "last_seq", st.LastSeq, "pending", st.Pending)
	return err
}

// stopFront stops the web server, the devices and the stations.
func (a *App) stopFront() {
	if a.web != nil {
		a.log.Info("stopping web server")
		a.webCancel()
		<-a.webDone
	}
	a.log.Info("stopping devices")
	a.devCancel()
	a.devWG.Wait()
	a.log.Info("stopping stations")
	a.stCancel()
	a.stWG.Wait()
}

// FrontOnly reports whether n differs from the running config only in
// devices, stations, barcodes or the web server, so that Reconfigure can
// apply it without touching the buffer, the uplink or the fleet link.
func (a *App) FrontOnly(n *config.Config) bool {
	o := a.cfg
	return reflect.DeepEqual(o.Appliance, n.Appliance) && reflect.DeepEqual(o.Storage, n.Storage) &&
		reflect.DeepEqual(o.Uplink, n.Uplink) && reflect.DeepEqual(o.Fleet, n.Fleet) && reflect.DeepEqual(o.Log, n.Log)
}

// Reconfigure rebuilds devices, stations and the web server from n (see
// FrontOnly). On failure the previous config is rebuilt and the error
// returned.
func (a *App) Reconfigure(n *config.Config) error {
	a.frontMu.Lock()
	defer a.frontMu.Unlock()
	a.log.Info("reconfiguring devices, stations and status page")
	a.stopFront()
	old := a.cfg
	for _, d := range old.Devices {
		a.health.DropDevice(d.Name)
	}
	a.cfg = n
	err := a.buildFront()
	if err != nil {
		for _, d := range n.Devices {
			a.health.DropDevice(d.Name)
		}
		a.cfg = old
		if rerr := a.buildFront(); rerr != nil {
			a.log.Error("cannot rebuild the previous devices either", "err", rerr)
		}
	}
	a.startFront()
	return err
}

// LinkUp reports whether the uplink is connected.
func (a *App) LinkUp() bool { return a.uplink.State().Connected }

// Fleet returns the fleet link, to report and audit remote configs.
func (a *App) Fleet() *fleet.Fleet { return a.fleet }

package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer"
	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/label"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/web"
)

// generation is the front of one config: its devices, stations, their
// lookup maps and its status page server, with one context and one
// WaitGroup for all of their goroutines. It is built whole, started whole
// and stopped whole; after stop nothing of it runs or is subscribed to
// anything, and the App no longer points at it.
type generation struct {
	a   *App
	id  int64
	cfg *config.Config
	log *slog.Logger

	devices []Device
	// devCfgs are the configs of devices, in the same order.
	devCfgs  []config.Device
	stations []*station.Station
	// byScanner and byScale find the station a device belongs to; byName
	// finds a station by its name.
	byScanner map[string]*station.Station
	byScale   map[string]*station.Station
	byName    map[string]*station.Station
	// cameraJobs are the parcels each camera photographs, by camera name.
	cameraJobs map[string]chan cameraJob
	web        *web.Server
	// unsubscribe removes the hotplug subscriptions of the devices.
	unsubscribe []func()

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // stations and devices
	webWG  sync.WaitGroup
	stop   func() // stops the generation once; safe to call again
}

// buildGeneration builds (but does not start) the front of cfg. On error
// nothing of it is left subscribed or listening.
func (a *App) buildGeneration(cfg *config.Config) (g *generation, err error) {
	g = a.emptyGeneration(cfg)
	defer func() {
		if err != nil {
			g.release()
			g = nil
		}
	}()
	printers := map[string]*zpl.Printer{}
	for _, d := range cfg.Devices {
		wake, unsubscribe := a.hotplug.Subscribe()
		g.unsubscribe = append(g.unsubscribe, unsubscribe)
		dev, err := NewDevice(d, a.clock, a.log.With("subsystem", "driver"), a.health, wake)
		if err != nil {
			return g, fmt.Errorf("device %s: %w", d.Name, err)
		}
		g.devices = append(g.devices, dev)
		g.devCfgs = append(g.devCfgs, d)
		if dev.Printer != nil {
			printers[d.Name] = dev.Printer
		}
	}
	if err := g.buildStations(printers); err != nil {
		return g, err
	}
	if cfg.Web.Listen != "" {
		if g.web, err = a.buildWeb(g); err != nil {
			return g, err
		}
	}
	return g, nil
}

// emptyGeneration is a generation without devices, stations or page: what
// runs when not even the previous front can be built again.
func (a *App) emptyGeneration(cfg *config.Config) *generation {
	g := &generation{a: a, id: a.gens.Add(1), cfg: cfg,
		byScanner: map[string]*station.Station{}, byScale: map[string]*station.Station{}, byName: map[string]*station.Station{},
		cameraJobs: map[string]chan cameraJob{}}
	g.log = a.log.With("generation", g.id)
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.stop = sync.OnceFunc(g.shutdown)
	return g
}

// release undoes what building acquired: the hotplug subscriptions and the
// status page's listener.
func (g *generation) release() {
	for _, u := range g.unsubscribe {
		u()
	}
	g.unsubscribe = nil
	if g.web != nil {
		g.web.Close()
	}
	g.cancel()
}

// buildStations creates a station for every configured one.
func (g *generation) buildStations(printers map[string]*zpl.Printer) error {
	a, cfg := g.a, g.cfg
	cls, err := barcode.NewClassifier(cfg.Barcodes.Rules())
	if err != nil {
		return err
	}
	for _, sc := range cfg.Stations {
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
		onEvent := func(event.Event) { a.notifyChanged() }
		if sc.Camera != "" {
			jobs := make(chan cameraJob, cameraQueue)
			g.cameraJobs[sc.Camera] = jobs
			onEvent = g.photographReceived(sc.Name, sc.Camera, sc.WeightWindow.D(), jobs)
		}
		s := station.New(station.Config{
			Name: sc.Name, Appliance: cfg.Appliance.ID, Site: cfg.Appliance.Site,
			Scale: sc.Scale, Printer: sc.Printer, WeightWindow: sc.WeightWindow.D(),
			DuplicateWindow: sc.DuplicateWindow.D(), AttachWindow: sc.AttachWindow.D(),
			Label: tmpl, QR: sc.LabelCode == "qr", Classifier: cls,
			ScaleReady: func() bool { return a.health.DeviceConnectedNow(scaleName) },
			Clock:      a.clock, Log: a.log.With("subsystem", "station"), Health: a.health,
			ModeIdle: cfg.Delivery.ModeIdle.D(), BadgeIsProof: cfg.Delivery.Accepts("badge"), PickupPINs: cfg.Delivery.Accepts("pin"),
			People: a.people, PrivacyID: cfg.Directory.Privacy == config.PrivacyID,
			OnEvent: onEvent,
		}, a.store, labelPrinter(printers[sc.Printer]))
		g.stations = append(g.stations, s)
		g.byScanner[sc.Scanner] = s
		g.byName[sc.Name] = s
		if sc.Scale != "" {
			g.byScale[sc.Scale] = s
		}
	}
	return nil
}

// start registers the devices with the health model, has the stations
// finish what was left unresolved, then starts them, the devices and the
// status page.
func (g *generation) start() {
	a := g.a
	scannerStation := map[string]string{}
	for scanner, s := range g.byScanner {
		scannerStation[scanner] = s.Name()
	}
	a.intake.SetStations(scannerStation)
	for _, d := range g.devCfgs {
		a.health.AddDevice(d.Name, d.Kind, d.Driver)
	}
	for _, s := range g.stations {
		if err := s.Recover(g.ctx); err != nil {
			g.log.Error("station recovery incomplete; the scans stay unresolved until the next start", "err", err)
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := s.Run(g.ctx); err != nil {
				g.log.Error("station stopped", "station", s.Name(), "err", err)
			}
		}()
	}
	for _, d := range g.devices {
		switch {
		case d.Scale != nil:
			g.startScale(d)
		case d.Printer != nil:
			g.startPrinter(d)
		case d.Camera != nil:
			g.startCamera(d, g.cameraJobs[d.Name])
		default:
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				if err := d.Scanner.Run(g.ctx, g.commitScan); err != nil {
					g.log.Error("device stopped", "device", d.Name, "err", err)
				}
			}()
		}
	}
	if g.web != nil {
		g.webWG.Add(1)
		go func() {
			defer g.webWG.Done()
			if err := g.web.Run(g.ctx); err != nil {
				g.log.Error("web server stopped", "err", err)
			}
		}()
	}
}

// shutdown stops the status page, the devices (each finishing the commit
// of a code it already read) and the stations, removes the hotplug
// subscriptions and drops the devices from the health model.
func (g *generation) shutdown() {
	g.log.Info("stopping status page, devices and stations")
	g.cancel()
	g.webWG.Wait()
	g.wg.Wait()
	g.logUnphotographed()
	g.release()
	for _, d := range g.devCfgs {
		g.a.health.DropDevice(d.Name)
	}
}

// errReconfiguring is what an action on a stopped generation answers.
var errReconfiguring = errors.New("the devices are being reconfigured: try again in a moment")

// stopped reports whether the generation has been stopped.
func (g *generation) stopped() bool { return g.ctx.Err() != nil }

// commitScan is the sink of every scanner of this generation: the driver
// reads no further until the scan is committed. A code already read is
// committed even while stopping.
func (g *generation) commitScan(_ context.Context, r scanner.Reading) error {
	ev, err := g.a.intake.Commit(context.Background(), r)
	if err != nil {
		return err
	}
	g.a.health.Seen(r.Device, string(r.Barcode))
	if s := g.byScanner[r.Device]; s != nil {
		s.Submit(ev)
	}
	return nil
}

// startScale runs a scale; its latest reading goes to the health model and
// its station.
func (g *generation) startScale(d Device) {
	readings := make(chan scale.Reading, 16)
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		defer close(readings)
		if err := d.Scale.Run(g.ctx, readings); err != nil {
			g.log.Error("device stopped", "device", d.Name, "err", err)
		}
	}()
	go func() {
		defer g.wg.Done()
		st := g.byScale[d.Name]
		for r := range readings {
			g.a.health.Seen(r.Device, r.String())
			if st != nil {
				st.Weigh(r)
			}
			g.log.Debug("weight", "device", r.Device, "value", r.Value, "unit", string(r.Unit), "status", string(r.Status))
		}
	}()
}

// photographReceived is the OnEvent of a station with a camera: every
// parcel it receives is queued for its label photo, to be taken within
// the station's weight window and cameraMaxAge of its scan. A parcel
// received from a scan of before a restart (the station's recovery) is
// long off the table by then, and is not photographed.
func (g *generation) photographReceived(stationName, cameraName string, weightWindow time.Duration, jobs chan cameraJob) func(event.Event) {
	return func(ev event.Event) {
		g.a.notifyChanged()
		if ev.Type != event.TypeParcelReceived {
			return
		}
		// A parcel's id is the id of the event that received it; its time
		// is its scan's.
		select {
		case jobs <- cameraJob{parcel: ev.ID, station: stationName, scanned: ev.Time, by: ev.Time.Add(weightWindow + cameraMaxAge)}:
		default:
			g.log.Warn("parcel received without a label photo: the camera is behind", "parcel", ev.ID, "station", stationName, "camera", cameraName)
		}
	}
}

// startPrinter runs a printer; its status goes to the health model.
func (g *generation) startPrinter(d Device) {
	readings := make(chan printer.Reading, 4)
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		defer close(readings)
		if err := d.Printer.Run(g.ctx, readings); err != nil {
			g.log.Error("device stopped", "device", d.Name, "err", err)
		}
	}()
	go func() {
		defer g.wg.Done()
		for r := range readings {
			g.a.health.Seen(r.Device, r.Status.String())
		}
	}()
}

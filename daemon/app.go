package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.bug.st/serial"

	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/scanner/serialline"
	"github.com/mailroomd/mailroomd/drivers/scanner/sim"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// device is one configured scanner and its driver.
type device struct {
	name   string
	driver scanner.Driver
}

// App is the explicit set of subsystems, started in field order and stopped
// in reverse: store, uplink, intake, devices.
type App struct {
	cfg    *config.Config
	log    *slog.Logger
	clock  clock.Clock
	health *health.Tracker

	store   *store.Outbox
	uplink  *uplink.Publisher
	intake  *intake.Intake
	devices []device

	uplinkCancel context.CancelFunc
	uplinkDone   chan struct{}
	devCancel    context.CancelFunc
	devWG        sync.WaitGroup
}

// NewApp builds every subsystem from cfg and opens the store. Nothing runs
// until Start.
func NewApp(ctx context.Context, cfg *config.Config, log *slog.Logger, clk clock.Clock) (*App, error) {
	a := &App{cfg: cfg, log: log, clock: clk}
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

	st, err := store.Open(ctx, store.Options{
		Path: cfg.Storage.Path, MaxPending: cfg.Storage.MaxPending, RetainSent: cfg.Storage.RetainSent.D(),
		PruneInterval: time.Minute, Clock: clk, Logger: log.With("subsystem", "store"),
	})
	if err != nil {
		return nil, err
	}
	a.store = st
	if rec := st.Recovery(); rec != nil {
		log.Error("buffer database was unreadable: moved aside and replaced; a new epoch starts",
			"moved_to", rec.MovedTo, "cause", rec.Cause, "salvaged_unsent", rec.Salvaged, "salvage_err", rec.SalvageErr, "epoch", st.Epoch())
		a.health.Set("store.recovered", health.Warning,
			fmt.Sprintf("buffer database was corrupt and moved to %s; %d unsent events salvaged", rec.MovedTo, rec.Salvaged))
	}

	a.uplink, err = uplink.New(st, uplink.Options{
		Brokers: cfg.Uplink.Brokers, TLS: tlsCfg, ClientID: cfg.Appliance.ID, Site: cfg.Appliance.Site,
		TopicPrefix: cfg.Uplink.TopicPrefix, Version: version, Window: cfg.Uplink.InflightWindow,
		KeepAlive: cfg.Uplink.KeepAlive.D(), ConnectTimeout: cfg.Uplink.ConnectTimeout.D(),
		WriteTimeout: cfg.Uplink.WriteTimeout.D(), ReconnectMin: cfg.Uplink.ReconnectMin.D(),
		ReconnectMax: cfg.Uplink.ReconnectMax.D(), ShutdownTimeout: cfg.Uplink.ShutdownTimeout.D(),
		Clock: clk, Logger: log.With("subsystem", "uplink"), Health: a.health,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	a.intake = intake.New(st, cfg.Appliance.ID, cfg.Appliance.Site, log.With("subsystem", "intake"), a.health)

	for _, d := range cfg.Devices {
		drv, err := newDriver(d, clk, log.With("subsystem", "driver"), a.health)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("device %s: %w", d.Name, err)
		}
		a.devices = append(a.devices, device{name: d.Name, driver: drv})
	}
	return a, nil
}

func allPlaintext(brokers []string) bool {
	for _, b := range brokers {
		if len(b) < 7 || (b[:7] != "mqtt://" && b[:6] != "tcp://") {
			return false
		}
	}
	return true
}

func newDriver(d config.Device, clk clock.Clock, log *slog.Logger, h health.Reporter) (scanner.Driver, error) {
	switch d.Driver {
	case "sim":
		return sim.New(d.Name, d.Interval.D(), d.Seed, clk), nil
	case "serial-line":
		term, err := config.ParseTerminator(d.Terminator)
		if err != nil {
			return nil, err
		}
		parity, err := serialline.ParseParity(d.Parity)
		if err != nil {
			return nil, err
		}
		stop, err := serialline.ParseStopBits(d.StopBits)
		if err != nil {
			return nil, err
		}
		ctrl, err := serialline.ParseControlPolicy(d.ControlChars)
		if err != nil {
			return nil, err
		}
		return serialline.New(serialline.Config{
			Name: d.Name, Port: d.Port,
			Mode:       serial.Mode{BaudRate: d.Baud, DataBits: d.DataBits, Parity: parity, StopBits: stop},
			Terminator: term, Prefix: []byte(d.Prefix), Suffix: []byte(d.Suffix), MaxLength: d.MaxLength,
			Control: ctrl, ReconnectMin: 200 * time.Millisecond, ReconnectMax: d.ReconnectMax.D(),
		}, nil, clk, log, h), nil
	}
	return nil, errors.New("unknown driver " + strconv.Quote(d.Driver))
}

// Start runs the uplink, then the intake and devices. It does not block.
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

	dctx, dcancel := context.WithCancel(context.Background())
	a.devCancel = dcancel
	for _, d := range a.devices {
		readings := make(chan scanner.Reading, 64)
		a.devWG.Add(2)
		go func() {
			defer a.devWG.Done()
			defer close(readings)
			if err := d.driver.Run(dctx, readings); err != nil {
				a.log.Error("device stopped", "device", d.name, "err", err)
			}
		}()
		go func() {
			defer a.devWG.Done()
			// Commit everything the driver already read, even while stopping.
			a.intake.Run(context.Background(), readings)
		}()
	}
}

// Stop shuts down in reverse order: devices (and the commits of what they
// read), the uplink (letting in-flight publishes settle), then the store.
func (a *App) Stop() error {
	a.log.Info("stopping devices")
	a.devCancel()
	a.devWG.Wait()
	a.log.Info("stopping uplink")
	a.uplinkCancel()
	<-a.uplinkDone
	st, _ := a.store.Stats(context.Background())
	err := a.store.Close()
	a.log.Info("mailroomd stopped", "last_seq", st.LastSeq, "pending", st.Pending)
	return err
}

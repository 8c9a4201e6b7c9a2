package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/web"
)

// ConditionLoginLockout is raised while a status page user is locked out
// after repeated failed logins.
const ConditionLoginLockout = "security.login_lockout"

// ConditionStoreRecovered is raised when the buffer database was unreadable
// at start and has been moved aside and replaced.
const ConditionStoreRecovered = "store.recovered"

// buildWeb creates the status page server, with HTTPS when a certificate
// is configured or the listen address is reachable from other machines.
func (a *App) buildWeb() error {
	wc := a.cfg.Web
	var tlsCfg *tls.Config
	switch {
	case wc.CertFile != "":
		cert, err := tls.LoadX509KeyPair(wc.CertFile, wc.KeyFile)
		if err != nil {
			return fmt.Errorf("web certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case !web.IsLoopback(wc.Listen):
		cert, fp, fresh, err := web.SelfSigned(filepath.Dir(a.cfg.Storage.Path), wc.Listen, a.clock.Now())
		if err != nil {
			return err
		}
		if fresh {
			a.log.Warn("generated a self-signed certificate for the status page; check this fingerprint when the browser asks", "sha256", fp)
		} else {
			a.log.Info("status page certificate (self-signed)", "sha256", fp)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// The chart starts with the scans of the last 24 hours in the buffer.
	times, err := a.store.EventTimes(context.Background(), event.TypeScan, a.clock.Now().Add(-24*time.Hour))
	if err != nil {
		a.log.Warn("status page chart starts empty", "err", err)
	}
	for _, t := range times {
		a.history.Scan(t)
	}
	users := make([]web.User, len(wc.Users))
	for i, u := range wc.Users {
		users[i] = web.User{Name: u.Name, Role: web.Role(u.Role), PasswordHash: u.PasswordHash}
	}
	var refs []web.StationRef
	for _, sc := range a.cfg.Stations {
		refs = append(refs, web.StationRef{Name: sc.Name, HasPrinter: sc.Printer != ""})
	}
	srv, err := web.New(web.Options{
		Listen: wc.Listen, TLS: tlsCfg, Appliance: a.cfg.Appliance.ID, Site: a.cfg.Appliance.Site, Version: version,
		Users: users, SessionTTL: wc.SessionTTL.D(), MaxFailures: wc.MaxFailures, Lockout: wc.Lockout.D(),
		FailureDelay: time.Second,
		Store:        a.store, Health: a.health, Link: a.uplink, Actions: actions{a}, Stations: refs, History: a.history,
		Metrics: a.metrics.Handler(), Changed: a.changed, Now: a.clock.Now, Log: a.log.With("subsystem", "web"),
		OnLoginFailure: func(user, remote string, locked bool) {
			a.metrics.LoginFailed()
			if locked {
				a.health.Set(ConditionLoginLockout, health.Warning,
					fmt.Sprintf("status page user %q locked out after %d failed logins (last from %s)", user, wc.MaxFailures, remote))
				time.AfterFunc(wc.Lockout.D(), func() { a.health.Clear(ConditionLoginLockout) })
			}
		},
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	a.log.Info("status page", "url", scheme+"://"+srv.Addr()+"/")
	a.web = srv
	return nil
}

// actions are the page's actions on the daemon's subsystems.
type actions struct{ a *App }

var _ web.Actions = actions{}

func (x actions) station(name string) *station.Station {
	x.a.frontMu.RLock()
	defer x.a.frontMu.RUnlock()
	for _, s := range x.a.stations {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// Manual commits a typed-in code exactly like a scan, then hands it to its
// station.
func (x actions) Manual(ctx context.Context, m intake.Manual) (event.Event, error) {
	s := x.station(m.Station)
	if s == nil {
		return event.Event{}, errors.New("unknown station " + strconv.Quote(m.Station))
	}
	ev, err := x.a.intake.CommitManual(ctx, m)
	if err != nil {
		return ev, err
	}
	s.Submit(ev)
	return ev, nil
}

// Reprint queues a recent parcel's label again.
func (x actions) Reprint(stationName, parcelID string) error {
	s := x.station(stationName)
	if s == nil {
		return errors.New("unknown station " + strconv.Quote(stationName))
	}
	return s.Reprint(parcelID)
}

// DeviceTest prints a test label on a printer, or reports a device's state.
func (x actions) DeviceTest(_ context.Context, name string) (string, error) {
	x.a.frontMu.RLock()
	defer x.a.frontMu.RUnlock()
	for _, d := range x.a.devices {
		if d.name != name {
			continue
		}
		if d.printer != nil {
			d.printer.Submit(zpl.Label(zpl.Field(40, 40, 40, "mailroomd test label"),
				zpl.Field(40, 100, 30, name+" "+x.a.clock.Now().Format(time.RFC3339))), nil)
			return "test label queued", nil
		}
		for _, st := range x.a.health.Devices() {
			if st.Name == name {
				return st.State + " " + st.LastReading, nil
			}
		}
	}
	return "", errors.New("unknown device " + strconv.Quote(name))
}

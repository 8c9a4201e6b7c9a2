package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/web"
)

// buildWeb creates the status page server, with HTTPS when a certificate
// is configured or the listen address is reachable from other machines.
func (a *App) buildWeb(g *generation) (*web.Server, error) {
	cfg := g.cfg
	wc := cfg.Web
	var tlsCfg *tls.Config
	switch {
	case wc.CertFile != "":
		cert, err := tls.LoadX509KeyPair(wc.CertFile, wc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("web certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case !web.IsLoopback(wc.Listen):
		cert, fp, fresh, err := web.SelfSigned(filepath.Dir(cfg.Storage.Path), wc.Listen, a.clock.Now())
		if err != nil {
			return nil, err
		}
		if fresh {
			a.log.Warn("generated a self-signed certificate for the status page; check this fingerprint when the browser asks", "sha256", fp)
		} else {
			a.log.Info("status page certificate (self-signed)", "sha256", fp)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	users := make([]web.User, len(wc.Users))
	for i, u := range wc.Users {
		users[i] = web.User{Name: u.Name, Role: web.Role(u.Role), PasswordHash: u.PasswordHash}
	}
	var refs []web.StationRef
	for _, sc := range cfg.Stations {
		refs = append(refs, web.StationRef{Name: sc.Name, HasPrinter: sc.Printer != ""})
	}
	// The page answers to its IP addresses, the box's host name, the name
	// it listens on and the configured names.
	names := append([]string{}, wc.HostNames...)
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	if h, _, err := net.SplitHostPort(wc.Listen); err == nil && h != "" && net.ParseIP(h) == nil {
		names = append(names, h)
	}
	srv, err := web.New(web.Options{HostNames: names, Auth: a.auth,
		Listen: wc.Listen, TLS: tlsCfg, Appliance: cfg.Appliance.ID, Site: cfg.Appliance.Site, Version: a.opts.Version,
		Users: users, SessionTTL: wc.SessionTTL.D(), MaxFailures: wc.MaxFailures, Lockout: wc.Lockout.D(),
		FailureDelay: time.Second,
		Store:        a.store, Health: a.health, Link: a.uplink, Actions: actions{g}, Stations: refs, History: a.history,
		Photos:  web.Photos{Keeper: a.photoKeeper(cfg), LongEdge: cfg.Photos.LongEdge},
		Custody: a.store, People: a.people, PrivacyID: cfg.Directory.Privacy == config.PrivacyID, Delivery: web.Delivery{Proof: cfg.Delivery.Proof, Overdue: cfg.Delivery.Overdue.D()}, Codes: codeRules(cfg),
		Metrics: a.metrics.Handler(), Changed: a.changed, Now: a.clock.Now, Log: a.log.With("subsystem", "web"),
		OnLoginFailure: func(user, remote string, locked bool) {
			a.metrics.LoginFailed()
			if locked {
				who := "an unknown user name" // never repeated: it may be a mistyped password
				for _, u := range wc.Users {
					if u.Name == user {
						who = fmt.Sprintf("status page user %q", user)
					}
				}
				a.health.Set(ConditionLoginLockout, health.Warning,
					fmt.Sprintf("%s locked out after %d failed logins (last from %s)", who, wc.MaxFailures, remote))
				time.AfterFunc(wc.Lockout.D(), func() { a.health.Clear(ConditionLoginLockout) })
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	a.log.Info("status page", "url", scheme+"://"+srv.Addr()+"/")
	return srv, nil
}

// actions are the page's actions on one generation's stations and
// devices. A page served by a generation acts on that generation only;
// the fleet's commands act on whichever generation is running.
type actions struct{ g *generation }

var _ web.Actions = actions{}

// Manual commits a typed-in code exactly like a scan, then hands it to its
// station.
func (x actions) Manual(ctx context.Context, m intake.Manual) (event.Event, error) {
	if x.g.stopped() {
		return event.Event{}, errReconfiguring
	}
	s := x.g.byName[m.Station]
	if s == nil {
		return event.Event{}, errors.New("unknown station " + strconv.Quote(m.Station))
	}
	ev, err := x.g.a.intake.CommitManual(ctx, m)
	if err != nil {
		return ev, err
	}
	s.Submit(ev)
	return ev, nil
}

// Reprint queues a recent parcel's label again.
func (x actions) Reprint(stationName, parcelID string) error {
	if x.g.stopped() {
		return errReconfiguring
	}
	s := x.g.byName[stationName]
	if s == nil {
		return errors.New("unknown station " + strconv.Quote(stationName))
	}
	return s.Reprint(parcelID)
}

// DeviceTest prints a test label on a printer, or reports a device's state.
func (x actions) DeviceTest(_ context.Context, name string) (string, error) {
	if x.g.stopped() {
		return "", errReconfiguring
	}
	a := x.g.a
	for _, d := range x.g.devices {
		if d.Name != name {
			continue
		}
		if d.Printer != nil {
			d.Printer.Submit(zpl.Label(zpl.Field(40, 40, 40, "mailroomd test label"),
				zpl.Field(40, 100, 30, name+" "+a.clock.Now().Format(time.RFC3339))), nil)
			return "test label queued", nil
		}
		for _, st := range a.health.Devices() {
			if st.Name == name {
				if st.State != health.DeviceConnected {
					return strings.TrimSpace(st.State + ": " + st.Reason), nil
				}
				return strings.TrimSpace(st.State + " " + st.LastReading), nil
			}
		}
	}
	return "", errors.New("unknown device " + strconv.Quote(name))
}

// SetMode switches a station's scan mode.
func (x actions) SetMode(stationName, mode string) error {
	if x.g.stopped() {
		return errReconfiguring
	}
	s := x.g.byName[stationName]
	if s == nil {
		return errors.New("unknown station " + strconv.Quote(stationName))
	}
	return s.SetMode(mode)
}

// Modes returns every station's scan mode.
func (x actions) Modes() map[string]station.ModeView {
	out := make(map[string]station.ModeView, len(x.g.stations))
	for _, s := range x.g.stations {
		out[s.Name()] = s.Mode()
	}
	return out
}

// Handed removes a parcel handed over on the page from the stations'
// lists of parcels waiting for proof.
func (x actions) Handed(parcelID string) {
	for _, s := range x.g.stations {
		s.Handed(parcelID)
	}
}

// codeRules are the internal barcode rules the handheld page needs to
// tell badges, locations, rounds and action codes from parcels offline.
func codeRules(cfg *config.Config) []web.CodeRule {
	out := make([]web.CodeRule, 0, len(cfg.Barcodes.Internal))
	for _, r := range cfg.Barcodes.Internal {
		out = append(out, web.CodeRule{Kind: r.Kind, Prefix: r.Prefix, Pattern: r.Pattern, Action: r.Action})
	}
	return out
}

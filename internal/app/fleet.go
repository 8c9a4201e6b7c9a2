package app

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"time"

	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// lazyLink lets the fleet be built before the uplink it publishes through.
type lazyLink struct{ a *App }

func (l lazyLink) Publish(ctx context.Context, suffix string, payload []byte, retain bool) error {
	return l.a.uplink.Publish(ctx, suffix, payload, retain)
}

func (l lazyLink) Republish(ctx context.Context, payloads [][]byte) (int, error) {
	return l.a.uplink.Republish(ctx, payloads)
}

func (l lazyLink) State() uplink.LinkState { return l.a.uplink.State() }

// newFleet builds the fleet link with the daemon's remote commands.
func (a *App) newFleet(ctx context.Context, keys map[string]ed25519.PublicKey) (*fleet.Fleet, error) {
	fc, al := a.base.Fleet, a.base.Fleet.Alerts
	current := func() actions { return actions{a.front.Load()} }
	renewal := fleet.CertRenewal{CertFile: a.base.Uplink.CertFile, KeyFile: a.base.Uplink.KeyFile,
		CAFile: a.base.Uplink.CAFile, CommonName: a.base.Appliance.ID}
	commands := map[string]fleet.Command{
		"reprint": func(_ context.Context, args json.RawMessage) (any, error) {
			var r struct {
				Station  string `json:"station"`
				ParcelID string `json:"parcel_id"`
			}
			if err := json.Unmarshal(args, &r); err != nil {
				return nil, errors.New(`reprint needs {"station": "...", "parcel_id": "..."}`)
			}
			return map[string]bool{"queued": true}, current().Reprint(r.Station, r.ParcelID)
		},
		"device-test": func(ctx context.Context, args json.RawMessage) (any, error) {
			var r struct {
				Device string `json:"device"`
			}
			if err := json.Unmarshal(args, &r); err != nil {
				return nil, errors.New(`device-test needs {"device": "..."}`)
			}
			msg, err := current().DeviceTest(ctx, r.Device)
			return map[string]string{"result": msg}, err
		},
		"logs": func(_ context.Context, args json.RawMessage) (any, error) {
			if a.opts.Logs == nil {
				return nil, errors.New("logs are not kept in this mode")
			}
			var r struct {
				Lines int `json:"lines"`
			}
			if len(args) > 0 {
				if err := json.Unmarshal(args, &r); err != nil {
					return nil, errors.New(`logs takes {"lines": N} (1 to 1000; 100 without it)`)
				}
			}
			switch {
			case r.Lines <= 0:
				r.Lines = 100
			case r.Lines > 1000:
				r.Lines = 1000
			}
			return map[string][]string{"lines": a.opts.Logs.Last(r.Lines)}, nil
		},
		"renew-cert": func(context.Context, json.RawMessage) (any, error) {
			csr, err := renewal.Request()
			if err != nil {
				return nil, err
			}
			return map[string]string{"csr": string(csr)}, nil
		},
		"install-cert": func(_ context.Context, args json.RawMessage) (any, error) {
			var r struct {
				Cert string `json:"cert"`
			}
			if err := json.Unmarshal(args, &r); err != nil {
				return nil, errors.New(`install-cert needs {"cert": "<PEM>"}`)
			}
			notAfter, err := renewal.Install([]byte(r.Cert), a.clock.Now())
			if err != nil {
				return nil, err
			}
			a.log.Info("client certificate renewed; used from the next connection", "not_after", notAfter)
			return map[string]time.Time{"not_after": notAfter}, nil
		},
		"update": a.updateCommand,
		"restart": func(context.Context, json.RawMessage) (any, error) {
			if a.opts.Restart == nil {
				return nil, errors.New("restart is not available in this mode")
			}
			time.AfterFunc(500*time.Millisecond, a.opts.Restart) // after the result is published
			return map[string]bool{"restarting": true}, nil
		},
	}
	return fleet.New(ctx, fleet.Options{
		Appliance: a.base.Appliance.ID, Site: a.base.Appliance.Site, Version: a.opts.Version, Keys: keys,
		Link: lazyLink{a}, Store: a.store, Health: a.health, Commands: commands,
		OnConfig: a.hooks.onConfig, Reported: a.hooks.reported, ConfigTried: a.hooks.configTried, ConfigInUse: a.hooks.configInUse, ConfigRefused: a.hooks.configRefused, Settle: a.settle(), Started: a.opts.Started, Directories: a.store,
		TelemetryInterval: fc.TelemetryInterval.D(), ProbeInterval: fc.ProbeInterval.D(), ProbeTimeout: fc.ProbeTimeout.D(),
		Thresholds: fleet.Thresholds{BrokerUnreachable: al.BrokerUnreachable.D(), PendingAbove: al.PendingAbove,
			OldestPending: al.OldestPending.D(), DiskFreeBelowMB: al.DiskFreeBelowMB, DeviceDisconnected: al.DeviceDisconnected.D(),
			CertExpiresWithin: al.CertExpiresWithin.D(), ProbeSlowerThan: al.ProbeSlowerThan.D()},
		BufferDir: filepath.Dir(a.base.Storage.Path), CertFile: a.base.Uplink.CertFile,
		Ingested: func() int64 { n, _ := a.intake.Counts(); return n },
		Latency:  func() time.Duration { return time.Duration(a.latency.Load()) },
		Parcels: func(ctx context.Context) (int64, int64, error) {
			return a.store.OpenCounts(ctx, a.clock.Now().Add(-a.base.Delivery.Overdue.D()))
		},
		Clock: a.clock, Log: a.log.With("subsystem", "fleet"),
	})
}

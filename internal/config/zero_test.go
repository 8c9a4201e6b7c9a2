package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/devcert"
)

// zeroBase is a valid config with a station, a scale and the status page,
// into which each case writes one key as zero.
const zeroBase = `version: 1
appliance: {id: mr-zero}
storage: {path: buffer.db<storage>}
uplink:
  brokers: [mqtts://broker.example.com:8883]
  ca_file: ca.pem
  cert_file: client.pem
  key_file: client.key<uplink>
devices:
  - {name: dock-scanner, kind: scanner, driver: serial-line, port: /dev/ttyACM0}
  - {name: dock-scale, kind: scale, driver: mt-sics, port: /dev/ttyUSB0}
stations:
  - {name: dock-1, scanner: dock-scanner, scale: dock-scale<station>}
fleet:
  release_key_file: release.pub<fleet>
  alerts: {broker_unreachable: 5m<alerts>}
delivery: {proof: [badge]<delivery>}
`

// TestZeroMeansWhatTheDocsSay walks every key that docs/configuration.md
// says accepts 0 (disabled, no limit, at once): written as 0 it stays 0,
// absent it takes its default. Keys documented as "must be positive" are
// refused as 0 with that message.
func TestZeroMeansWhatTheDocsSay(t *testing.T) {
	type slot int
	const (
		storage slot = iota
		uplink
		station
		fleet
		alerts
		delivery
	)
	for _, tc := range []struct {
		key   string
		slot  slot
		write string
		get   func(*Config) int64
		dflt  int64
		// refused is the message when 0 is not allowed; "" when 0 is kept.
		refused string
	}{
		{"storage.max_pending", storage, "max_pending: 0", func(c *Config) int64 { return int64(c.Storage.MaxPending) }, DefaultMaxPending, ""},
		{"storage.retain_sent", storage, "retain_sent: 0s", func(c *Config) int64 { return int64(c.Storage.RetainSent) }, int64(DefaultRetainSent), ""},
		{"uplink.shutdown_timeout", uplink, "shutdown_timeout: 0s", func(c *Config) int64 { return int64(c.Uplink.ShutdownTimeout) }, int64(DefaultShutdownTimeout), ""},
		{"uplink.keepalive", uplink, "keepalive: 0s", nil, 0, "must be positive"},
		{"uplink.write_timeout", uplink, "write_timeout: 0s", nil, 0, "must be positive"},
		{"uplink.inflight_window", uplink, "inflight_window: 0", nil, 0, "must be between 1 and 65535"},
		{"stations[0].weight_window", station, "weight_window: 0s", func(c *Config) int64 { return int64(c.Stations[0].WeightWindow) }, int64(DefaultWeightWindow), ""},
		{"stations[0].duplicate_window", station, "duplicate_window: 0s", func(c *Config) int64 { return int64(c.Stations[0].DuplicateWindow) }, int64(DefaultDuplicateWindow), ""},
		{"stations[0].attach_window", station, "attach_window: 0s", func(c *Config) int64 { return int64(c.Stations[0].AttachWindow) }, int64(DefaultAttachWindow), ""},
		{"fleet.telemetry_interval", fleet, "telemetry_interval: 0s", func(c *Config) int64 { return int64(c.Fleet.TelemetryInterval) }, int64(DefaultTelemetryInterval), ""},
		{"fleet.probe_interval", fleet, "probe_interval: 0s", func(c *Config) int64 { return int64(c.Fleet.ProbeInterval) }, int64(DefaultProbeInterval), ""},
		{"fleet.config_trial", fleet, "config_trial: 0s", nil, 0, "must be positive"},
		{"fleet.probe_timeout", fleet, "probe_timeout: 0s", nil, 0, "must be positive"},
		{"fleet.alerts.pending_above", alerts, "pending_above: 0", func(c *Config) int64 { return c.Fleet.Alerts.PendingAbove }, DefaultPendingAbove, ""},
		{"fleet.alerts.oldest_pending", alerts, "oldest_pending: 0s", func(c *Config) int64 { return int64(c.Fleet.Alerts.OldestPending) }, int64(DefaultOldestPending), ""},
		{"fleet.alerts.disk_free_below_mb", alerts, "disk_free_below_mb: 0", func(c *Config) int64 { return c.Fleet.Alerts.DiskFreeBelowMB }, DefaultDiskFreeBelowMB, ""},
		{"fleet.alerts.cert_expires_within", alerts, "cert_expires_within: 0s", func(c *Config) int64 { return int64(c.Fleet.Alerts.CertExpiresWithin) }, int64(DefaultCertExpiresWithin), ""},
		{"fleet.alerts.probe_slower_than", alerts, "probe_slower_than: 0s", func(c *Config) int64 { return int64(c.Fleet.Alerts.ProbeSlowerThan) }, int64(DefaultProbeSlowerThan), ""},
		{"delivery.retain_closed", delivery, "retain_closed: 0s", func(c *Config) int64 { return int64(c.Delivery.RetainClosed) }, int64(DefaultRetainClosed), ""},
		{"delivery.mode_idle", delivery, "mode_idle: 0s", nil, 0, "must be positive"},
		{"delivery.overdue", delivery, "overdue: 0s", nil, 0, "must be positive"},
		{"fleet.alerts.device_disconnected", alerts, "device_disconnected: 0s", func(c *Config) int64 { return int64(c.Fleet.Alerts.DeviceDisconnected) }, int64(DefaultDeviceDisconnected), ""},
	} {
		t.Run(tc.key, func(t *testing.T) {
			dir := t.TempDir()
			writeTLS(t, dir, 0o600)
			os.WriteFile(filepath.Join(dir, "release.pub"), []byte("x"), 0o644)
			parse := func(written bool) (*Config, error) {
				names := []string{"<storage>", "<uplink>", "<station>", "<fleet>", "<alerts>", "<delivery>"}
				var pairs []string
				for i, name := range names {
					v := ""
					if written && slot(i) == tc.slot {
						sep := ", "
						if tc.slot == uplink || tc.slot == fleet {
							sep = "\n  "
						}
						v = sep + tc.write
					}
					pairs = append(pairs, name, v)
				}
				text := strings.NewReplacer(pairs...).Replace(zeroBase)
				return Parse(filepath.Join(dir, "mailroomd.yaml"), []byte(text))
			}
			c, err := parse(true)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.key+": "+tc.refused) {
					t.Fatalf("0 accepted or refused with the wrong message: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(c); got != 0 {
				t.Fatalf("written as 0, got %d: a default replaced it", got)
			}
			c, err = parse(false)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(c); got != tc.dflt {
				t.Fatalf("absent: got %d, want the default %d", got, tc.dflt)
			}
		})
	}
}

// TestValuesThatAreNotWhatTheyLookLike: a key written without a value, a
// fraction or a word for an integer, "yes" for a flag, an empty buffer path
// or topic prefix, and a non-positive reconnect_max on any driver are
// refused with the key's name, not read as 0, 1 or true.
func TestValuesThatAreNotWhatTheyLookLike(t *testing.T) {
	dir := t.TempDir()
	writeTLS(t, dir, 0o600)
	base := strings.Replace(good, "storage: {path: buffer.db, max_pending: 1000, retain_sent: 24h}", "storage: {path: buffer.db, retain_sent: 24h}", 1)
	for _, tc := range []struct{ replace, with, field, msg string }{
		{"retain_sent: 24h}", "retain_sent: 24h, max_pending: }", "storage.max_pending", "no value"},
		{"retain_sent: 24h}", "retain_sent: }", "storage.retain_sent", "no value"},
		{"retain_sent: 24h}", "retain_sent: 24h, max_pending: 1.5}", "storage.max_pending", "expected an integer"},
		{"key_file: client.key", "key_file: client.key\n  inflight_window: 1.9", "uplink.inflight_window", "expected an integer"},
		{"key_file: client.key", "key_file: client.key\n  insecure: yes", "uplink.insecure", "expected true or false"},
		{"path: buffer.db,", `path: "",`, "storage.path", "required"},
		{"key_file: client.key", "key_file: client.key\n  topic_prefix: \"\"", "uplink.topic_prefix", ""},
		{"key_file: client.key", "key_file: client.key\n  topic_prefix: a//b", "uplink.topic_prefix", ""},
		{"interval: 2s}", "interval: 2s}\n  - {name: p, kind: printer, driver: zpl, address: \"tcp://127.0.0.1:9100\", reconnect_max: 0s}", "devices[2].reconnect_max", "must be positive"},
		{"interval: 2s}", "interval: 2s}\n  - {name: h, kind: scanner, driver: hid-pos, usb: \"0c2e:0b01\", reconnect_max: -1s}", "devices[2].reconnect_max", "must be positive"},
	} {
		text := strings.Replace(base, tc.replace, tc.with, 1)
		if text == base {
			t.Fatalf("%s: the case did not change the config", tc.field)
		}
		_, err := Parse(filepath.Join(dir, "mailroomd.yaml"), []byte(text))
		if err == nil || !strings.Contains(err.Error(), tc.field+": "+tc.msg) || (tc.msg == "" && !strings.Contains(err.Error(), "is not a valid topic prefix")) {
			t.Errorf("%s: got %v, want %q", tc.field, err, tc.field+": "+tc.msg)
		}
	}
}

// TestCertificateMustNameTheAppliance: a client certificate issued for
// another appliance id is refused at load.
func TestCertificateMustNameTheAppliance(t *testing.T) {
	dir := t.TempDir()
	f, err := devcert.WriteDir(dir, "mr-other-01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("ca.pem", f.CA, "client.pem", f.ClientCert, "client.key", f.ClientKey).Replace(good)
	_, err = Parse(filepath.Join(dir, "mailroomd.yaml"), []byte(text))
	if err == nil || !strings.Contains(err.Error(), `uplink.cert_file: the certificate is for "mr-other-01", but appliance.id is "mr-berlin-01"`) {
		t.Fatalf("a certificate of another appliance: %v", err)
	}
	text = strings.Replace(text, "id: mr-berlin-01", "id: mr-other-01", 1)
	if _, err := Parse(filepath.Join(dir, "mailroomd.yaml"), []byte(text)); err != nil {
		t.Fatalf("the appliance's own certificate: %v", err)
	}
}

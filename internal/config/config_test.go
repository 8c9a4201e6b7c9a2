package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTLS writes placeholder certificate files; validation only checks that
// they exist and that the key is private.
func writeTLS(t *testing.T, dir string, keyMode os.FileMode) {
	t.Helper()
	for _, f := range []string{"ca.pem", "client.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k := filepath.Join(dir, "client.key")
	if err := os.WriteFile(k, []byte("x"), keyMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(k, keyMode); err != nil {
		t.Fatal(err)
	}
}

const good = `version: 1
appliance: {id: mr-berlin-01, site: berlin-hq}
storage: {path: buffer.db, max_pending: 1000, retain_sent: 24h}
uplink:
  brokers: [mqtts://broker.example.com:8883]
  ca_file: ca.pem
  cert_file: client.pem
  key_file: client.key
devices:
  - {name: dock-scanner, kind: scanner, driver: serial-line, port: /dev/ttyACM0, baud: 9600, terminator: cr}
  - {name: demo-scanner, kind: scanner, driver: sim, interval: 2s}
`

func TestLoadGood(t *testing.T) {
	dir := t.TempDir()
	writeTLS(t, dir, 0o600)
	path := filepath.Join(dir, "mailroomd.yaml")
	os.WriteFile(path, []byte(good), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.Path != filepath.Join(dir, "buffer.db") {
		t.Errorf("relative storage path not resolved: %s", c.Storage.Path)
	}
	if c.Uplink.TopicPrefix != DefaultTopicPrefix || c.Uplink.InflightWindow != 64 {
		t.Errorf("defaults not applied: %+v", c.Uplink)
	}
	if c.Devices[0].DataBits != 8 || c.Devices[0].Parity != "none" || c.Devices[0].MaxLength != 256 {
		t.Errorf("serial defaults not applied: %+v", c.Devices[0])
	}
	if c.Devices[1].Interval.D() != 2*time.Second || c.Storage.RetainSent.D() != 24*time.Hour {
		t.Errorf("durations wrong: %v %v", c.Devices[1].Interval, c.Storage.RetainSent)
	}
}

func TestBrokenConfigs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(string) string
		keyMode os.FileMode
		want    []string
	}{
		{"unknown top-level key", func(s string) string { return s + "colour: blue\n" }, 0o600,
			[]string{":12:1: colour: unknown key (known keys: appliance, barcodes, delivery, devices, directory, fleet, log, photos, stations, storage, uplink, version, web)"}},
		{"unknown nested key", func(s string) string { return strings.Replace(s, "max_pending: 1000", "max_pendng: 1000", 1) }, 0o600,
			[]string{":3:28: storage.max_pendng: unknown key"}},
		{"wrong type", func(s string) string { return strings.Replace(s, "baud: 9600", "baud: fast", 1) }, 0o600,
			[]string{":10:88: devices[0].baud: expected an integer, got \"fast\""}},
		{"bad duration", func(s string) string { return strings.Replace(s, "interval: 2s", "interval: 2 seconds", 1) }, 0o600,
			[]string{":11:64: devices[1].interval: invalid duration \"2 seconds\""}},
		{"plaintext broker", func(s string) string { return strings.Replace(s, "mqtts://", "mqtt://", 1) }, 0o600,
			[]string{":5:13: uplink.brokers[0]: mqtt://broker.example.com:8883 is plaintext MQTT and is refused"}},
		{"key readable by others", func(s string) string { return s }, 0o644,
			[]string{":8:13: uplink.key_file: ", "is readable by group or others (mode 0644)"}},
		{"missing version and id", func(s string) string {
			return strings.Replace(strings.Replace(s, "version: 1\n", "", 1), "id: mr-berlin-01, ", "", 1)
		}, 0o600, []string{":1:1: version: required", ":1:12: appliance.id: required"}},
		{"key of another driver", func(s string) string { return strings.Replace(s, "interval: 2s", "interval: 2s, baud: 9600", 1) }, 0o600,
			[]string{":11:68: devices[1].baud: not used by driver sim"}},
		{"duplicate device", func(s string) string { return strings.Replace(s, "demo-scanner", "dock-scanner", 1) }, 0o600,
			[]string{":11:12: devices[1].name: duplicate device name \"dock-scanner\" (also devices[0])"}},
		{"bad terminator", func(s string) string { return strings.Replace(s, "terminator: cr", "terminator: return", 1) }, 0o600,
			[]string{"devices[0].terminator: unknown terminator \"return\""}},
		{"a section without a value", func(s string) string { return s + "photos:\n" }, 0o600,
			[]string{":12:8: photos: no value: write its keys, or leave it out for its defaults"}},
		{"page settings checked without a listen address", func(s string) string {
			return s + "web: {session_ttl: 0s, host_names: [\"http://bad:80\"]}\n"
		}, 0o600, []string{"web.session_ttl: must be positive", `web.host_names[0]: "http://bad:80" is not a host name`}},
		{"broker port out of range", func(s string) string {
			return strings.Replace(s, "broker.example.com:8883", "broker.example.com:70000", 1)
		}, 0o600,
			[]string{`uplink.brokers[0]: "mqtts://broker.example.com:70000" is not a broker URL`}},
		{"broker without a host", func(s string) string { return strings.Replace(s, "broker.example.com:8883", ":8883", 1) }, 0o600,
			[]string{`uplink.brokers[0]: "mqtts://:8883" is not a broker URL`}},
		{"broker with an empty port", func(s string) string { return strings.Replace(s, "broker.example.com:8883", "broker.example.com:", 1) }, 0o600,
			[]string{`uplink.brokers[0]: "mqtts://broker.example.com:" is not a broker URL`}},
		{"photo total that would overflow", func(s string) string { return s + "photos: {max_total_mb: 9223372036854775807}\n" }, 0o600,
			[]string{":12:24: photos.max_total_mb: must be 1 to 8796093022207 (MiB; more does not fit in a count of bytes)"}},
		{"invalid yaml", func(s string) string { return s + "devices: [\n" }, 0o600,
			[]string{": (document): invalid YAML:"}},
		{"missing cert file", func(s string) string { return strings.Replace(s, "client.pem", "nope.pem", 1) }, 0o600,
			[]string{":7:14: uplink.cert_file: cannot read ", "nope.pem: no such file or directory"}},
		{"station with a scale that is a scanner", func(s string) string {
			return s + "stations:\n  - {name: dock-1, scanner: dock-scanner, scale: demo-scanner, printer: nope}\n"
		}, 0o600, []string{":13:50: stations[0].scale: device \"demo-scanner\" is a scanner, not a scale",
			":13:73: stations[0].printer: no device named \"nope\" in devices"}},
		{"device in two stations", func(s string) string {
			return s + "stations:\n  - {name: a, scanner: dock-scanner}\n  - {name: b, scanner: dock-scanner, weight_window: -1s}\n"
		}, 0o600, []string{":14:24: stations[1].scanner: device \"dock-scanner\" already belongs to station \"a\"",
			"stations[1].weight_window: must not be negative"}},
		{"station with a camera that is a scanner", func(s string) string {
			return s + "stations:\n  - {name: dock-1, scanner: dock-scanner, camera: demo-scanner}\n"
		}, 0o600, []string{"stations[0].camera: device \"demo-scanner\" is a scanner, not a camera"}},
		{"station without scanner", func(s string) string { return s + "stations:\n  - {name: a, label_code: datamatrix}\n" }, 0o600,
			[]string{"stations[0].scanner: required", "stations[0].label_code: unknown code \"datamatrix\""}},
		{"bad internal code rules", func(s string) string {
			return s + "barcodes:\n  internal:\n    - {kind: badge, prefix: EMP}\n    - {kind: location, pattern: \"(\"}\n"
		}, 0o600, []string{":14:7: barcodes.internal[0]: kind \"badge\" is not recipient, location, parcel, round or action",
			":15:7: barcodes.internal[1]: pattern: error parsing regexp"}},
		{"bad action codes", func(s string) string {
			return s + "barcodes:\n  internal:\n    - {kind: action, prefix: ACT-FLY, action: fly}\n    - {kind: recipient, prefix: EMP, action: deliver}\n"
		}, 0o600, []string{"barcodes.internal[0]: action \"fly\" is not one of receive, move, out_for_delivery, deliver, return",
			"barcodes.internal[1]: action is only for kind action"}},
		{"bad delivery settings", func(s string) string {
			return s + "delivery:\n  proof: [badge, iris, badge]\n  mode_idle: 0s\n  overdue: -1h\n"
		}, 0o600, []string{"delivery.proof[1]: unknown proof method \"iris\" (badge, signature, pin, clerk)",
			"delivery.proof[2]: badge is listed twice", "delivery.mode_idle: must be positive", "delivery.overdue: must be positive"}},
		{"no proof method", func(s string) string { return s + "delivery:\n  proof: []\n" }, 0o600,
			[]string{"delivery.proof: list at least one proof method"}},
		{"password instead of a hash", func(s string) string {
			return s + "web:\n  listen: 127.0.0.1:8080\n  users:\n    - {name: anna, role: boss, password_hash: hunter2}\n"
		}, 0o600, []string{"web.users[0].role: unknown role \"boss\"", "web.users[0].password_hash: not a bcrypt hash; store hashes only"}},
		{"web without users or with a bad address", func(s string) string { return s + "web: {listen: localhost}\n" }, 0o600,
			[]string{"web.listen: \"localhost\" is not host:port", "web.users: required"}},
		{"bad fleet key", func(s string) string {
			return s + "fleet:\n  public_keys:\n    - {id: it, key: bm90IGEga2V5}\n    - {id: it, key_file: nope.pub}\n"
		}, 0o600, []string{"fleet.public_keys[0].key: parse public key", "fleet.public_keys[1].id: duplicate key id \"it\"",
			"fleet.public_keys[1].key_file: cannot read"}},
		{"several problems at once", func(s string) string {
			return strings.Replace(s, "driver: sim", "driver: laser", 1) + "log: {level: loud}\n"
		}, 0o600, []string{"devices[1].driver: unknown driver \"laser\"", "log.level: unknown level \"loud\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTLS(t, dir, tc.keyMode)
			path := filepath.Join(dir, "bad.yaml")
			os.WriteFile(path, []byte(tc.edit(good)), 0o644)
			_, err := Load(path)
			if err == nil {
				t.Fatal("broken config accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\nlacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error echoes a password: %s", msg)
			}
			if !strings.HasPrefix(msg, path+":") {
				t.Errorf("error does not start with the file name: %s", msg)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("version: 1\ndevices: [{name: a, driver: sim, kind: scanner, interval: -1s}]\n"))
	f.Add([]byte("{a: &x [*x]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

func TestHardwareDevices(t *testing.T) {
	dir := t.TempDir()
	writeTLS(t, dir, 0o600)
	base := strings.SplitN(good, "devices:", 2)[0]
	path := filepath.Join(dir, "hw.yaml")
	os.WriteFile(path, []byte(base+`devices:
  - {name: wedge, kind: scanner, driver: hid-keyboard, usb: "0c2e:0200", layout: de}
  - {name: pos, kind: scanner, driver: hid-pos, usb: "0c2e:0b61/SN1"}
  - {name: postal, kind: scale, driver: hid-pos, usb: "0922:8003"}
  - {name: ship, kind: scale, driver: nci, port: /dev/ttyUSB0}
  - {name: lab, kind: scale, driver: mt-sics, usb: "0eb8:f000"}
  - {name: old, kind: scale, driver: toledo, port: /dev/ttyS0, unit: kg}
  - {name: stream, kind: scale, driver: continuous, port: /dev/ttyS1}
  - {name: cdc, kind: scanner, driver: serial-line, usb: "0c2e:0b6a"}
  - {name: zebra, kind: printer, driver: zpl, address: "tcp://127.0.0.1:9100"}
  - {name: cam, kind: camera, driver: v4l2, path: /dev/video0, width: 1280}
  - {name: simcam, kind: camera, driver: sim-camera}
  - {name: zebra-win, kind: printer, driver: zpl, address: "serial://COM3?baud=9600"}
  - {name: zebra-lan, kind: printer, driver: zpl, address: "tcp://printer.lan"}
`), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Devices[3]; d.DataBits != 7 || d.Parity != "even" || d.PollInterval.D() != 250*time.Millisecond {
		t.Errorf("nci defaults (7E1, 250ms): %+v", d)
	}
	if d := c.Devices[4]; d.DataBits != 8 || d.Parity != "none" {
		t.Errorf("mt-sics defaults (8N1): %+v", d)
	}
	if d := c.Devices[9]; d.Width != 1280 || d.Height != 1200 || d.Warmup != 5 || d.ReadTimeout.D() != 2*time.Second {
		t.Errorf("v4l2 defaults (height 1200, warmup 5, read_timeout 2s): %+v", d)
	}
	if c.Devices[0].Layout != "de" || c.Devices[1].Layout != "us" {
		t.Errorf("layouts: %q %q", c.Devices[0].Layout, c.Devices[1].Layout)
	}

	os.WriteFile(path, []byte(base+`devices:
  - {name: a, kind: scale, driver: hid-keyboard, usb: "0c2e:0200"}
  - {name: b, kind: scanner, driver: hid-pos}
  - {name: c, kind: scale, driver: nci}
  - {name: d, kind: scale, driver: toledo, port: /dev/ttyS0, unit: stone}
  - {name: e, kind: scale, driver: nci, port: /dev/ttyS0, terminator: cr}
  - {name: f, kind: scanner, driver: hid-keyboard, usb: "12:34", layout: fr}
  - {name: g, kind: printer, driver: zpl, address: "lpd://printer"}
  - {name: h, kind: camera, driver: v4l2, width: 8, warmup: -1}
  - {name: i, kind: scanner, driver: sim-camera}
  - {name: j, kind: camera, driver: sim-camera, path: /dev/video0}
  - {name: k, kind: printer, driver: zpl, address: "serial://"}
  - {name: l, kind: printer, driver: zpl, address: "tcp://127.0.0.1:99999"}
  - {name: m, kind: printer, driver: zpl, address: "serial:///dev/ttyUSB0?baud=abc"}
`), 0o644)
	_, err = Load(path)
	if err == nil {
		t.Fatal("broken hardware config accepted")
	}
	for _, want := range []string{
		`devices[0].kind: driver hid-keyboard drives a scanner, not a "scale"`,
		"devices[1].usb: required",
		"devices[2].port: required",
		`devices[3].unit: unknown unit "stone"`,
		"devices[4].terminator: not used by driver nci",
		`devices[5].usb: "12:34" is not a USB id`,
		`devices[5].layout: unknown keyboard layout "fr"`,
		"devices[6].address: required: tcp://host:9100, serial:///dev/ttyUSB0?baud=9600 (serial://COM3 on Windows), or usb:///dev/usb/lp0",
		"devices[10].address: required: tcp://host:9100",
		"devices[11].address: required: tcp://host:9100",
		"devices[12].address: required: tcp://host:9100",
		"devices[7].path: required: the camera's video device",
		"devices[7].width: must be 16 to 8192 (pixels)",
		"devices[7].warmup: must be 0 to 100 (frames)",
		`devices[8].kind: driver sim-camera drives a camera, not a "scanner"`,
		"devices[9].path: not used by driver sim-camera",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
}

// A file named relative to the working directory still gives absolute
// paths: a remote config names the same files, and is compared with them.
func TestPathsAreAbsoluteForARelativeFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeTLS(t, filepath.Join(dir, "etc"), 0o600)
	if err := os.WriteFile(filepath.Join(dir, "etc", "m.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load(filepath.Join("etc", "m.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"storage.path": c.Storage.Path, "uplink.ca_file": c.Uplink.CAFile, "uplink.key_file": c.Uplink.KeyFile} {
		if want := filepath.Join(dir, "etc", filepath.Base(p)); p != want {
			t.Errorf("%s = %q, want %q", name, p, want)
		}
	}
}

package config

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"image"
	_ "image/jpeg" // a sim-camera's picture
	_ "image/png"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/label"
	"github.com/mailroomd/mailroomd/internal/seal"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// TopicPrefixRule says what ValidTopicPrefix accepts.
const TopicPrefixRule = "not empty, no wildcards, no leading '$', no leading, trailing or double '/'"

// ValidTopicPrefix reports whether p can prefix the box's topics.
func ValidTopicPrefix(p string) bool {
	return p != "" && !strings.Contains(p, "//") && !strings.ContainsAny(p, "+#") && !strings.HasPrefix(p, "/") &&
		!strings.HasSuffix(p, "/") && !strings.HasPrefix(p, "$")
}

// ValidApplianceID reports whether id can be an appliance.id: 1 to 64
// letters, digits, '-', '_' or '.', starting with a letter or digit.
func ValidApplianceID(id string) bool { return nameRE.MatchString(id) }

// certIdentity reads the common name and DNS names of the first
// certificate in a PEM file; ok is false when there is none to read.
func certIdentity(path string) (cn string, names []string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, false
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", nil, false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", nil, false
	}
	return cert.Subject.CommonName, cert.DNSNames, true
}

var hostNameRE = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

var usbRE = regexp.MustCompile(`^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}(/.+)?$`)

func set(keys ...string) map[string]bool {
	m := map[string]bool{"name": true, "kind": true, "driver": true}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func (d *decoder) validate(c *Config) {
	bad := func(field, format string, args ...any) { d.addf(d.at(field), field, format, args...) }
	// Paths are made absolute, also when the file was named relative to
	// the working directory: a remote config (which must name the same
	// files) is compared with them, and writes them absolute.
	dir := filepath.Dir(c.File)
	if a, err := filepath.Abs(dir); err == nil {
		dir = a
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}

	switch c.Version {
	case Version:
	case 0:
		bad("version", "required: set version: %d", Version)
	default:
		bad("version", "unsupported version %d (this build understands version %d)", c.Version, Version)
	}

	if c.Appliance.ID == "" {
		bad("appliance.id", "required")
	} else if !nameRE.MatchString(c.Appliance.ID) {
		bad("appliance.id", "%q is not a valid id: use 1-64 letters, digits, '-', '_' or '.' (it is the MQTT client id and a topic segment)", c.Appliance.ID)
	}

	if c.Storage.Path == "" {
		bad("storage.path", "required: the buffer's database file (leave the key out for %s)", DefaultStoragePath)
	}
	c.Storage.Path = abs(c.Storage.Path)
	if c.Storage.EncryptionKeyFile != "" {
		c.Storage.EncryptionKeyFile = abs(c.Storage.EncryptionKeyFile)
		if _, err := seal.Load(c.Storage.EncryptionKeyFile); err != nil {
			bad("storage.encryption_key_file", "%v", err)
		}
	}
	if c.Storage.MaxPending < 0 {
		bad("storage.max_pending", "must not be negative (0: no limit)")
	}
	if c.Storage.RetainSent < 0 {
		bad("storage.retain_sent", "must not be negative")
	}

	u := &c.Uplink
	if len(u.Brokers) == 0 {
		bad("uplink.brokers", "required: list at least one broker, e.g. mqtts://broker.example.com:8883")
	}
	needTLS := false
	for i, b := range u.Brokers {
		f := fmt.Sprintf("uplink.brokers[%d]", i)
		bu, err := url.Parse(b)
		if err != nil || bu.Hostname() == "" || !validPort(bu) {
			bad(f, "%q is not a broker URL such as mqtts://broker.example.com:8883 (a host, and a port from 1 to 65535 or none)", b)
			continue
		}
		switch bu.Scheme {
		case "mqtts", "ssl", "tls":
			needTLS = true
		case "mqtt", "tcp":
			if !u.Insecure {
				bad(f, "%s is plaintext MQTT and is refused: use mqtts:// or, for a lab only, set uplink.insecure: true", b)
			}
		default:
			bad(f, "unsupported scheme %q (use mqtts://)", bu.Scheme)
		}
		if bu.Path != "" && bu.Path != "/" {
			bad(f, "a broker URL has no path: %q", b)
		}
	}
	u.CAFile, u.CertFile, u.KeyFile = abs(u.CAFile), abs(u.CertFile), abs(u.KeyFile)
	if needTLS {
		for _, f := range []struct{ field, path string }{{"uplink.ca_file", u.CAFile}, {"uplink.cert_file", u.CertFile}, {"uplink.key_file", u.KeyFile}} {
			if f.path == "" {
				bad(f.field, "required for mutual TLS")
				continue
			}
			if _, err := os.Stat(f.path); err != nil {
				bad(f.field, "cannot read %s: %v", f.path, unwrapPathError(err))
			}
		}
		if u.KeyFile != "" {
			if msg := keyFileProblem(u.KeyFile); msg != "" {
				bad("uplink.key_file", "%s", msg)
			}
		}
		// The broker takes the client id from the certificate: a box whose
		// certificate names another appliance publishes under that name's
		// topics, where its access list drops every event (and still
		// acknowledges it).
		if cn, names, ok := certIdentity(u.CertFile); ok && c.Appliance.ID != "" && cn != c.Appliance.ID && !slices.Contains(names, c.Appliance.ID) {
			bad("uplink.cert_file", "the certificate is for %q, but appliance.id is %q: they must be the same (the broker takes the client id from the certificate)", cn, c.Appliance.ID)
		}
	}
	if !ValidTopicPrefix(u.TopicPrefix) {
		bad("uplink.topic_prefix", "%q is not a valid topic prefix: %s", u.TopicPrefix, TopicPrefixRule)
	}
	if u.InflightWindow < 1 || u.InflightWindow > 65535 {
		bad("uplink.inflight_window", "must be between 1 and 65535")
	}
	if u.BatchMax < 0 || u.BatchMax > 1000 {
		bad("uplink.batch_max", "must be between 0 (no batching) and 1000")
	}
	for _, f := range []struct {
		field string
		v     Duration
	}{{"uplink.keepalive", u.KeepAlive}, {"uplink.connect_timeout", u.ConnectTimeout}, {"uplink.write_timeout", u.WriteTimeout}, {"uplink.reconnect_min", u.ReconnectMin}, {"uplink.reconnect_max", u.ReconnectMax}} {
		if f.v <= 0 {
			bad(f.field, "must be positive")
		}
	}
	if u.ShutdownTimeout < 0 {
		bad("uplink.shutdown_timeout", "must not be negative (0: do not wait for in-flight publishes)")
	}
	if u.KeepAlive.D() > 0 && u.KeepAlive.D().Seconds() < 1 {
		bad("uplink.keepalive", "must be at least 1s")
	}
	if u.ReconnectMax < u.ReconnectMin {
		bad("uplink.reconnect_max", "must not be less than reconnect_min (%s)", u.ReconnectMin)
	}

	names := map[string]int{}
	for i := range c.Devices {
		dev := &c.Devices[i]
		p := fmt.Sprintf("devices[%d]", i)
		if dev.Name == "" {
			bad(p+".name", "required")
		} else if !nameRE.MatchString(dev.Name) {
			bad(p+".name", "%q is not a valid name: use letters, digits, '-', '_' or '.'", dev.Name)
		} else if j, dup := names[dev.Name]; dup {
			bad(p+".name", "duplicate device name %q (also devices[%d])", dev.Name, j)
		} else {
			names[dev.Name] = i
		}
		spec, known := DriverByName(dev.Driver)
		keys := set(spec.Keys...)
		if !known {
			if dev.Driver == "" {
				bad(p+".driver", "required (one of: %s)", driverNames())
			} else {
				bad(p+".driver", "unknown driver %q (one of: %s)", dev.Driver, driverNames())
			}
			continue
		}
		kinds := spec.Kinds
		if dev.Kind == "" {
			bad(p+".kind", "required (%s for driver %s)", strings.Join(kinds, " or "), dev.Driver)
		} else if !slices.Contains(kinds, dev.Kind) {
			bad(p+".kind", "driver %s drives a %s, not a %q", dev.Driver, strings.Join(kinds, " or "), dev.Kind)
		}
		if dev.USB != "" && !usbRE.MatchString(dev.USB) {
			bad(p+".usb", "%q is not a USB id: use vid:pid or vid:pid/serial in hex, e.g. 0922:8003", dev.USB)
		}
		for path := range d.where {
			if key, ok := strings.CutPrefix(path, p+"."); ok && !strings.ContainsAny(key, ".[#") && !keys[key] {
				d.addf(d.where[path+"#key"], path, "not used by driver %s", dev.Driver)
			}
		}
		switch dev.Driver {
		case "serial-line":
			validateSerial(dev, p, bad)
		case "sim":
			if dev.Interval <= 0 {
				bad(p+".interval", "must be positive")
			}
		case "zpl":
			if u, err := url.Parse(dev.Address); dev.Address == "" || err != nil ||
				!(u.Scheme == "tcp" && u.Hostname() != "" && validPort(u) || u.Scheme == "serial" && PrinterPort(u) != "" && validBaud(u) || u.Scheme == "usb" && u.Path != "") {
				bad(p+".address", "required: tcp://host:9100, serial:///dev/ttyUSB0?baud=9600 (serial://COM3 on Windows), or usb:///dev/usb/lp0 (a USB printer through Linux's usblp)")
			}
			if dev.PollInterval <= 0 {
				bad(p+".poll_interval", "must be positive")
			}
			if dev.ReadTimeout <= 0 {
				bad(p+".read_timeout", "must be positive")
			}
			if dev.ReconnectMax <= 0 {
				bad(p+".reconnect_max", "must be positive")
			}
		case "sim-camera":
			if dev.Image != "" {
				dev.Image = abs(dev.Image)
				if msg := checkPicture(dev.Image); msg != "" {
					bad(p+".image", "%s", msg)
				}
			}
		case "v4l2":
			if dev.Path == "" {
				bad(p+".path", "required: the camera's video device, best a /dev/v4l/by-id/...-video-index0 link (see `mailroomd devices`)")
			}
			dev.Path = abs(dev.Path)
			if dev.Width < 16 || dev.Width > 8192 {
				bad(p+".width", "must be 16 to 8192 (pixels)")
			}
			if dev.Height < 16 || dev.Height > 8192 {
				bad(p+".height", "must be 16 to 8192 (pixels)")
			}
			if dev.Warmup < 0 || dev.Warmup > 100 {
				bad(p+".warmup", "must be 0 to 100 (frames)")
			}
			if dev.ReadTimeout <= 0 || dev.ReadTimeout.D() > 10*time.Second {
				bad(p+".read_timeout", "must be positive and at most 10s (a still is given up after 20s)")
			}
			if dev.ReconnectMax <= 0 {
				bad(p+".reconnect_max", "must be positive")
			}
		case "hid-keyboard", "hid-pos":
			if dev.USB == "" {
				bad(p+".usb", "required: the device's USB id, vid:pid (see `mailroomd devices`)")
			}
			if dev.Layout != "us" && dev.Layout != "de" {
				bad(p+".layout", "unknown keyboard layout %q (us, de)", dev.Layout)
			}
			if dev.MaxLength < 1 || dev.MaxLength > 65536 {
				bad(p+".max_length", "must be between 1 and 65536")
			}
			if dev.ReconnectMax <= 0 {
				bad(p+".reconnect_max", "must be positive")
			}
		default: // serial scales
			validatePort(dev, p, bad)
			if dev.PollInterval <= 0 {
				bad(p+".poll_interval", "must be positive")
			}
			if dev.ReadTimeout <= 0 {
				bad(p+".read_timeout", "must be positive")
			}
			if dev.Driver == "toledo" && !slices.Contains([]string{"g", "kg", "lb", "oz"}, dev.Unit) {
				bad(p+".unit", "unknown unit %q (g, kg, lb, oz)", dev.Unit)
			}
		}
	}

	d.validateStations(c, bad, abs)
	validateWeb(&c.Web, bad, abs)
	validateFleet(&c.Fleet, bad, abs)
	validateDelivery(&c.Delivery, bad)
	if ph := c.Photos; ph.MaxSizeKB < 16 || ph.MaxSizeKB > 65536 {
		bad("photos.max_size_kb", "must be 16 to 65536 (KiB)")
	}
	if c.Photos.MaxTotalMB < 1 || c.Photos.MaxTotalMB > maxPhotosTotalMB {
		bad("photos.max_total_mb", "must be 1 to %d (MiB; more does not fit in a count of bytes)", maxPhotosTotalMB)
	}
	if c.Photos.LongEdge < 320 || c.Photos.LongEdge > 8192 {
		bad("photos.long_edge", "must be 320 to 8192 (pixels)")
	}
	if c.Photos.RetainSent < 0 {
		bad("photos.retain_sent", "must not be negative")
	}
	if c.Photos.ReadsLabels() && strings.TrimSpace(c.Photos.OCRCommand) == "" {
		bad("photos.ocr_command", "name the Tesseract command (tesseract), or set photos.ocr: false")
	}
	if p := c.Directory.Privacy; p != PrivacyName && p != PrivacyID {
		bad("directory.privacy", "must be %q (events carry the recipient's id and name) or %q (the id alone), not %q", PrivacyName, PrivacyID, p)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "unknown level %q (debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "unknown format %q (text, json)", c.Log.Format)
	}
}

func validateSerial(dev *Device, p string, bad func(string, string, ...any)) {
	validatePort(dev, p, bad)
	if _, err := ParseTerminator(dev.Terminator); err != nil {
		bad(p+".terminator", "%v", err)
	}
	if dev.MaxLength < 1 || dev.MaxLength > 65536 {
		bad(p+".max_length", "must be between 1 and 65536")
	}
	switch dev.ControlChars {
	case "strip", "keep", "reject":
	default:
		bad(p+".control_chars", "unknown policy %q (strip, keep, reject)", dev.ControlChars)
	}
}

// validatePort checks the settings every serial device shares.
func validatePort(dev *Device, p string, bad func(string, string, ...any)) {
	switch {
	case dev.Port == "" && dev.USB == "":
		bad(p+".port", "required: a device path such as /dev/ttyACM0 or /dev/serial/by-id/..., or usb: vid:pid")
	case dev.Port != "" && dev.USB != "":
		bad(p+".usb", "set either port or usb, not both")
	}
	if dev.Baud <= 0 {
		bad(p+".baud", "must be positive")
	}
	if dev.DataBits < 5 || dev.DataBits > 8 {
		bad(p+".data_bits", "must be 5, 6, 7 or 8")
	}
	switch dev.Parity {
	case "none", "odd", "even", "mark", "space":
	default:
		bad(p+".parity", "unknown parity %q (none, odd, even, mark, space)", dev.Parity)
	}
	switch dev.StopBits {
	case "1", "1.5", "2":
	default:
		bad(p+".stop_bits", "unknown stop bits %q (1, 1.5, 2)", dev.StopBits)
	}
	if dev.ReconnectMax <= 0 {
		bad(p+".reconnect_max", "must be positive")
	}
}

// ParseTerminator turns a terminator setting into the bytes that end a line:
// cr, lf, crlf, tab, etx, a single character, or a byte as 0xNN.
func ParseTerminator(s string) ([]byte, error) {
	switch strings.ToLower(s) {
	case "cr":
		return []byte{'\r'}, nil
	case "lf":
		return []byte{'\n'}, nil
	case "crlf":
		return []byte{'\r', '\n'}, nil
	case "tab":
		return []byte{'\t'}, nil
	case "etx":
		return []byte{0x03}, nil
	}
	if len(s) == 1 {
		return []byte(s), nil
	}
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok && len(h) == 2 {
		if v, err := strconv.ParseUint(h, 16, 8); err == nil {
			return []byte{byte(v)}, nil
		}
	}
	return nil, fmt.Errorf("unknown terminator %q (cr, lf, crlf, tab, etx, one character, or a byte as 0xNN)", s)
}

// checkPicture returns why the file at path cannot be a simulated
// camera's picture, or "".
func checkPicture(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", path, unwrapPathError(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Sprintf("%s is a directory, not a picture", path)
	}
	img, _, err := image.Decode(f) // whole: the camera returns all of it
	if err != nil {
		return fmt.Sprintf("%s is not a JPEG or PNG picture: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() > 8192 || b.Dy() > 8192 {
		return fmt.Sprintf("%s is %d×%d pixels: a photo is at most 8192 on each edge", path, b.Dx(), b.Dy())
	}
	return ""
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (d *decoder) validateStations(c *Config, bad func(string, string, ...any), abs func(string) string) {
	kinds := map[string]string{}
	for _, dev := range c.Devices {
		kinds[dev.Name] = dev.Kind
	}
	owner := map[string]string{}
	names := map[string]bool{}
	for i := range c.Stations {
		st := &c.Stations[i]
		p := fmt.Sprintf("stations[%d]", i)
		checkName(bad, p+".name", "station", st.Name, names)
		for _, ref := range []struct{ key, dev, kind string }{
			{"scanner", st.Scanner, "scanner"}, {"scale", st.Scale, "scale"}, {"printer", st.Printer, "printer"},
			{"camera", st.Camera, "camera"},
		} {
			f := p + "." + ref.key
			if ref.dev == "" {
				if ref.key == "scanner" {
					bad(f, "required: the name of a scanner in devices")
				}
				continue
			}
			kind, ok := kinds[ref.dev]
			switch {
			case !ok:
				bad(f, "no device named %q in devices", ref.dev)
			case kind == "":
				bad(f, "device %q has no kind (it must be a %s)", ref.dev, ref.kind)
			case kind != ref.kind:
				bad(f, "device %q is a %s, not a %s", ref.dev, kind, ref.kind)
			case owner[ref.dev] != "":
				bad(f, "device %q already belongs to station %q: a device belongs to at most one station", ref.dev, owner[ref.dev])
			default:
				owner[ref.dev] = st.Name
			}
		}
		for _, w := range []struct {
			key string
			v   Duration
		}{{"weight_window", st.WeightWindow}, {"duplicate_window", st.DuplicateWindow}, {"attach_window", st.AttachWindow}} {
			if w.v < 0 {
				bad(p+"."+w.key, "must not be negative")
			}
		}
		if st.LabelCode != "code128" && st.LabelCode != "qr" {
			bad(p+".label_code", "unknown code %q (code128, qr)", st.LabelCode)
		}
		if st.LabelTemplate != "" {
			st.LabelTemplate = abs(st.LabelTemplate)
			if st.Printer == "" {
				bad(p+".label_template", "set, but the station has no printer")
			}
			if b, err := os.ReadFile(st.LabelTemplate); err != nil {
				bad(p+".label_template", "cannot read %s: %v", st.LabelTemplate, unwrapPathError(err))
			} else if _, err := label.Parse(string(b)); err != nil {
				bad(p+".label_template", "%v", err)
			}
		}
	}
	rules := make([]barcode.Rule, 0, len(c.Barcodes.Internal))
	for i, r := range c.Barcodes.Internal {
		rules = append(rules, barcode.Rule{Kind: barcode.Kind(r.Kind), Prefix: r.Prefix, Pattern: r.Pattern, Action: r.Action})
		if _, err := barcode.NewClassifier(rules[i : i+1]); err != nil {
			bad(fmt.Sprintf("barcodes.internal[%d]", i), "%s", strings.TrimPrefix(err.Error(), "barcode rule 1: "))
		}
	}
}

// Rules returns the internal barcode rules in the form the classifier takes.
func (b Barcodes) Rules() []barcode.Rule {
	out := make([]barcode.Rule, len(b.Internal))
	for i, r := range b.Internal {
		out[i] = barcode.Rule{Kind: barcode.Kind(r.Kind), Prefix: r.Prefix, Pattern: r.Pattern, Action: r.Action}
	}
	return out
}

var bcryptRE = regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

func validateWeb(w *Web, bad func(string, string, ...any), abs func(string) string) {
	// Without listen the page is off, but the settings written are checked
	// all the same (every problem is reported at once); only its files are
	// not looked for, since nothing reads them.
	if w.Listen == "" {
		if len(w.Users) > 0 {
			bad("web.listen", "required when web.users are set, e.g. 127.0.0.1:8080 or :8443")
		}
	} else if _, port, err := net.SplitHostPort(w.Listen); err != nil || port == "" {
		bad("web.listen", "%q is not host:port, e.g. 127.0.0.1:8080 or :8443", w.Listen)
	}
	w.CertFile, w.KeyFile = abs(w.CertFile), abs(w.KeyFile)
	switch {
	case (w.CertFile == "") != (w.KeyFile == ""):
		bad("web.cert_file", "set both cert_file and key_file, or neither")
	case w.KeyFile != "" && w.Listen != "":
		for _, f := range []struct{ field, path string }{{"web.cert_file", w.CertFile}, {"web.key_file", w.KeyFile}} {
			if _, err := os.Stat(f.path); err != nil {
				bad(f.field, "cannot read %s: %v", f.path, unwrapPathError(err))
			}
		}
		if msg := keyFileProblem(w.KeyFile); msg != "" {
			bad("web.key_file", "%s", msg)
		}
	}
	if w.SessionTTL <= 0 {
		bad("web.session_ttl", "must be positive")
	}
	if w.MaxFailures < 1 {
		bad("web.max_failures", "must be at least 1")
	}
	if w.Lockout <= 0 {
		bad("web.lockout", "must be positive")
	}
	for i, n := range w.HostNames {
		if !hostNameRE.MatchString(n) {
			bad(fmt.Sprintf("web.host_names[%d]", i), "%q is not a host name such as mailroom.example.com (no scheme, port or wildcard)", n)
		}
	}
	if len(w.Users) == 0 && w.Listen != "" {
		bad("web.users", "required: at least one user (create a password hash with `mailroomd passwd NAME`)")
	}
	seen := map[string]bool{}
	for i, u := range w.Users {
		p := fmt.Sprintf("web.users[%d]", i)
		checkName(bad, p+".name", "user", u.Name, seen)
		if u.Role != "clerk" && u.Role != "admin" {
			bad(p+".role", "unknown role %q (clerk, admin)", u.Role)
		}
		if !bcryptRE.MatchString(u.PasswordHash) {
			// Never echo the value: it may be a password typed in by mistake.
			bad(p+".password_hash", "not a bcrypt hash; store hashes only, never passwords: create one with `mailroomd passwd %s`", u.Name)
		}
	}
}

func validateFleet(f *Fleet, bad func(string, string, ...any), abs func(string) string) {
	f.ReleaseKeyFile = abs(f.ReleaseKeyFile)
	ids := map[string]bool{}
	for i := range f.PublicKeys {
		k := &f.PublicKeys[i]
		p := fmt.Sprintf("fleet.public_keys[%d]", i)
		switch {
		case k.ID == "":
			bad(p+".id", "required: the key id that envelopes name in key_id")
		case ids[k.ID]:
			bad(p+".id", "duplicate key id %q", k.ID)
		}
		ids[k.ID] = true
		switch {
		case (k.Key == "") == (k.KeyFile == ""):
			bad(p+".key", "give key (base64 of the 32-byte Ed25519 public key, or of its DER as inside `openssl pkey -pubout`'s PEM) or key_file (PEM), not both or neither")
		case k.KeyFile != "":
			k.KeyFile = abs(k.KeyFile)
			b, err := os.ReadFile(k.KeyFile)
			if err != nil {
				bad(p+".key_file", "cannot read %s: %v", k.KeyFile, unwrapPathError(err))
			} else if _, err := envelope.ParsePublicKey(string(b)); err != nil {
				bad(p+".key_file", "%v", err)
			}
		default:
			if _, err := envelope.ParsePublicKey(k.Key); err != nil {
				bad(p+".key", "%v", err)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"fleet.telemetry_interval", f.TelemetryInterval}, {"fleet.probe_interval", f.ProbeInterval}} {
		if d.v < 0 {
			bad(d.key, "must not be negative (0: disabled)")
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"fleet.probe_timeout", f.ProbeTimeout}, {"fleet.config_trial", f.ConfigTrial}, {"fleet.update_timeout", f.UpdateTimeout}} {
		if d.v <= 0 {
			bad(d.key, "must be positive")
		}
	}
	if f.ReleaseKeyFile == "" {
		bad("fleet.release_key_file", "required: the release public key that updates must be signed with")
	}
	al := f.Alerts
	for _, d := range []struct {
		key string
		v   Duration
	}{{"fleet.alerts.broker_unreachable", al.BrokerUnreachable}, {"fleet.alerts.device_disconnected", al.DeviceDisconnected}} {
		if d.v < 0 {
			bad(d.key, "must not be negative (0: alert at once)")
		}
	}
	for _, d := range []struct {
		key string
		v   int64
	}{{"fleet.alerts.pending_above", al.PendingAbove}, {"fleet.alerts.oldest_pending", int64(al.OldestPending)},
		{"fleet.alerts.disk_free_below_mb", al.DiskFreeBelowMB}, {"fleet.alerts.cert_expires_within", int64(al.CertExpiresWithin)},
		{"fleet.alerts.probe_slower_than", int64(al.ProbeSlowerThan)}} {
		if d.v < 0 {
			bad(d.key, "must not be negative (0: this alert is off)")
		}
	}
}

// Keys returns the fleet keys by id; the config was validated.
func (f *Fleet) Keys() (map[string]ed25519.PublicKey, error) {
	out := map[string]ed25519.PublicKey{}
	for _, k := range f.PublicKeys {
		text := k.Key
		if k.KeyFile != "" {
			b, err := os.ReadFile(k.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("fleet key %s: %w", k.ID, err)
			}
			text = string(b)
		}
		pk, err := envelope.ParsePublicKey(text)
		if err != nil {
			return nil, fmt.Errorf("fleet key %s: %w", k.ID, err)
		}
		out[k.ID] = pk
	}
	return out, nil
}

// checkName reports a missing, malformed or duplicate name of a station or
// user, and records it in seen.
func checkName(bad func(string, string, ...any), field, what, name string, seen map[string]bool) {
	switch {
	case name == "":
		bad(field, "required")
	case !nameRE.MatchString(name):
		bad(field, "%q is not a valid %s name: use letters, digits, '-', '_' or '.'", name, what)
	case seen[name]:
		bad(field, "duplicate %s name %q", what, name)
	}
	seen[name] = true
}

func validateDelivery(d *Delivery, bad func(string, string, ...any)) {
	if len(d.Proof) == 0 {
		bad("delivery.proof", "list at least one proof method (%s)", strings.Join(ProofMethods, ", "))
	}
	seen := map[string]bool{}
	for i, m := range d.Proof {
		switch {
		case !slices.Contains(ProofMethods, m):
			bad(fmt.Sprintf("delivery.proof[%d]", i), "unknown proof method %q (%s)", m, strings.Join(ProofMethods, ", "))
		case seen[m]:
			bad(fmt.Sprintf("delivery.proof[%d]", i), "%s is listed twice", m)
		}
		seen[m] = true
	}
	if d.ModeIdle <= 0 {
		bad("delivery.mode_idle", "must be positive, e.g. 2m")
	}
	if d.Overdue <= 0 {
		bad("delivery.overdue", "must be positive, e.g. 72h")
	}
	if d.RetainClosed < 0 {
		bad("delivery.retain_closed", "must not be negative")
	}
}

// maxPhotosTotalMB is the largest photos.max_total_mb: the most MiB a
// 64-bit count of bytes holds (2^43 − 1), far beyond any disk of the box.
const maxPhotosTotalMB = math.MaxInt64 >> 20

// PrinterPort is the serial port of a printer address serial:///dev/ttyUSB0
// or, on Windows, serial://COM3.
func PrinterPort(u *url.URL) string {
	if u.Path != "" && u.Path != "/" {
		return u.Path
	}
	return u.Host
}

// validPort reports whether a URL names no port, or one from 1 to 65535;
// an empty one after the colon is refused.
func validPort(u *url.URL) bool {
	if strings.HasSuffix(u.Host, ":") {
		return false
	}
	p := u.Port()
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// validBaud reports whether a serial printer's address has no baud or a
// positive one.
func validBaud(u *url.URL) bool {
	b := u.Query().Get("baud")
	if b == "" {
		return true
	}
	n, err := strconv.Atoi(b)
	return err == nil && n > 0
}

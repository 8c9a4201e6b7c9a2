// Package config loads and validates the mailroomd configuration file.
//
// The file is YAML with a version number. Unknown keys are errors, and every
// problem is reported with the file, line and column of the offending field,
// all at once, so an operator can fix a broken file in one pass.
package config

import (
	"fmt"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Version is the only configuration schema version this build understands.
const Version = 1

// Config is the whole configuration of one appliance.
type Config struct {
	Version   int       `yaml:"version"`
	Appliance Appliance `yaml:"appliance"`
	Storage   Storage   `yaml:"storage"`
	Uplink    Uplink    `yaml:"uplink"`
	Devices   []Device  `yaml:"devices"`
	Stations  []Station `yaml:"stations"`
	Barcodes  Barcodes  `yaml:"barcodes"`
	Delivery  Delivery  `yaml:"delivery"`
	Directory Directory `yaml:"directory"`
	Photos    Photos    `yaml:"photos"`
	Web       Web       `yaml:"web"`
	Fleet     Fleet     `yaml:"fleet"`
	Log       Log       `yaml:"log"`

	// File is the path the configuration was loaded from.
	File string `yaml:"-"`
}

// Appliance identifies this box.
type Appliance struct {
	// ID is the MQTT client id and the topic segment of this box.
	ID string `yaml:"id"`
	// Site names the building or location, informational.
	Site string `yaml:"site"`
}

// Storage configures the local event buffer.
type Storage struct {
	Path       string   `yaml:"path"`
	MaxPending int      `yaml:"max_pending"`
	RetainSent Duration `yaml:"retain_sent"`
	// EncryptionKeyFile, when set, seals event payloads at rest with
	// AES-256-GCM (`mailroomd buffer-key` makes a key line).
	EncryptionKeyFile string `yaml:"encryption_key_file"`
}

// Uplink configures the MQTT connection to the cloud.
type Uplink struct {
	Brokers         []string `yaml:"brokers"`
	CAFile          string   `yaml:"ca_file"`
	CertFile        string   `yaml:"cert_file"`
	KeyFile         string   `yaml:"key_file"`
	TopicPrefix     string   `yaml:"topic_prefix"`
	Insecure        bool     `yaml:"insecure"`
	InflightWindow  int      `yaml:"inflight_window"`
	BatchMax        int      `yaml:"batch_max"`
	KeepAlive       Duration `yaml:"keepalive"`
	ConnectTimeout  Duration `yaml:"connect_timeout"`
	WriteTimeout    Duration `yaml:"write_timeout"`
	ReconnectMin    Duration `yaml:"reconnect_min"`
	ReconnectMax    Duration `yaml:"reconnect_max"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Device configures one piece of hardware. Which keys apply depends on the
// driver; keys of another driver are rejected.
type Device struct {
	Name   string `yaml:"name"`
	Kind   string `yaml:"kind"`
	Driver string `yaml:"driver"`

	// USB selects a device by USB id, "vid:pid" or "vid:pid/serial" (hex):
	// for HID drivers always, for serial drivers instead of port.
	USB string `yaml:"usb"`

	// serial-line and serial scales
	Port         string   `yaml:"port"`
	Baud         int      `yaml:"baud"`
	DataBits     int      `yaml:"data_bits"`
	Parity       string   `yaml:"parity"`
	StopBits     string   `yaml:"stop_bits"`
	Terminator   string   `yaml:"terminator"`
	Prefix       string   `yaml:"prefix"`
	Suffix       string   `yaml:"suffix"`
	MaxLength    int      `yaml:"max_length"`
	ControlChars string   `yaml:"control_chars"`
	ReconnectMax Duration `yaml:"reconnect_max"`

	// hid-keyboard
	Layout string `yaml:"layout"`

	// zpl printers: tcp://host:9100
	Address string `yaml:"address"`

	// serial scales
	PollInterval Duration `yaml:"poll_interval"`
	ReadTimeout  Duration `yaml:"read_timeout"`
	Unit         string   `yaml:"unit"`

	// sim
	Interval Duration `yaml:"interval"`
	Seed     int64    `yaml:"seed"`

	// v4l2 cameras: the video device (best a /dev/v4l/by-id/ link) and
	// the size asked for; the camera gives the nearest it has.
	Path   string `yaml:"path"`
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	// Warmup is the frames dropped before a still, while the camera's
	// exposure settles.
	Warmup int `yaml:"warmup"`
	// Image is the picture (JPEG or PNG) a sim-camera returns; empty: a
	// generated test picture.
	Image string `yaml:"image"`
}

// Station is a receiving station: the scanner a clerk uses, and the scale
// and label printer beside it. A device belongs to at most one station.
type Station struct {
	Name    string `yaml:"name"`
	Scanner string `yaml:"scanner"`
	Scale   string `yaml:"scale"`
	Printer string `yaml:"printer"`
	// Camera, if set, takes a label photo of every parcel the station
	// receives.
	Camera string `yaml:"camera"`
	// WeightWindow is how long a parcel scan waits for the scale to settle.
	WeightWindow Duration `yaml:"weight_window"`
	// DuplicateWindow: the same code again within it is a duplicate.
	DuplicateWindow Duration `yaml:"duplicate_window"`
	// AttachWindow: a recipient or location code within it of a parcel scan
	// is attached to that parcel.
	AttachWindow Duration `yaml:"attach_window"`
	// LabelTemplate is a ZPL template file; empty means the built-in label.
	LabelTemplate string `yaml:"label_template"`
	// LabelCode is the symbology of the id on the label: code128 or qr.
	LabelCode string `yaml:"label_code"`
}

// Barcodes configures how codes are recognised.
type Barcodes struct {
	// Internal lists the mailroom's own codes, tried before carrier formats.
	Internal []InternalCode `yaml:"internal"`
}

// InternalCode recognises one family of internal codes by prefix or by
// regular expression.
type InternalCode struct {
	// Kind is recipient, location, parcel, round or action.
	Kind    string `yaml:"kind"`
	Prefix  string `yaml:"prefix"`
	Pattern string `yaml:"pattern"`
	// Action is the scan mode an action code switches to.
	Action string `yaml:"action"`
}

// Delivery configures what happens to parcels after the dock: custody
// scans, hand-over and proof of delivery.
type Delivery struct {
	// Proof lists the proof methods a hand-over accepts: badge, signature,
	// pin, clerk.
	Proof []string `yaml:"proof"`
	// ModeIdle is how long a station stays in a scan mode other than
	// receive without a scan before it falls back to receive.
	ModeIdle Duration `yaml:"mode_idle"`
	// Overdue is the age from which an open parcel is overdue.
	Overdue Duration `yaml:"overdue"`
	// RetainClosed is how long a delivered, returned or forwarded parcel's
	// state is kept on the box.
	RetainClosed Duration `yaml:"retain_closed"`
}

// Directory configures how the recipient directory is used.
type Directory struct {
	// Privacy is what events say of a recipient found in the directory:
	// "name" (the id and the display name) or "id" (the id alone; the name
	// a 2D label prints is left out as well).
	Privacy string `yaml:"privacy"`
}

// Photos configures the photos taken at receiving and hand-over.
type Photos struct {
	// MaxSizeKB is the largest photo accepted, in KiB.
	MaxSizeKB int64 `yaml:"max_size_kb"`
	// MaxTotalMB is how much the photos kept may take, in MiB: beyond it
	// new photos are refused (nothing kept is dropped).
	MaxTotalMB int64 `yaml:"max_total_mb"`
	// LongEdge is the long edge, in pixels, the page scales a photo to.
	LongEdge int `yaml:"long_edge"`
	// RetainSent is how long a photo is kept after its upload.
	RetainSent Duration `yaml:"retain_sent"`
	// OCR reads the recipient off label photos; OCRCommand is Tesseract.
	OCR        bool   `yaml:"ocr"`
	OCRCommand string `yaml:"ocr_command"`
}

// ReadsLabels reports whether label photos are read (photos.ocr).
func (p Photos) ReadsLabels() bool { return p.OCR }

// Privacy settings of directory.privacy.
const (
	PrivacyName = "name"
	PrivacyID   = "id"
)

// ProofMethods are the proof methods delivery.proof may list.
var ProofMethods = []string{"badge", "signature", "pin", "clerk"}

// Accepts reports whether a proof method is accepted.
func (d Delivery) Accepts(method string) bool { return slices.Contains(d.Proof, method) }

// Web configures the clerk status page, metrics and health endpoints.
type Web struct {
	// Listen is host:port; empty disables the web server.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile serve HTTPS. Without them a non-loopback listen
	// address gets a self-signed certificate generated on first start.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// SessionTTL is how long a login lasts.
	SessionTTL Duration `yaml:"session_ttl"`
	// MaxFailures failed logins for a user within Lockout lock it for Lockout.
	MaxFailures int      `yaml:"max_failures"`
	Lockout     Duration `yaml:"lockout"`
	Users       []User   `yaml:"users"`
	// HostNames are the names clerks' browsers use to reach the page on a
	// non-loopback address, besides its IP addresses and the box's own host
	// name; any other name in a request is refused (DNS rebinding).
	HostNames []string `yaml:"host_names"`
}

// User is a login of the status page. Only a password hash is stored.
type User struct {
	Name string `yaml:"name"`
	// Role is clerk (view, manual entry, reprint) or admin (also device tests).
	Role string `yaml:"role"`
	// PasswordHash is a bcrypt hash, as printed by `mailroomd passwd`.
	PasswordHash string `yaml:"password_hash"`
}

// Fleet configures telemetry, alerts and remote instructions over the
// uplink's MQTT connection.
type Fleet struct {
	// PublicKeys verify remote configs and commands; without any, every
	// remote instruction is refused.
	PublicKeys []FleetKey `yaml:"public_keys"`
	// TelemetryInterval is how often telemetry is published; 0 disables it.
	TelemetryInterval Duration `yaml:"telemetry_interval"`
	// ProbeInterval is how often the synthetic round trip runs; 0 disables it.
	ProbeInterval Duration `yaml:"probe_interval"`
	// ProbeTimeout is when a probe that has not come back counts as failed.
	ProbeTimeout Duration `yaml:"probe_timeout"`
	Alerts       Alerts   `yaml:"alerts"`
	// ConfigTrial is how long a remotely applied config has to reconnect
	// the uplink before it is rolled back.
	ConfigTrial Duration `yaml:"config_trial"`
	// RemoteLocalSettings lets a remote config change the local-only
	// settings (key and certificate paths, fleet keys, buffer path).
	RemoteLocalSettings bool `yaml:"remote_local_settings"`
	// ReleaseKeyFile is the release public key updates must be signed with.
	ReleaseKeyFile string `yaml:"release_key_file"`
	// UpdateTimeout is how long a new version has to become healthy.
	UpdateTimeout Duration `yaml:"update_timeout"`
}

// FleetKey is one fleet public key: an id and the key, inline (base64 of
// the 32 raw bytes) or in a PEM file.
type FleetKey struct {
	ID      string `yaml:"id"`
	Key     string `yaml:"key"`
	KeyFile string `yaml:"key_file"`
}

// Alerts holds the thresholds of the built-in alert rules.
type Alerts struct {
	BrokerUnreachable  Duration `yaml:"broker_unreachable"`
	PendingAbove       int64    `yaml:"pending_above"`
	OldestPending      Duration `yaml:"oldest_pending"`
	DiskFreeBelowMB    int64    `yaml:"disk_free_below_mb"`
	DeviceDisconnected Duration `yaml:"device_disconnected"`
	CertExpiresWithin  Duration `yaml:"cert_expires_within"`
	ProbeSlowerThan    Duration `yaml:"probe_slower_than"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// PersonalData keeps recipients and locations in log lines; by default
	// they are redacted.
	PersonalData bool `yaml:"personal_data"`
}

// Duration is a time.Duration written as a Go duration string ("2s", "168h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 30s or 168h")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use units such as 500ms, 30s, 168h)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Defaults, documented in configs/mailroomd.yaml.
const (
	DefaultStoragePath     = "/var/lib/mailroomd/buffer.db"
	DefaultMaxPending      = 1_000_000
	DefaultRetainSent      = Duration(168 * time.Hour)
	DefaultTopicPrefix     = "mailroom/v1"
	DefaultInflightWindow  = 64
	DefaultKeepAlive       = Duration(30 * time.Second)
	DefaultConnectTimeout  = Duration(10 * time.Second)
	DefaultWriteTimeout    = Duration(10 * time.Second)
	DefaultReconnectMin    = Duration(1 * time.Second)
	DefaultReconnectMax    = Duration(60 * time.Second)
	DefaultShutdownTimeout = Duration(5 * time.Second)
	DefaultBaud            = 9600
	DefaultDataBits        = 8
	DefaultParity          = "none"
	DefaultStopBits        = "1"
	DefaultTerminator      = "cr"
	DefaultMaxLength       = 256
	DefaultControlChars    = "strip"
	DefaultDeviceReconnect = Duration(10 * time.Second)
	DefaultSimInterval     = Duration(2 * time.Second)
	DefaultWeightWindow    = Duration(3 * time.Second)
	DefaultDuplicateWindow = Duration(30 * time.Second)
	DefaultAttachWindow    = Duration(30 * time.Second)
	DefaultLabelCode       = "code128"
	DefaultModeIdle        = Duration(2 * time.Minute)
	DefaultOverdue         = Duration(72 * time.Hour)
	DefaultRetainClosed    = Duration(30 * 24 * time.Hour)

	DefaultTelemetryInterval  = Duration(time.Minute)
	DefaultProbeInterval      = Duration(time.Minute)
	DefaultProbeTimeout       = Duration(10 * time.Second)
	DefaultConfigTrial        = Duration(time.Minute)
	DefaultReleaseKeyFile     = "/usr/share/mailroomd/release.pub"
	DefaultUpdateTimeout      = Duration(2 * time.Minute)
	DefaultBrokerUnreachable  = Duration(5 * time.Minute)
	DefaultPendingAbove       = 10000
	DefaultOldestPending      = Duration(time.Hour)
	DefaultDiskFreeBelowMB    = 500
	DefaultDeviceDisconnected = Duration(5 * time.Minute)
	DefaultCertExpiresWithin  = Duration(30 * 24 * time.Hour)
	DefaultProbeSlowerThan    = Duration(2 * time.Second)
)

// DefaultProof is delivery.proof when the file leaves it out.
var DefaultProof = []string{"badge", "signature", "pin"}

// applyDefaults sets the default of every key the file did not write
// (written reports whether it did, by field path): a key written as 0 or
// "" keeps that value, which the validation then accepts or refuses.
func (c *Config) applyDefaults(written func(path string) bool) {
	s := &c.Storage
	setDefault(written, "storage.path", &s.Path, DefaultStoragePath)
	setDefault(written, "storage.max_pending", &s.MaxPending, DefaultMaxPending)
	setDefault(written, "storage.retain_sent", &s.RetainSent, DefaultRetainSent)
	u := &c.Uplink
	setDefault(written, "uplink.topic_prefix", &u.TopicPrefix, DefaultTopicPrefix)
	setDefault(written, "uplink.inflight_window", &u.InflightWindow, DefaultInflightWindow)
	setDefault(written, "uplink.keepalive", &u.KeepAlive, DefaultKeepAlive)
	setDefault(written, "uplink.connect_timeout", &u.ConnectTimeout, DefaultConnectTimeout)
	setDefault(written, "uplink.write_timeout", &u.WriteTimeout, DefaultWriteTimeout)
	setDefault(written, "uplink.reconnect_min", &u.ReconnectMin, DefaultReconnectMin)
	setDefault(written, "uplink.reconnect_max", &u.ReconnectMax, DefaultReconnectMax)
	setDefault(written, "uplink.shutdown_timeout", &u.ShutdownTimeout, DefaultShutdownTimeout)
	for i := range c.Devices {
		d := &c.Devices[i]
		dp := fmt.Sprintf("devices[%d]", i)
		if spec, ok := DriverByName(d.Driver); ok && spec.Defaults != nil {
			spec.Defaults(d, func(key string) bool { return written != nil && written(dp+"."+key) })
		}
	}
	for i := range c.Stations {
		st := &c.Stations[i]
		sp := fmt.Sprintf("stations[%d]", i)
		setDefault(written, sp+".weight_window", &st.WeightWindow, DefaultWeightWindow)
		setDefault(written, sp+".duplicate_window", &st.DuplicateWindow, DefaultDuplicateWindow)
		setDefault(written, sp+".attach_window", &st.AttachWindow, DefaultAttachWindow)
		setDefault(written, sp+".label_code", &st.LabelCode, DefaultLabelCode)
	}
	if c.Delivery.Proof == nil && (written == nil || !written("delivery.proof")) {
		c.Delivery.Proof = slices.Clone(DefaultProof)
	}
	setDefault(written, "delivery.mode_idle", &c.Delivery.ModeIdle, DefaultModeIdle)
	setDefault(written, "delivery.overdue", &c.Delivery.Overdue, DefaultOverdue)
	setDefault(written, "delivery.retain_closed", &c.Delivery.RetainClosed, DefaultRetainClosed)
	setDefault(written, "directory.privacy", &c.Directory.Privacy, PrivacyName)
	setDefault(written, "photos.max_size_kb", &c.Photos.MaxSizeKB, 8192)
	setDefault(written, "photos.max_total_mb", &c.Photos.MaxTotalMB, 1024)
	setDefault(written, "photos.long_edge", &c.Photos.LongEdge, 1600)
	setDefault(written, "photos.retain_sent", &c.Photos.RetainSent, Duration(7*24*time.Hour))
	setDefault(written, "photos.ocr_command", &c.Photos.OCRCommand, "tesseract")
	setDefault(written, "photos.ocr", &c.Photos.OCR, true)
	setDefault(written, "web.session_ttl", &c.Web.SessionTTL, Duration(12*time.Hour))
	setDefault(written, "web.max_failures", &c.Web.MaxFailures, 5)
	setDefault(written, "web.lockout", &c.Web.Lockout, Duration(15*time.Minute))
	f := &c.Fleet
	setDefault(written, "fleet.telemetry_interval", &f.TelemetryInterval, DefaultTelemetryInterval)
	setDefault(written, "fleet.probe_interval", &f.ProbeInterval, DefaultProbeInterval)
	setDefault(written, "fleet.probe_timeout", &f.ProbeTimeout, DefaultProbeTimeout)
	setDefault(written, "fleet.config_trial", &f.ConfigTrial, DefaultConfigTrial)
	setDefault(written, "fleet.release_key_file", &f.ReleaseKeyFile, DefaultReleaseKeyFile)
	setDefault(written, "fleet.update_timeout", &f.UpdateTimeout, DefaultUpdateTimeout)
	al := &f.Alerts
	setDefault(written, "fleet.alerts.broker_unreachable", &al.BrokerUnreachable, DefaultBrokerUnreachable)
	setDefault(written, "fleet.alerts.pending_above", &al.PendingAbove, DefaultPendingAbove)
	setDefault(written, "fleet.alerts.oldest_pending", &al.OldestPending, DefaultOldestPending)
	setDefault(written, "fleet.alerts.disk_free_below_mb", &al.DiskFreeBelowMB, DefaultDiskFreeBelowMB)
	setDefault(written, "fleet.alerts.device_disconnected", &al.DeviceDisconnected, DefaultDeviceDisconnected)
	setDefault(written, "fleet.alerts.cert_expires_within", &al.CertExpiresWithin, DefaultCertExpiresWithin)
	setDefault(written, "fleet.alerts.probe_slower_than", &al.ProbeSlowerThan, DefaultProbeSlowerThan)
	setDefault(written, "log.level", &c.Log.Level, "info")
	setDefault(written, "log.format", &c.Log.Format, "text")
}

// setDefault sets *p to v when the key at path was not written and *p is
// still its zero value (a Config built in code has no written keys).
func setDefault[T comparable](written func(string) bool, path string, p *T, v T) {
	var zero T
	if *p == zero && (written == nil || !written(path)) {
		*p = v
	}
}

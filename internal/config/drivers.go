package config

import (
	"strings"
	"time"
)

// DriverSpec describes one device driver as the configuration knows it:
// the kinds of device it drives, the keys it accepts and their defaults.
// The driver's constructor is beside its spec in the daemon's device
// table (package app), which a test keeps in step with this one.
type DriverSpec struct {
	Name string
	// Kinds are the device kinds it drives: scanner, scale, printer,
	// camera.
	Kinds []string
	// Keys are the keys it accepts beyond name, kind and driver.
	Keys []string
	// Defaults sets the defaults of the keys a device did not write;
	// written reports whether it did, by key.
	Defaults func(d *Device, written func(key string) bool)
}

var serialKeys = []string{"port", "usb", "baud", "data_bits", "parity", "stop_bits"}

var scaleKeys = append(append([]string{}, serialKeys...), "poll_interval", "read_timeout", "reconnect_max")

// scaleDefaults are the defaults of the serial scale protocols; 7E1 for
// the protocols whose scales ship so (NCI, Toledo).
func scaleDefaults(dataBits int, parity string) func(*Device, func(string) bool) {
	return func(d *Device, w func(string) bool) {
		setDefault(w, "baud", &d.Baud, DefaultBaud)
		setDefault(w, "data_bits", &d.DataBits, dataBits)
		setDefault(w, "parity", &d.Parity, parity)
		setDefault(w, "stop_bits", &d.StopBits, DefaultStopBits)
		setDefault(w, "poll_interval", &d.PollInterval, Duration(250*time.Millisecond))
		setDefault(w, "read_timeout", &d.ReadTimeout, Duration(time.Second))
		setDefault(w, "reconnect_max", &d.ReconnectMax, DefaultDeviceReconnect)
		if d.Driver == "toledo" {
			setDefault(w, "unit", &d.Unit, "lb")
		}
	}
}

// Drivers is every device driver the daemon has, in the order they are
// listed in messages.
var Drivers = []DriverSpec{
	{Name: "serial-line", Kinds: []string{"scanner"},
		Keys: append(append([]string{}, serialKeys...), "terminator", "prefix", "suffix", "max_length", "control_chars", "reconnect_max"),
		Defaults: func(d *Device, w func(string) bool) {
			setDefault(w, "baud", &d.Baud, DefaultBaud)
			setDefault(w, "data_bits", &d.DataBits, DefaultDataBits)
			setDefault(w, "parity", &d.Parity, DefaultParity)
			setDefault(w, "stop_bits", &d.StopBits, DefaultStopBits)
			setDefault(w, "terminator", &d.Terminator, DefaultTerminator)
			setDefault(w, "max_length", &d.MaxLength, DefaultMaxLength)
			setDefault(w, "control_chars", &d.ControlChars, DefaultControlChars)
			setDefault(w, "reconnect_max", &d.ReconnectMax, DefaultDeviceReconnect)
		}},
	{Name: "sim", Kinds: []string{"scanner"}, Keys: []string{"interval", "seed"},
		Defaults: func(d *Device, w func(string) bool) {
			setDefault(w, "interval", &d.Interval, DefaultSimInterval)
		}},
	{Name: "hid-keyboard", Kinds: []string{"scanner"}, Keys: []string{"usb", "layout", "max_length", "reconnect_max"},
		Defaults: hidDefaults},
	{Name: "hid-pos", Kinds: []string{"scanner", "scale"}, Keys: []string{"usb", "max_length", "reconnect_max"},
		Defaults: hidDefaults},
	{Name: "nci", Kinds: []string{"scale"}, Keys: scaleKeys, Defaults: scaleDefaults(7, "even")},
	{Name: "mt-sics", Kinds: []string{"scale"}, Keys: scaleKeys, Defaults: scaleDefaults(DefaultDataBits, DefaultParity)},
	{Name: "toledo", Kinds: []string{"scale"}, Keys: append([]string{"unit"}, scaleKeys...), Defaults: scaleDefaults(7, "even")},
	{Name: "continuous", Kinds: []string{"scale"}, Keys: scaleKeys, Defaults: scaleDefaults(DefaultDataBits, DefaultParity)},
	{Name: "zpl", Kinds: []string{"printer"}, Keys: []string{"address", "poll_interval", "read_timeout", "reconnect_max"},
		Defaults: func(d *Device, w func(string) bool) {
			setDefault(w, "poll_interval", &d.PollInterval, Duration(5*time.Second))
			setDefault(w, "read_timeout", &d.ReadTimeout, Duration(2*time.Second))
			setDefault(w, "reconnect_max", &d.ReconnectMax, DefaultDeviceReconnect)
		}},
	{Name: "v4l2", Kinds: []string{"camera"}, Keys: []string{"path", "width", "height", "warmup", "read_timeout", "reconnect_max"},
		Defaults: func(d *Device, w func(string) bool) {
			setDefault(w, "width", &d.Width, 1600)
			setDefault(w, "height", &d.Height, 1200)
			setDefault(w, "warmup", &d.Warmup, 5)
			setDefault(w, "read_timeout", &d.ReadTimeout, Duration(2*time.Second))
			setDefault(w, "reconnect_max", &d.ReconnectMax, DefaultDeviceReconnect)
		}},
	{Name: "sim-camera", Kinds: []string{"camera"}, Keys: []string{"image"}},
}

func hidDefaults(d *Device, w func(string) bool) {
	setDefault(w, "layout", &d.Layout, "us")
	setDefault(w, "max_length", &d.MaxLength, DefaultMaxLength)
	setDefault(w, "reconnect_max", &d.ReconnectMax, DefaultDeviceReconnect)
}

// DriverByName returns the spec of a driver.
func DriverByName(name string) (DriverSpec, bool) {
	for _, d := range Drivers {
		if d.Name == name {
			return d, true
		}
	}
	return DriverSpec{}, false
}

// driverNames lists the drivers for messages.
func driverNames() string {
	names := make([]string, len(Drivers))
	for i, d := range Drivers {
		names[i] = d.Name
	}
	return strings.Join(names, ", ")
}

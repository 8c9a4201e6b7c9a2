package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.bug.st/serial"

	"github.com/mailroomd/mailroomd/drivers/hid"
	"github.com/mailroomd/mailroomd/drivers/printer/zpl"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scale/serialscale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/scanner/serialline"
	"github.com/mailroomd/mailroomd/drivers/scanner/sim"
	"github.com/mailroomd/mailroomd/drivers/serialport"
	"github.com/mailroomd/mailroomd/drivers/usbhid"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/station"
)

// Device is one configured device and its driver: exactly one of Scanner,
// Scale, Printer and Camera is set.
type Device struct {
	Name    string
	Scanner scanner.Driver
	Scale   scale.Driver
	Printer *zpl.Printer
	Camera  cameraDriver
}

// labelPrinter keeps a nil *zpl.Printer from becoming a non-nil interface.
func labelPrinter(p *zpl.Printer) station.LabelPrinter {
	if p == nil {
		return nil
	}
	return p
}

func serialMode(d config.Device) (serial.Mode, error) {
	parity, err := serialline.ParseParity(d.Parity)
	if err != nil {
		return serial.Mode{}, err
	}
	stop, err := serialline.ParseStopBits(d.StopBits)
	if err != nil {
		return serial.Mode{}, err
	}
	return serial.Mode{BaudRate: d.Baud, DataBits: d.DataBits, Parity: parity, StopBits: stop}, nil
}

// serialOpener opens the configured path, or finds the port by USB id.
func serialOpener(d config.Device) (func(string, *serial.Mode) (serial.Port, error), error) {
	if d.USB == "" {
		return nil, nil // serial.Open
	}
	m, err := usbhid.ParseMatch(d.USB)
	if err != nil {
		return nil, err
	}
	return serialport.USBOpener(m), nil
}

// deviceEnv is what a device constructor is given besides its config.
type deviceEnv struct {
	clock  clock.Clock
	log    *slog.Logger
	health health.Reporter
	wake   <-chan struct{}
}

// deviceConstructors builds each driver of config.Drivers, by name: a new
// driver is a spec there and a constructor here (TestEveryDriverHasAConstructor).
var deviceConstructors = map[string]func(d config.Device, env deviceEnv) (Device, error){
	"sim":          newSimDevice,
	"serial-line":  newSerialLineDevice,
	"hid-keyboard": newHIDDevice,
	"hid-pos":      newHIDDevice,
	"zpl":          newZPLDevice,
	"nci":          newSerialScaleDevice,
	"mt-sics":      newSerialScaleDevice,
	"toledo":       newSerialScaleDevice,
	"continuous":   newSerialScaleDevice,
	"v4l2":         newV4L2Device,
	"sim-camera":   newSimCameraDevice,
}

// NewDevice builds the driver of one configured device. wake, if not nil,
// tells a disconnected driver that a device appeared (hotplug).
func NewDevice(d config.Device, clk clock.Clock, log *slog.Logger, h health.Reporter, wake <-chan struct{}) (Device, error) {
	build, ok := deviceConstructors[d.Driver]
	if !ok {
		return Device{Name: d.Name}, errors.New("unknown driver " + strconv.Quote(d.Driver))
	}
	return build(d, deviceEnv{clock: clk, log: log, health: h, wake: wake})
}

// newSimDevice is the simulated scanner of the demo.
func newSimDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	dev.Scanner = sim.New(d.Name, d.Interval.D(), d.Seed, env.clock)
	return dev, nil
}

// newSerialLineDevice is a scanner that sends one code per line on a
// serial port (CDC-ACM or RS-232).
func newSerialLineDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	term, err := config.ParseTerminator(d.Terminator)
	if err != nil {
		return dev, err
	}
	mode, err := serialMode(d)
	if err != nil {
		return dev, err
	}
	ctrl, err := serialline.ParseControlPolicy(d.ControlChars)
	if err != nil {
		return dev, err
	}
	open, err := serialOpener(d)
	if err != nil {
		return dev, err
	}
	dev.Scanner = serialline.New(serialline.Config{
		Name: d.Name, Port: d.Port, Mode: mode,
		Terminator: term, Prefix: []byte(d.Prefix), Suffix: []byte(d.Suffix), MaxLength: d.MaxLength,
		Control: ctrl, ReconnectMin: 200 * time.Millisecond, ReconnectMax: d.ReconnectMax.D(), Wake: env.wake,
	}, open, env.clock, env.log, env.health)
	return dev, nil
}

// newHIDDevice is a USB HID scanner (keyboard or HID POS) or HID POS scale.
func newHIDDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	m, err := usbhid.ParseMatch(d.USB)
	if err != nil {
		return dev, err
	}
	common := usbhid.Common{Name: d.Name, Match: m, Clock: env.clock, Log: env.log, Health: env.health, ReconnectMax: d.ReconnectMax.D(), Wake: env.wake}
	if d.Kind == "scale" {
		dev.Scale = &usbhid.Scale{Common: common}
		return dev, nil
	}
	layout, err := hid.LayoutByName(d.Layout)
	if err != nil {
		return dev, err
	}
	dev.Scanner = &usbhid.Scanner{Common: common, Keyboard: d.Driver == "hid-keyboard", Layout: layout, MaxLength: d.MaxLength}
	return dev, nil
}

// newZPLDevice is a Zebra ZPL label printer over TCP, serial or USB.
func newZPLDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	u, err := url.Parse(d.Address)
	if err != nil {
		return dev, err
	}
	var dial func(context.Context) (zpl.Conn, error)
	switch u.Scheme {
	case "serial":
		baud := 9600
		if b, err := strconv.Atoi(u.Query().Get("baud")); err == nil && b > 0 {
			baud = b
		}
		dial = zpl.DialSerial(config.PrinterPort(u), &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit}, nil)
	case "usb":
		dial = zpl.DialDevice(u.Path)
	default:
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "9100") // raw printing's port
		}
		dial = zpl.DialTCP(host, 5*time.Second)
	}
	dev.Printer = zpl.New(zpl.Config{Name: d.Name, Where: d.Address, Dial: dial,
		Poll: d.PollInterval.D(), Timeout: d.ReadTimeout.D(), ReconnectMax: d.ReconnectMax.D(), Log: env.log, Health: env.health, Wake: env.wake})
	return dev, nil
}

// newSerialScaleDevice is a serial scale speaking one of the scale
// protocols (NCI, MT-SICS, Toledo, continuous).
func newSerialScaleDevice(d config.Device, env deviceEnv) (Device, error) {
	dev := Device{Name: d.Name}
	unit, _ := serialscale.ParseUnit(d.Unit)
	proto, err := serialscale.ByName(d.Driver, unit)
	if err != nil {
		return dev, err
	}
	mode, err := serialMode(d)
	if err != nil {
		return dev, err
	}
	open, err := serialOpener(d)
	if err != nil {
		return dev, err
	}
	dev.Scale = serialscale.New(serialscale.Config{Name: d.Name, Port: d.Port, Mode: mode, Protocol: proto,
		Poll: d.PollInterval.D(), ReadTimeout: d.ReadTimeout.D(), ReconnectMax: d.ReconnectMax.D(), Wake: env.wake}, open, env.clock, env.log, env.health)
	return dev, nil
}

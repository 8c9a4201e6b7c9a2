// Package serialport finds serial ports: by path, by a stable
// /dev/serial/by-id link, or by the USB vendor and product id (and serial
// number) of a USB serial adapter or CDC-ACM device, so a device re-plugged
// into another USB port is found again.
package serialport

import (
	"fmt"
	"strconv"

	"go.bug.st/serial"
	"go.bug.st/serial/enumerator"

	"github.com/mailroomd/mailroomd/drivers/usbhid"
)

// Port describes one serial port on this machine.
type Port struct {
	Name                string
	IsUSB               bool
	VendorID, ProductID uint16
	Serial              string
	Product             string
}

// List returns the serial ports of this machine.
func List() ([]Port, error) {
	ds, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("list serial ports: %w", err)
	}
	out := make([]Port, 0, len(ds))
	for _, d := range ds {
		p := Port{Name: d.Name, IsUSB: d.IsUSB, Serial: d.SerialNumber, Product: d.Product}
		if v, err := strconv.ParseUint(d.VID, 16, 16); err == nil {
			p.VendorID = uint16(v)
		}
		if v, err := strconv.ParseUint(d.PID, 16, 16); err == nil {
			p.ProductID = uint16(v)
		}
		out = append(out, p)
	}
	return out, nil
}

// Find returns the name of the first port that m selects.
func Find(ports []Port, m usbhid.Match) (string, error) {
	for _, p := range ports {
		if p.IsUSB && p.VendorID == m.VendorID && p.ProductID == m.ProductID && (m.Serial == "" || p.Serial == m.Serial) {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("no serial port of USB device %s attached", m)
}

// USBOpener returns an opener that looks the port up by USB id at every
// open; the path it is given is ignored.
func USBOpener(m usbhid.Match) func(string, *serial.Mode) (serial.Port, error) {
	return func(_ string, mode *serial.Mode) (serial.Port, error) {
		ports, err := List()
		if err != nil {
			return nil, err
		}
		name, err := Find(ports, m)
		if err != nil {
			return nil, err
		}
		return serial.Open(name, mode)
	}
}

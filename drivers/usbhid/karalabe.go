package usbhid

import (
	"github.com/karalabe/usb"
)

// OpenHID opens the first attached HID device that m selects, through
// karalabe/usb (libusb on Linux).
func OpenHID(m Match) (Device, error) {
	infos, err := usb.EnumerateHid(m.VendorID, m.ProductID)
	if err != nil {
		return nil, err
	}
	for _, info := range infos {
		if m.Serial != "" && info.Serial != m.Serial {
			continue
		}
		return info.Open()
	}
	return nil, ErrNotFound
}

// Attached describes one attached USB device.
type Attached struct {
	VendorID, ProductID           uint16
	Serial, Manufacturer, Product string
	Interface                     int
	Path                          string
}

// List returns every attached USB device karalabe/usb can see.
func List() ([]Attached, error) {
	infos, err := usb.Enumerate(0, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Attached, 0, len(infos))
	for _, i := range infos {
		out = append(out, Attached{VendorID: i.VendorID, ProductID: i.ProductID, Serial: i.Serial,
			Manufacturer: i.Manufacturer, Product: i.Product, Interface: i.Interface, Path: i.Path})
	}
	return out, nil
}

// Known names the devices mailroomd recognises by vid:pid.
var Known = map[[2]uint16]string{
	{0x0922, 0x8003}: "DYMO M10 postal scale (hid-pos scale)",
	{0x0922, 0x8004}: "DYMO M25 postal scale (hid-pos scale)",
	{0x0922, 0x8009}: "DYMO S180 postal scale (hid-pos scale)",
	{0x0eb8, 0xf000}: "Mettler Toledo PS-series scale (hid-pos scale)",
	{0x0eb8, 0xf001}: "Mettler Toledo scale (hid-pos scale)",
	{0x1446, 0x6a73}: "Stamps.com scale (hid-pos scale)",
	{0x2474, 0x0550}: "Stamps.com scale (hid-pos scale)",
	{0x0d8f, 0x0200}: "Pitney Bowes scale (hid-pos scale)",
	{0x0b67, 0x555e}: "Fairbanks scale (hid-pos scale)",
	{0x0c2e, 0x0200}: "Honeywell/Metrologic scanner (hid-keyboard scanner)",
	{0x0c2e, 0x0b61}: "Honeywell scanner in HID POS mode (hid-pos scanner)",
	{0x05e0, 0x1200}: "Zebra/Symbol scanner (hid-keyboard scanner)",
	{0x0a5f, 0x0000}: "Zebra label printer",
}

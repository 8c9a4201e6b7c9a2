// Package usbhid is the thin glue between HID devices reached through
// github.com/karalabe/usb and the report decoders of package hid.
//
// Devices are matched by USB vendor and product id, and by serial number
// when several identical devices are attached, never by path, so a device
// re-plugged into another port is found again. On Linux karalabe/usb reports
// a usage page of 0 for every device, so the usage page is not used for
// matching; the known-device tables in this package name what a vid:pid is.
// It reaches devices through /dev/bus/usb (libusb, not hidraw) and listens
// on a netlink socket, so the service needs access to both. Opening the
// device's interface through libusb detaches the kernel's keyboard driver:
// a keyboard-wedge scanner claimed this way no longer types into a console.
//
// Where it works: Linux (libusb) for keyboard-wedge, HID POS scanners and HID
// POS scales; macOS likewise through IOKit; on Windows, HID POS scanners and
// scales work, but Windows does not hand keyboard-class devices to a HID
// reader, so a keyboard-wedge scanner must be switched to HID POS or USB
// serial (CDC) mode there.
//
// The driver loop (open with capped backoff, read reports, reopen after an
// unplug) is independent of the library: it takes an Opener, and tests play
// back recorded reports through usbhidtest.
package usbhid

package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The installed service may open every class of device a driver drives:
// its unit closes all others (DevicePolicy=closed), and a driver whose
// class is missing would find its device, and fail to open it, only in
// the field.
func TestServiceUnitAllowsEveryDeviceClass(t *testing.T) {
	b, err := os.ReadFile("../packaging/mailroomd.service")
	if err != nil {
		t.Fatal(err)
	}
	var allowed, groups []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "DeviceAllow="); ok {
			allowed = append(allowed, strings.Fields(v)[0])
		}
		if v, ok := strings.CutPrefix(line, "SupplementaryGroups="); ok {
			groups = append(groups, strings.Fields(v)...)
		}
	}
	for _, class := range []struct{ class, drives string }{
		{"char-ttyUSB", "serial-line, serial scales (USB adapters)"},
		{"char-ttyACM", "serial-line, serial scales (CDC-ACM)"},
		{"char-ttyS", "serial scales (built-in UARTs)"},
		{"char-hidraw", "hid-keyboard, hid-pos"},
		{"char-usb_device", "HID and USB lookups through libusb"},
		{"char-usb", "zpl printers at usb:///dev/usb/lp0 (usblp)"},
		{"char-video4linux", "v4l2 cameras"},
	} {
		if !slices.Contains(allowed, class.class) {
			t.Errorf("the unit lacks DeviceAllow=%s rw (%s)", class.class, class.drives)
		}
	}
	if !strings.Contains(string(b), "DevicePolicy=closed") {
		t.Error("the unit no longer closes the other devices")
	}
	if !slices.Contains(groups, "video") || !slices.Contains(groups, "dialout") {
		t.Errorf("SupplementaryGroups %v: want dialout (serial ports) and video (cameras)", groups)
	}
}

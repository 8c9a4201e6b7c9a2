package main

import (
	"fmt"
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

// recordingLogger is a service.Logger that records what it is given.
type recordingLogger struct{ lines []string }

func (r *recordingLogger) rec(level string, v ...any) error {
	r.lines = append(r.lines, level+" "+fmt.Sprint(v...))
	return nil
}
func (r *recordingLogger) Error(v ...any) error   { return r.rec("error", v...) }
func (r *recordingLogger) Warning(v ...any) error { return r.rec("warning", v...) }
func (r *recordingLogger) Info(v ...any) error    { return r.rec("info", v...) }
func (r *recordingLogger) Errorf(f string, v ...any) error {
	return r.rec("error", fmt.Sprintf(f, v...))
}
func (r *recordingLogger) Warningf(f string, v ...any) error {
	return r.rec("warning", fmt.Sprintf(f, v...))
}
func (r *recordingLogger) Infof(f string, v ...any) error { return r.rec("info", fmt.Sprintf(f, v...)) }

// TestSystemLogKeepsEarlyLines checks that the lines logged at start,
// before the service manager's log is known, reach it once it is, in
// order and at their levels, and that at most maxEarlyLines are kept.
func TestSystemLogKeepsEarlyLines(t *testing.T) {
	w := &systemLogWriter{}
	fmt.Fprintln(w, `level=INFO msg="GOMAXPROCS left to the environment" GOMAXPROCS=3`)
	fmt.Fprintln(w, `level=WARN msg="early warning"`)
	r := &recordingLogger{}
	w.set(r)
	fmt.Fprintln(w, `level=ERROR msg="later"`)
	want := []string{
		`info level=INFO msg="GOMAXPROCS left to the environment" GOMAXPROCS=3`,
		`warning level=WARN msg="early warning"`,
		`error level=ERROR msg="later"`,
	}
	if !slices.Equal(r.lines, want) {
		t.Fatalf("system log got %q, want %q", r.lines, want)
	}

	w = &systemLogWriter{}
	for i := range maxEarlyLines + 10 {
		fmt.Fprintf(w, "level=INFO msg=line%d\n", i)
	}
	r = &recordingLogger{}
	w.set(r)
	if len(r.lines) != maxEarlyLines || r.lines[0] != "info level=INFO msg=line0" {
		t.Fatalf("%d early lines handed over (%q), want the first %d", len(r.lines), r.lines, maxEarlyLines)
	}
}

package config

import (
	"net/url"
	"testing"
)

func TestPrinterPort(t *testing.T) {
	for in, want := range map[string]string{
		"serial:///dev/ttyUSB0?baud=9600": "/dev/ttyUSB0",
		"serial://COM3":                   "COM3",
		"serial://COM12?baud=19200":       "COM12",
		"serial://":                       "",
		"serial:///":                      "",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := PrinterPort(u); got != want {
			t.Errorf("PrinterPort(%q) = %q, want %q", in, got, want)
		}
	}
}

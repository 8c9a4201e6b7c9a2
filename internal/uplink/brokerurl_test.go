package uplink_test

import (
	"testing"

	"github.com/mailroomd/mailroomd/internal/uplink"
)

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"mqtts://broker.example.com":      "mqtts://broker.example.com:8883",
		"ssl://broker.example.com":        "ssl://broker.example.com:8883",
		"tls://10.0.0.5":                  "tls://10.0.0.5:8883",
		"mqtt://127.0.0.1":                "mqtt://127.0.0.1:1883",
		"tcp://[::1]":                     "tcp://[::1]:1883",
		"mqtts://[fe80::1]":               "mqtts://[fe80::1]:8883",
		"mqtts://broker.example.com:8884": "mqtts://broker.example.com:8884",
		"mqtts://broker.example.com/":     "mqtts://broker.example.com:8883/",
		"ws://broker.example.com":         "ws://broker.example.com",
		"not a url":                       "not a url",
		"":                                "",
	} {
		if got := uplink.WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

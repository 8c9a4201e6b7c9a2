package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("version: 1\nappliance: {id: a1}\nuplink: {brokers: [mqtt://127.0.0.1:1883], insecure: true}\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nappliance: {id: a1, colour: red}\nuplink: {brokers: [mqtt://127.0.0.1:1883]}\ndevices:\n  - {name: s, kind: scanner, driver: serial-line}\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  []string
	}{
		{"good", []string{"check-config", "--config", good}, 0, []string{good + ": OK"}},
		{"bad lists every problem", []string{"check-config", "--config", bad}, 2, []string{
			bad + ":2:21: appliance.colour: unknown key",
			bad + ":3:20: uplink.brokers[0]: mqtt://127.0.0.1:1883 is plaintext MQTT and is refused",
			bad + ":5:5: devices[0].port: required",
		}},
		{"run refuses a bad config", []string{"run", "--config", bad}, 2, []string{"appliance.colour: unknown key"}},
		{"missing file", []string{"check-config", "--config", filepath.Join(dir, "nope.yaml")}, 2, []string{"no such file"}},
		{"no flag", []string{"check-config"}, 2, []string{"usage: mailroomd check-config --config FILE"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"version", []string{"version"}, 0, []string{"mailroomd dev (commit unknown)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tc.args, &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, all)
			}
			for _, w := range tc.out {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
		})
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// TestAlertsAndStatusAcrossKillAndConfigSwitches raises an alert, kills the
// daemon, starts it again and switches its config twice (once the whole
// App, once only the devices): the alert is raised once and, after its
// cause is gone, cleared once; the retained status never says offline
// while the configs switch.
func TestAlertsAndStatusAcrossKillAndConfigSwitches(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-life-a")
	scanDev := serialtest.New(t, filepath.Join(a.dir, "ttyScanner"))
	scanDev.Unplug() // the cause: the scanner is missing from the start
	devices := func(reconnect string) string {
		return fmt.Sprintf("  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: %s}\n%s\n  config_trial: 20s",
			scanDev.Link, reconnect, r.fleetSection())
	}
	alerts := r.broker.Subscribe(t, "alerts", "mailroom/v1/mr-life-a/alerts")
	status := r.broker.Subscribe(t, "status", "mailroom/v1/mr-life-a/status")
	reports := r.broker.Subscribe(t, "reports", "mailroom/v1/mr-life-a/config/reported")
	telemetry := r.broker.Subscribe(t, "telemetry", "mailroom/v1/mr-life-a/telemetry")
	const key = `"key":"device.dock-scanner.disconnected"`

	cfg := a.config(t, r.broker.URL(), devices("200ms"))
	p := startDaemon(t, cfg)
	alerts.WaitFor(t, 15*time.Second, "the alert", func(ms []mqtttest.Message) bool { return strings.Contains(joined(ms), key) })
	p.kill()

	p = startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	afterRestart := len(status.Messages())

	waitReport := func(version int64, want string) {
		t.Helper()
		reports.WaitFor(t, 30*time.Second, fmt.Sprintf("report %d %s", version, want), func(ms []mqtttest.Message) bool {
			for _, m := range ms {
				var rep map[string]any
				json.Unmarshal(m.Payload, &rep)
				if rep["version"] == float64(version) && rep["status"] == want {
					return true
				}
			}
			return false
		})
	}
	// Version 1 changes the uplink: the whole App is replaced.
	v1 := strings.Replace(a.configText(r.broker.URL(), devices("200ms")), "keepalive: 2s", "keepalive: 3s", 1)
	if _, err := r.op.PushConfig("mr-life-a", 1, v1, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitReport(1, "applied")
	// Version 2 changes only the scanner: the front is rebuilt.
	v2 := strings.Replace(v1, "reconnect_max: 200ms", "reconnect_max: 250ms", 1)
	if _, err := r.op.PushConfig("mr-life-a", 2, v2, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitReport(2, "applied")
	if !strings.Contains(p.log.String(), "uplink disconnected") || !strings.Contains(p.log.String(), "config switch") {
		t.Fatalf("version 1 did not replace the uplink:\n%s", p.log.String())
	}

	// The cause goes away: cleared once.
	scanDev.Replug()
	// An alert active at a start or a config switch is kept for the
	// settle time (15 s) even when its condition is gone.
	alerts.WaitFor(t, 30*time.Second, "the clearance", func(ms []mqtttest.Message) bool {
		return strings.Contains(joined(ms), `"cleared_at"`)
	})
	// At least two more alert evaluations (every 2 s): fourteen more
	// telemetry messages, 300 ms apart.
	n := len(telemetry.Messages())
	telemetry.WaitFor(t, 15*time.Second, "more telemetry", func(ms []mqtttest.Message) bool { return len(ms) >= n+14 })

	raised, cleared := map[string]int{}, map[string]int{}
	seen := map[string]bool{}
	for _, m := range alerts.Messages() {
		// Alerts go out at least once: the same message again is a resend
		// (the box was killed before it recorded the PUBACK), not a second
		// alert.
		if seen[string(m.Payload)] {
			continue
		}
		seen[string(m.Payload)] = true
		var al fleet.Alert
		if err := json.Unmarshal(m.Payload, &al); err != nil {
			t.Fatalf("alert %s: %v", m.Payload, err)
		}
		if al.ClearedAt == nil {
			raised[al.Key]++
		} else {
			cleared[al.Key]++
		}
	}
	if k := "device.dock-scanner.disconnected"; raised[k] != 1 || cleared[k] != 1 {
		t.Fatalf("%s raised %d and cleared %d times through a kill and two config switches; want once each", k, raised[k], cleared[k])
	}
	for k, n := range raised {
		if n > 1 {
			t.Errorf("%s raised %d times without a clear in between:\n%s", k, n, joined(alerts.Messages()))
		}
	}
	for _, m := range status.Messages()[afterRestart:] {
		if strings.Contains(string(m.Payload), `"state":"offline"`) {
			t.Fatalf("the status said offline during a config switch: %s", m.Payload)
		}
	}
	// The status names the config in use: 1 after the uplink was replaced,
	// 2 after only the devices changed.
	status.WaitFor(t, 10*time.Second, "a status naming config version 2", func(ms []mqtttest.Message) bool {
		return strings.Contains(joined(ms), `"config_version":1`) && strings.Contains(string(ms[len(ms)-1].Payload), `"config_version":2`)
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	status.WaitFor(t, 10*time.Second, "offline on a real stop", func(ms []mqtttest.Message) bool {
		return strings.Contains(string(ms[len(ms)-1].Payload), `"reason":"shutdown"`)
	})
}

// TestSIGTERMDuringConfigApply sends SIGTERM within milliseconds of a
// desired config reaching the box, round after round: the daemon exits
// cleanly within the stop timeout every time, and every code written to
// the scanner's tty arrives at the cloud exactly once, gapless.
func TestSIGTERMDuringConfigApply(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-life-b")
	scanDev := serialtest.New(t, filepath.Join(a.dir, "ttyScanner"))
	devices := func(reconnect string) string {
		return fmt.Sprintf("  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: %s}\n%s",
			scanDev.Link, reconnect, r.fleetSection())
	}
	events := r.broker.Subscribe(t, "cloud", "mailroom/v1/mr-life-b/events")
	status := r.broker.Subscribe(t, "status", "mailroom/v1/mr-life-b/status")
	cfg := a.config(t, r.broker.URL(), devices("200ms"))
	var written []string
	scan := func(code string) {
		t.Helper()
		if err := scanDev.Scan(code); err != nil {
			t.Fatal(err)
		}
		written = append(written, code)
	}
	const rounds = 12
	for i := range rounds {
		p := startDaemon(t, cfg)
		p.waitLog(t, "remote instructions ready", 10*time.Second)
		p.waitLog(t, "scanner connected", 10*time.Second)
		scan(fmt.Sprintf("PKG-BEFORE-%02d", i))
		// Odd rounds replace the whole App, even ones the devices only.
		text := a.configText(r.broker.URL(), devices(fmt.Sprintf("%dms", 200+i)))
		if i%2 == 1 {
			text = strings.Replace(text, "keepalive: 2s", fmt.Sprintf("keepalive: %ds", 3+i), 1)
		}
		if _, err := r.op.PushConfig("mr-life-b", int64(i+1), text, time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i*2) * time.Millisecond)
		began := time.Now()
		if code := p.stop(t); code != 0 {
			t.Fatalf("round %d: exit %d", i, code)
		}
		if d := time.Since(began); d > 15*time.Second {
			t.Fatalf("round %d: stop took %s", i, d)
		}
		// However the stop fell into the switch, the box said itself that
		// it stopped: the last status is offline with reason shutdown,
		// not the broker's will, and never online.
		last := status.WaitFor(t, 10*time.Second, "the offline status", func(ms []mqtttest.Message) bool {
			return len(ms) > 0 && strings.Contains(string(ms[len(ms)-1].Payload), `"state":"offline"`)
		})
		if p := string(last[len(last)-1].Payload); !strings.Contains(p, `"reason":"shutdown"`) {
			t.Fatalf("round %d: the last status after a stop is %s", i, p)
		}
		scan(fmt.Sprintf("PKG-AFTER-%02d", i)) // waits in the tty for the next start
	}
	p := startDaemon(t, cfg)
	want := len(written)
	got := map[string]int{}
	events.WaitFor(t, 30*time.Second, "every written code", func(ms []mqtttest.Message) bool {
		byseq, _ := mqtttest.Delivered(t, ms)
		clear(got)
		for _, ev := range byseq {
			if ev.Type == "scan" {
				got[string(ev.Barcode)]++
			}
		}
		return len(got) >= want
	})
	for _, c := range written {
		if got[c] != 1 {
			t.Errorf("code %s committed %d times, want once", c, got[c])
		}
	}
	byseq, _ := mqtttest.Delivered(t, events.Messages())
	gapless(t, byseq)
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

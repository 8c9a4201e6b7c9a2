package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/fleetop"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// fleetRig is one broker, an operator and the fleet's signing key.
type fleetRig struct {
	broker *mqtttest.Broker
	pub    ed25519.PublicKey
	priv   ed25519.PrivateKey
	op     *fleetop.Client
}

func newFleetRig(t *testing.T) *fleetRig {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	b := mqtttest.Start(t)
	op, err := fleetop.Dial(fleetop.Options{Broker: b.URL(), TLS: b.TLSConfig(t, "operator"), ClientID: "operator",
		Key: priv, KeyID: "it"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	return &fleetRig{broker: b, pub: pub, priv: priv, op: op}
}

// box sets up one appliance on the rig's broker.
func (r *fleetRig) box(t *testing.T, id string) *setup {
	cert, key := r.broker.ClientFiles(t, id)
	return &setup{dir: t.TempDir(), broker: r.broker, id: id, cert: cert, key: key, ca: r.broker.Files.CA}
}

func (r *fleetRig) fleetSection() string {
	return fmt.Sprintf(`fleet:
  public_keys: [{id: it, key: %s}]
  telemetry_interval: 300ms
  probe_interval: 300ms
  probe_timeout: 2s
  alerts: {device_disconnected: 500ms}`, base64.StdEncoding.EncodeToString(r.pub))
}

func (r *fleetRig) envelope(t *testing.T, key ed25519.PrivateKey, p envelope.Payload) []byte {
	b, err := envelope.Sign(key, "it", p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func command(target, name, nonce string, args string) envelope.Payload {
	now := time.Now()
	p := envelope.Payload{V: 1, Kind: envelope.KindCommand, Target: target, Name: name, ID: "req-" + nonce, Nonce: nonce,
		Issued: now.Add(-time.Second).UTC(), Expires: now.Add(time.Minute).UTC()}
	if args != "" {
		p.Args = json.RawMessage(args)
	}
	return p
}

func TestFleetTelemetryCommandsAndAlerts(t *testing.T) {
	r := newFleetRig(t)
	a, b := r.box(t, "mr-fleet-a"), r.box(t, "mr-fleet-b")
	scanDev := serialtest.New(t, filepath.Join(a.dir, "ttyScanner"))
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	cfgA := a.config(t, r.broker.URL(), fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
web:
  listen: 127.0.0.1:%d
  users: [{name: clara, role: clerk, password_hash: "%s"}]
%s`, scanDev.Link, mqtttest.FreePort(t), hash, r.fleetSection()))
	cfgB := b.config(t, r.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 500ms}\n"+r.fleetSection())
	events := r.broker.Subscribe(t, "cloud", "mailroom/v1/+/events")
	alerts := r.broker.Subscribe(t, "alerts-watch", "mailroom/v1/+/alerts")
	telemetry := r.broker.Subscribe(t, "telemetry-watch", "mailroom/v1/mr-fleet-a/telemetry")
	// evaluations waits for fourteen more telemetry messages (300 ms
	// apart): at least two alert evaluations (every 2 s) have run by then.
	evaluations := func() {
		t.Helper()
		n := len(telemetry.Messages())
		telemetry.WaitFor(t, 15*time.Second, "fourteen more telemetry messages", func(ms []mqtttest.Message) bool { return len(ms) >= n+14 })
	}
	pa := startDaemon(t, cfgA)
	pb := startDaemon(t, cfgB)
	pa.waitLog(t, "remote instructions ready", 10*time.Second)
	pb.waitLog(t, "remote instructions ready", 10*time.Second)

	// Telemetry from both boxes, with the probe's round trip.
	deadline := time.Now().Add(15 * time.Second)
	for {
		msgs, err := r.op.Collect("+/telemetry", 400*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]fleet.Telemetry{}
		for _, m := range msgs {
			var tm fleet.Telemetry
			if json.Unmarshal(m.Payload, &tm) == nil {
				seen[tm.Appliance] = tm
			}
		}
		ta, okA := seen["mr-fleet-a"]
		_, okB := seen["mr-fleet-b"]
		if okA && okB && ta.ProbeRTTMS > 0 && len(ta.Devices) == 1 && ta.LinkConnected && !ta.CertExpires.IsZero() && ta.DiskFreeBytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("telemetry incomplete: %+v", seen)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := r.op.Command(ctx, "mr-fleet-a", "ping", nil, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("ping: %+v %v", res, err)
	}

	// Every kind of bad envelope is refused with its reason.
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	captured := r.envelope(t, r.priv, command("mr-fleet-a", "ping", "n-captured", ""))
	expired := command("mr-fleet-a", "ping", "n-expired", "")
	expired.Issued, expired.Expires = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name, want string
		env        []byte
	}{
		{"unsigned", "malformed envelope", []byte(`{"name":"ping"}`)},
		{"not JSON", "malformed envelope", []byte("\x00\xffgarbage")},
		{"wrongly signed", "bad signature", r.envelope(t, otherKey, command("mr-fleet-a", "ping", "n-other", ""))},
		{"wrong target", "not addressed to this appliance", r.envelope(t, r.priv, command("mr-fleet-b", "ping", "n-target", ""))},
		{"expired", "expired", r.envelope(t, r.priv, expired)},
		{"too large", "envelope too large: 300000 bytes (at most 262144)", bytes.Repeat([]byte{'x'}, 300000)},
		{"first use", "", captured},
		{"replayed", "replayed", captured},
	} {
		res, err := r.op.Send(ctx, "mr-fleet-a", "ping", "", tc.env)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want == "" {
			if !res.OK {
				t.Fatalf("%s: %+v", tc.name, res)
			}
			continue
		}
		if res.OK || !strings.Contains(res.Error, tc.want) {
			t.Errorf("%s: result %+v, want an error with %q", tc.name, res, tc.want)
		}
	}
	pa.waitLog(t, "remote command rejected", 5*time.Second)

	// Scans, then a resend of seq 2-4 that a cloud would ask for after
	// finding a gap.
	for _, c := range []string{"1Z999AA10123456784", "RB123456785GB", "9400111899223855718403", "TBA123456789012"} {
		scanDev.Scan(c)
	}
	events.WaitFor(t, 15*time.Second, "scans of box a", func(ms []mqtttest.Message) bool {
		n := 0
		for _, m := range ms {
			if strings.Contains(m.Topic, "mr-fleet-a") && strings.Contains(string(m.Payload), `"type":"scan"`) {
				n++
			}
		}
		return n >= 4
	})
	g := fleetop.NewGapDetector()
	for _, m := range events.Messages() {
		ev, _ := event.Decode(m.Payload)
		if ev.Appliance == "mr-fleet-a" && (ev.Seq < 2 || ev.Seq > 4) {
			g.Add(ev) // the cloud "lost" seq 2-4
		}
	}
	gaps := g.Gaps()
	if len(gaps) != 1 {
		t.Fatalf("gaps = %v, want 2-4 of box a", gaps)
	}
	before := len(events.Messages())
	res, err = r.op.Command(ctx, "mr-fleet-a", "resend", map[string]int{"from": 2, "to": 4}, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("resend: %+v %v", res, err)
	}
	events.WaitFor(t, 10*time.Second, "the resent events", func(ms []mqtttest.Message) bool { return len(ms) >= before+3 })
	for _, m := range events.Messages()[before:] {
		if ev, err := event.Decode(m.Payload); err == nil && ev.Appliance == "mr-fleet-a" {
			g.Add(ev)
		}
	}
	if gaps := g.Gaps(); len(gaps) != 0 {
		t.Fatalf("gaps after resend: %v", gaps)
	}

	// Logs come back without secrets or personal data.
	res, err = r.op.Command(ctx, "mr-fleet-a", "logs", map[string]int{"lines": 200}, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("logs: %+v %v", res, err)
	}
	logs, _ := json.Marshal(res.Result)
	if !strings.Contains(string(logs), "remote command rejected") || strings.Contains(string(logs), string(hash)) ||
		strings.Contains(string(logs), "PRIVATE KEY") {
		t.Fatalf("logs = %s", logs)
	}
	// More than 1000 lines asked: 1000 at most, not the 100 of no number.
	lineCount := func(r fleet.Result) int { return len(r.Result.(map[string]any)["lines"].([]any)) }
	if many, err := r.op.Command(ctx, "mr-fleet-a", "logs", map[string]int{"lines": 5000}, time.Minute); err != nil || !many.OK ||
		lineCount(many) < lineCount(res) || lineCount(many) > 1000 {
		t.Fatalf("logs of 5000 lines: %+v %v (200 asked: %d lines)", many, err, lineCount(res))
	}
	if bad, err := r.op.Command(ctx, "mr-fleet-a", "logs", map[string]string{"lines": "all"}, time.Minute); err != nil || bad.OK ||
		!strings.Contains(bad.Error, `logs takes {"lines": N}`) {
		t.Fatalf("logs with lines \"all\": %+v %v", bad, err)
	}

	// An unplugged scanner raises one alert; plugging it back clears it once.
	scanDev.Unplug()
	alerts.WaitFor(t, 10*time.Second, "the alert", func(ms []mqtttest.Message) bool {
		return strings.Contains(joined(ms), `"key":"device.dock-scanner.disconnected"`)
	})
	evaluations() // while it stays active
	scanDev.Replug()
	alerts.WaitFor(t, 10*time.Second, "the clearance", func(ms []mqtttest.Message) bool {
		return strings.Contains(joined(ms), `"cleared_at"`)
	})
	evaluations()
	raised, cleared := 0, 0
	for _, m := range alerts.Messages() {
		var al fleet.Alert
		json.Unmarshal(m.Payload, &al)
		if al.Key == "device.dock-scanner.disconnected" {
			if al.ClearedAt == nil {
				raised++
			} else {
				cleared++
			}
		}
	}
	if raised != 1 || cleared != 1 {
		t.Fatalf("alert raised %d and cleared %d times, want once each", raised, cleared)
	}

	// Every instruction, accepted or refused, is an audit event.
	audits := map[string]int{}
	for _, m := range events.Messages() {
		if ev, err := event.Decode(m.Payload); err == nil && ev.Type == event.TypeAudit && ev.Appliance == "mr-fleet-a" {
			audits[ev.Audit.Outcome]++
		}
	}
	if audits["applied"] < 4 || audits["rejected"] < 6 {
		t.Fatalf("audit events by outcome: %v", audits)
	}

	// A captured command replayed after a restart is still refused.
	if code := pa.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	pa = startDaemon(t, cfgA)
	pa.waitLog(t, "remote instructions ready", 10*time.Second)
	res, err = r.op.Send(ctx, "mr-fleet-a", "ping", "", captured)
	if err != nil || res.OK || !strings.Contains(res.Error, "replayed") {
		t.Fatalf("replay after restart: %+v %v", res, err)
	}
}

func joined(ms []mqtttest.Message) string {
	var b strings.Builder
	for _, m := range ms {
		b.Write(m.Payload)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestRemoteConfigAppliedRejectedRolledBack(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-remote-a")
	devices := func(interval string) string {
		return fmt.Sprintf("  - {name: sim, kind: scanner, driver: sim, interval: %s}\n%s\n  config_trial: 3s", interval, r.fleetSection())
	}
	cfg := a.config(t, r.broker.URL(), devices("300ms"))
	reports := r.broker.Subscribe(t, "reports", "mailroom/v1/mr-remote-a/config/reported")
	events := r.broker.Subscribe(t, "cloud", "mailroom/v1/mr-remote-a/events")
	p := startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)

	waitReport := func(version int64, status string) map[string]any {
		t.Helper()
		var got map[string]any
		reports.WaitFor(t, 20*time.Second, fmt.Sprintf("report %d %s", version, status), func(ms []mqtttest.Message) bool {
			for _, m := range ms {
				var r map[string]any
				json.Unmarshal(m.Payload, &r)
				if r["version"] == float64(version) && r["status"] == status {
					got = r
					return true
				}
			}
			return false
		})
		return got
	}

	// Version 1: a faster simulated scanner. Applied, reported, kept.
	if _, err := r.op.PushConfig("mr-remote-a", 1, a.configText(r.broker.URL(), devices("50ms")), time.Hour); err != nil {
		t.Fatal(err)
	}
	waitReport(1, "applied")
	p.waitLog(t, "remote config applied", 5*time.Second)
	// Only the scanner changed: the buffer and the uplink kept running.
	if !strings.Contains(p.log.String(), "reconfiguring devices, stations and status page") ||
		strings.Count(p.log.String(), "mailroomd starting") != 1 || strings.Contains(p.log.String(), "stopping uplink") {
		t.Fatalf("a scanner change restarted more than the devices:\n%s", p.log.String())
	}

	// Envelopes refused before their config is read: reported rejected
	// with the reason and the version in use, without a hash.
	raw := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(r.broker.URL()).SetClientID("operator-raw").
		SetTLSConfig(r.broker.TLSConfig(t, "operator-raw")))
	if tok := raw.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer raw.Disconnect(100)
	for _, c := range []struct{ body, want string }{
		{strings.Repeat("x", 300000), "envelope too large: 300000 bytes (at most 262144)"},
		{`{"key_id":"it","payload":"e30=","sig":"AAAA"}`, "malformed envelope"},
	} {
		from := len(reports.Messages())
		if tok := raw.Publish("mailroom/v1/mr-remote-a/config/desired", 1, false, []byte(c.body)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		reports.WaitFor(t, 20*time.Second, "the refusal: "+c.want, func(ms []mqtttest.Message) bool {
			for _, m := range ms[min(from, len(ms)):] {
				var r map[string]any
				json.Unmarshal(m.Payload, &r)
				if r["status"] == "rejected" && strings.Contains(fmt.Sprint(r["errors"]), c.want) {
					if r["version"] != float64(0) || r["applied_version"] != float64(1) || r["hash"] != nil {
						t.Fatalf("report of a refused envelope: %s", m.Payload)
					}
					return true
				}
			}
			return false
		})
	}

	// Version 2: broken; rejected with the exact errors, nothing changes.
	if _, err := r.op.PushConfig("mr-remote-a", 2, "version: 1\nappliance: {id: mr-remote-a, colour: red}\n", time.Hour); err != nil {
		t.Fatal(err)
	}
	rep := waitReport(2, "rejected")
	if !strings.Contains(fmt.Sprint(rep["errors"]), "appliance.colour: unknown key") {
		t.Fatalf("rejection report = %v", rep)
	}

	// Version 3 points the uplink at a dead broker: rolled back to 1.
	dead := fmt.Sprintf("mqtts://127.0.0.1:%d", mqtttest.FreePort(t))
	if _, err := r.op.PushConfig("mr-remote-a", 3, a.configText(dead, devices("50ms")), time.Hour); err != nil {
		t.Fatal(err)
	}
	rep = waitReport(3, "rolled_back")
	if rep["applied_version"] != float64(1) || !strings.Contains(fmt.Sprint(rep["errors"]), "did not reconnect") {
		t.Fatalf("rollback report = %v", rep)
	}

	// A restart sees the retained version 3 again and ignores it.
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p = startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	p.waitLog(t, "status=ignored", 10*time.Second) // the retained version 3, seen again
	if strings.Contains(p.log.String(), "switching to remote config") {
		t.Fatalf("a rolled-back config was tried again:\n%s", p.log.String())
	}
	before := len(events.Messages())
	events.WaitFor(t, 10*time.Second, "more scans at the faster rate", func(ms []mqtttest.Message) bool { return len(ms) > before+20 })
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// Through all the switches nothing was lost: seqs are gapless. Every
	// refusal is audited: version 2 and the two envelopes.
	got, _ := mqtttest.Delivered(t, events.Messages())
	gapless(t, got)
	audits := map[string]int{}
	for _, ev := range got {
		if ev.Type == event.TypeAudit && ev.Audit.Action == "config" {
			audits[ev.Audit.Outcome]++
		}
	}
	if audits["applied"] != 1 || audits["rejected"] != 3 || audits["rolled_back"] != 1 {
		t.Fatalf("config audit events by outcome: %v", audits)
	}
}

func TestCertificateRenewalWithoutRestart(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-renew-a")
	p := startDaemon(t, a.config(t, r.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 1s}\n"+r.fleetSection()))
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := r.op.Command(ctx, "mr-renew-a", "renew-cert", nil, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("renew-cert: %+v %v", res, err)
	}
	csr := res.Result.(map[string]any)["csr"].(string)
	if !strings.Contains(csr, "CERTIFICATE REQUEST") || strings.Contains(csr, "PRIVATE KEY") {
		t.Fatalf("renew-cert result: %s", csr)
	}
	// A certificate for another key is refused.
	other, _ := r.broker.CA.IssueClient("mr-renew-a", time.Now(), 90*24*time.Hour)
	if res, _ := r.op.Command(ctx, "mr-renew-a", "install-cert", map[string]string{"cert": string(other.CertPEM)}, time.Minute); res.OK {
		t.Fatal("a certificate for another key was installed")
	}
	signed, err := r.broker.CA.SignCSR([]byte(csr), time.Now(), 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	res, err = r.op.Command(ctx, "mr-renew-a", "install-cert", map[string]string{"cert": string(signed)}, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("install-cert: %+v %v", res, err)
	}
	// The next connection uses the new certificate: telemetry shows its
	// expiry, and the box reconnects after a broker restart.
	r.broker.Stop()
	r.broker.Start()
	op, err := fleetop.Dial(fleetop.Options{Broker: r.broker.URL(), TLS: r.broker.TLSConfig(t, "operator2"), ClientID: "operator2"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msgs, _ := op.Collect("mr-renew-a/telemetry", 500*time.Millisecond)
		ok := false
		for _, m := range msgs {
			var tm fleet.Telemetry
			if json.Unmarshal(m.Payload, &tm) == nil && tm.CertExpires.After(time.Now().Add(80*24*time.Hour)) && tm.LinkConnected {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("telemetry never showed the renewed certificate:\n%s", p.log.String())
		}
	}
	if strings.Count(p.log.String(), "mailroomd starting") != 1 {
		t.Fatal("the daemon restarted")
	}
}

// TestFleetCLI drives `mailroomd fleet` as IT would, against a real daemon.
func TestFleetCLI(t *testing.T) {
	keys := t.TempDir()
	var out, errOut strings.Builder
	if code := Main([]string{"fleet", "keygen", "--out", keys, "--id", "ops"}, &out, &errOut); code != 0 {
		t.Fatalf("keygen: %d %s", code, errOut.String())
	}
	line := out.String()[strings.Index(out.String(), "fleet:"):]
	b := mqtttest.Start(t)
	cert, key := b.ClientFiles(t, "mr-cli-a")
	s := &setup{dir: t.TempDir(), broker: b, id: "mr-cli-a", cert: cert, key: key, ca: b.Files.CA}
	devices := "  - {name: sim, kind: scanner, driver: sim, interval: 200ms}\n" + line + "  telemetry_interval: 200ms"
	p := startDaemon(t, s.config(t, b.URL(), devices))
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	opCert, opKey := b.ClientFiles(t, "operator-cli")
	conn := []string{"--broker", b.URL(), "--ca", b.Files.CA, "--cert", opCert, "--key", opKey}
	sign := []string{"--sign-key", filepath.Join(keys, "fleet.key"), "--key-id", "ops"}
	run := func(args ...string) (int, string) {
		var out, errOut strings.Builder
		code := Main(args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	b.Subscribe(t, "telemetry-watch", "mailroom/v1/mr-cli-a/telemetry").WaitFor(t, 10*time.Second, "the first telemetry",
		func(ms []mqtttest.Message) bool { return len(ms) > 0 })
	if code, out := run(append(append([]string{"fleet", "status"}, conn...), "--for", "1s")...); code != 0 ||
		!regexpMatch(`mr-cli-a\s+online\s+dev\s+\d+\s+\d+`, out) {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if code, out := run(append(append(append([]string{"fleet", "cmd"}, conn...), sign...), "--target", "mr-cli-a", "ping")...); code != 0 ||
		!strings.Contains(out, `"pong": true`) {
		t.Fatalf("cmd ping: %d\n%s", code, out)
	}
	newCfg := filepath.Join(t.TempDir(), "new.yaml")
	os.WriteFile(newCfg, []byte(s.configText(b.URL(), strings.Replace(devices, "200ms}", "100ms}", 1))), 0o600)
	if code, out := run(append(append(append([]string{"fleet", "config", "push"}, conn...), sign...),
		"--target", "site:test-site", "--version", "5", newCfg)...); code != 0 || !strings.Contains(out, "mr-cli-a: applied (version 5 in use)") {
		t.Fatalf("config push: %d\n%s", code, out)
	}
	p.waitLog(t, "remote config applied", 15*time.Second)
	// The same version again, and an older one: each reported with the
	// reason, and the push says so and fails.
	if code, out := run(append(append(append([]string{"fleet", "config", "push"}, conn...), sign...),
		"--target", "mr-cli-a", "--version", "5", "--wait", "20s", newCfg)...); code != 0 || !strings.Contains(out, "mr-cli-a: current (version 5 in use)") {
		t.Fatalf("config push of the version in use: %d\n%s", code, out)
	}
	if code, out := run(append(append(append([]string{"fleet", "config", "push"}, conn...), sign...),
		"--target", "mr-cli-a", "--version", "4", "--wait", "20s", newCfg)...); code != 1 ||
		!strings.Contains(out, "mr-cli-a: ignored (version 5 in use): version 4 is not newer than version 5") {
		t.Fatalf("config push of an older version: %d\n%s", code, out)
	}
	if code, out := run(append(append([]string{"fleet", "events"}, conn...), "--for", "1s")...); code != 0 ||
		!strings.Contains(out, "summary: mr-cli-a epoch") {
		t.Fatalf("events: %d\n%s", code, out)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestExpiredRetainedConfigIsPassedOver: the retained desired config that
// was applied stays on the broker after it expired; a restart sees it
// again and passes it over in silence, as any retained config seen again,
// instead of reporting it rejected (over its own applied report) and
// raising an alert for the config in use.
func TestExpiredRetainedConfigIsPassedOver(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-remote-x")
	section := "  - {name: sim, kind: scanner, driver: sim, interval: 300ms}\n" + r.fleetSection() + "\n  config_trial: 1s"
	cfg := a.config(t, r.broker.URL(), section)
	reports := r.broker.Subscribe(t, "reports-x", "mailroom/v1/mr-remote-x/config/reported")
	p := startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	const ttl = 4 * time.Second
	pushed := time.Now()
	if _, err := r.op.PushConfig("mr-remote-x", 1, strings.Replace(a.configText(r.broker.URL(), section), "interval: 300ms", "interval: 200ms", 1), ttl); err != nil {
		t.Fatal(err)
	}
	reports.WaitFor(t, 20*time.Second, "version 1 applied", func(ms []mqtttest.Message) bool {
		return len(ms) > 0 && strings.Contains(string(ms[len(ms)-1].Payload), `"status":"applied"`)
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	time.Sleep(time.Until(pushed.Add(ttl + time.Second))) // the retained envelope has expired
	from := len(reports.Messages())
	p = startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	p.waitLog(t, "scan committed", 10*time.Second)
	time.Sleep(2 * time.Second) // the retained config arrives right after the subscription
	if strings.Contains(p.log.String(), "remote config rejected") || strings.Contains(p.log.String(), "rejected_instruction") {
		t.Fatalf("the expired retained config was rejected again:\n%s", p.log.String())
	}
	for _, m := range reports.Messages()[from:] {
		if !strings.Contains(string(m.Payload), `"status":"applied"`) {
			t.Fatalf("report after the restart: %s", m.Payload)
		}
	}

	// A version never tried that expired before the box saw it is
	// reported rejected once; from then on it counts as tried, and the
	// next start passes it over.
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	pushed = time.Now()
	if _, err := r.op.PushConfig("mr-remote-x", 2, a.configText(r.broker.URL(), section), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(pushed.Add(3 * time.Second)))
	p = startDaemon(t, cfg)
	reports.WaitFor(t, 20*time.Second, "version 2 rejected as expired", func(ms []mqtttest.Message) bool {
		for _, m := range ms {
			if strings.Contains(string(m.Payload), `"version":2,`) && strings.Contains(string(m.Payload), `"status":"rejected"`) &&
				strings.Contains(string(m.Payload), "expired at") {
				return true
			}
		}
		return false
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p = startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	p.waitLog(t, "scan committed", 10*time.Second)
	time.Sleep(2 * time.Second)
	if strings.Contains(p.log.String(), "remote config rejected") || strings.Contains(p.log.String(), "rejected_instruction") {
		t.Fatalf("an expired config reported once was rejected again at the next start:\n%s", p.log.String())
	}
}

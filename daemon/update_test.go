package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/release"
	"github.com/mailroomd/mailroomd/internal/update"
)

// releaseDir signs one artifact into its own directory.
func releaseDir(t *testing.T, key ed25519.PrivateKey, name string, content []byte) string {
	dir := t.TempDir()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := release.Sign(key, dir, []string{path}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSelfUpdateAppliedRefusedRolledBack(t *testing.T) {
	r := newFleetRig(t)
	box := r.box(t, "mr-update-a")
	relPub, relKey, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(relPub)
	pubFile := filepath.Join(box.dir, "release.pub")
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)

	// The installed binary, and version 2 of it.
	installed := filepath.Join(t.TempDir(), "mailroomd")
	b, _ := os.ReadFile(binary)
	os.WriteFile(installed, b, 0o755)
	v2 := filepath.Join(t.TempDir(), "mailroomd")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=2.0.0-test", "-o", v2, ".").CombinedOutput(); err != nil {
		t.Fatalf("build v2: %v %s", err, out)
	}
	v2bytes, _ := os.ReadFile(v2)
	good := releaseDir(t, relKey, "mailroomd", v2bytes)
	badlySigned := releaseDir(t, otherKey, "mailroomd", v2bytes)
	// A version on trial that commits a scan (as a newer build would,
	// through its own buffer) and then never becomes healthy.
	var ids event.IDGenerator
	trialID := ids.New(time.Now().Add(time.Minute))
	trialEv := event.Event{Appliance: "mr-update-a", Type: event.TypeScan, Time: time.Now(), Device: "trial",
		Barcode: []byte("TRIAL-1"), ID: trialID, Seq: 987654321, Epoch: "EPOCH-PLACEHOLDER"}
	template, err := trialEv.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	buffer := filepath.Join(box.dir, "buffer.db")
	hangs := releaseDir(t, relKey, "mailroomd", []byte(fmt.Sprintf(`#!/bin/sh
sqlite3 -cmd ".timeout 5000" %q 2>%q <<'SQL' || exit 1
WITH e(epoch) AS (SELECT value FROM meta WHERE key = 'epoch'),
  s(seq) AS (SELECT max(seq) + 1 FROM events, e WHERE events.epoch = e.epoch)
INSERT INTO events(pos, epoch, seq, id, type, ts, payload)
  SELECT (SELECT max(pos) + 1 FROM events), e.epoch, s.seq, '%s', 'scan', 0,
    replace(replace('%s', '987654321', s.seq), 'EPOCH-PLACEHOLDER', e.epoch) FROM e, s;
SQL
exec sleep 600
`, buffer, filepath.Join(box.dir, "trial.log"), trialID, template)))

	cfg := box.config(t, r.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 200ms}\n"+r.fleetSection()+
		fmt.Sprintf("\n  release_key_file: %s\n  update_timeout: 4s", pubFile))
	stateDir := box.dir
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"update.log", "daemon.log", "result.json"} {
				b, _ := os.ReadFile(filepath.Join(stateDir, update.Dir, f))
				t.Logf("%s:\n%s", f, b)
			}
			b, _ := os.ReadFile(filepath.Join(stateDir, "trial.log"))
			t.Logf("the version on trial's sqlite3:\n%s", b)
		}
		if h, err := update.ReadHealth(stateDir); err == nil {
			update.StopProcess(h.PID, 5*time.Second)
		}
		exec.Command("pkill", "-f", "sleep 600").Run()
	})
	p := &proc{log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(installed, "run", "--config", cfg)
	// A plain binary updates a box not run by systemd, even where the
	// tests are.
	p.cmd.Env = append(os.Environ(), "INVOCATION_ID=", "SYSTEMD_EXEC_PID=")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	results := r.broker.Subscribe(t, "update-results", "mailroom/v1/mr-update-a/cmd/update/result")
	events := r.broker.Subscribe(t, "update-events", "mailroom/v1/mr-update-a/events")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ping := func() string {
		res, err := r.op.Command(ctx, "mr-update-a", "ping", nil, time.Minute)
		if err != nil || !res.OK {
			t.Fatalf("ping: %+v %v", res, err)
		}
		return res.Result.(map[string]any)["version"].(string)
	}

	// Signed by another key: refused, nothing changes.
	res, err := r.op.Command(ctx, "mr-update-a", "update", map[string]string{"path": badlySigned}, time.Minute)
	if err != nil || res.OK || !strings.Contains(res.Error, "not signed by the release key") {
		t.Fatalf("badly signed update: %+v %v", res, err)
	}
	if v := ping(); v != "dev" {
		t.Fatalf("version %q after a refused update", v)
	}

	// A good one: the daemon hands over, version 2 runs and reports. The
	// operator tool waits for that outcome, by the command's id.
	var accepted []fleet.Result
	res, err = r.op.Update(ctx, "mr-update-a", map[string]string{"path": good}, time.Minute, func(a fleet.Result) { accepted = append(accepted, a) })
	if err != nil || !res.OK || !strings.Contains(fmt.Sprint(res.Result), "status:applied") {
		t.Fatalf("update: %+v %v", res, err)
	}
	if len(accepted) != 1 || accepted[0].ID != res.ID || !strings.Contains(fmt.Sprint(accepted[0].Result), "updating:true") {
		t.Fatalf("the box's first answer before the outcome %+v: %+v", res, accepted)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the old daemon did not hand over")
	}
	// The outcome comes later on the same topic, with the command's id:
	// the operator tool waits for it by that id.
	waitOutcome := func(id, status string) {
		t.Helper()
		results.WaitFor(t, 60*time.Second, "update "+status+" for request "+id, func(ms []mqtttest.Message) bool {
			for _, m := range ms {
				var fr fleet.Result
				json.Unmarshal(m.Payload, &fr)
				if b, _ := json.Marshal(fr.Result); strings.Contains(string(b), `"status":"`+status+`"`) {
					if fr.ID != id || !strings.Contains(string(b), `"request_id":"`+id+`"`) {
						t.Fatalf("update outcome %s reported for request %q (%s), want %q", status, fr.ID, b, id)
					}
					return true
				}
			}
			return false
		})
	}
	waitOutcome(res.ID, "applied")
	if v := ping(); v != "2.0.0-test" {
		t.Fatalf("version %q after the update", v)
	}
	if got, _ := os.ReadFile(installed); string(got) != string(v2bytes) {
		t.Fatal("the installed binary is not version 2")
	}

	// One that never becomes healthy: rolled back to version 2.
	res, err = r.op.Command(ctx, "mr-update-a", "update", map[string]string{"path": hangs}, time.Minute)
	if err != nil || !res.OK {
		t.Fatalf("update to a hanging version: %+v %v", res, err)
	}
	waitOutcome(res.ID, "rolled_back")
	if v := ping(); v != "2.0.0-test" {
		t.Fatalf("version %q after the rollback", v)
	}
	// The scan the version on trial committed reaches the cloud with its
	// id, and the seqs go on after it.
	var trialSeq int64
	events.WaitFor(t, 30*time.Second, "the trial's scan, and the next seq after it", func(ms []mqtttest.Message) bool {
		seqs := map[int64]bool{}
		for _, m := range ms {
			ev, err := event.Decode(m.Payload)
			if err != nil {
				continue
			}
			if ev.ID == trialID {
				trialSeq = ev.Seq
			}
			if trialSeq > 0 && ev.Seq == trialSeq && ev.ID != trialID {
				t.Fatalf("seq %d of the trial's scan was used again by %s", ev.Seq, ev.ID)
			}
			seqs[ev.Seq] = true
		}
		return trialSeq > 0 && seqs[trialSeq+1]
	})
	if got, _ := os.ReadFile(installed); string(got) != string(v2bytes) {
		t.Fatal("the rollback did not restore version 2")
	}
}

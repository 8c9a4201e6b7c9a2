package remoteconfig

import (
	"bytes"
	"fmt"
	"image"
	pngenc "image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/config"
)

func cfgText(dir string, interval string) []byte {
	return []byte(fmt.Sprintf(`version: 1
appliance: {id: mr-1}
storage: {path: %s}
uplink: {brokers: ["mqtt://127.0.0.1:1883"], insecure: true}
devices:
  - {name: sim, kind: scanner, driver: sim, interval: %s}
`, filepath.Join(dir, "buffer.db"), interval))
}

// TestReleaseKeyIsLocalOnly: the release key is an update's second key,
// beside the fleet key that signs configs and commands; a remote config
// cannot name another.
func TestReleaseKeyIsLocalOnly(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "local.yaml"), cfgText(dir, "2s"), 0o600)
	local, err := config.Load(filepath.Join(dir, "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, local, func() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) })
	if err != nil {
		t.Fatal(err)
	}
	key := string(cfgText(dir, "2s")) + "fleet: {release_key_file: /tmp/other-release.pub}\n"
	if c, r := m.Consider(1, "it", []byte(key)); c != nil || r.Status != StatusRejected || !strings.Contains(strings.Join(r.Errors, "\n"), "fleet.release_key_file: a local-only setting") {
		t.Fatalf("release key changed remotely: %+v", r)
	}
}

func TestTrialConfirmRollback(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "local.yaml"), cfgText(dir, "2s"), 0o600)
	local, err := config.Load(filepath.Join(dir, "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }
	m, err := Open(dir, local, now)
	if err != nil {
		t.Fatal(err)
	}
	if c, trial, _ := m.Effective(); c != local || trial {
		t.Fatal("a fresh box does not run its local config")
	}
	// A broken config is rejected with the exact errors.
	if c, r := m.Consider(1, "it", []byte("version: 1\nappliance: {id: mr-1, colour: red}\n")); c != nil || r.Status != StatusRejected ||
		!strings.Contains(strings.Join(r.Errors, "\n"), "appliance.colour: unknown key") {
		t.Fatalf("broken config: %+v", r)
	}
	// Local-only settings cannot change.
	other := strings.Replace(string(cfgText(dir, "2s")), "appliance: {id: mr-1}", "appliance: {id: mr-9}", 1)
	if c, r := m.Consider(2, "it", []byte(other)); c != nil || r.Status != StatusRejected || !strings.Contains(r.Errors[0], "appliance.id: a local-only setting") {
		t.Fatalf("local-only change: %+v", r)
	}
	// A good one is tried, confirmed, kept across a restart.
	v3 := cfgText(dir, "1s")
	c, r := m.Consider(3, "it", v3)
	if c == nil || r.Status != StatusApplying || c.Devices[0].Interval.D() != time.Second {
		t.Fatalf("good config: %+v", r)
	}
	if err := m.Begin(3, "it", v3); err != nil {
		t.Fatal(err)
	}
	if r, _ := m.Confirm(); r.Status != StatusApplied || r.Applied != 3 {
		t.Fatalf("confirm: %+v", r)
	}
	m, _ = Open(dir, local, now)
	if c, trial, err := m.Effective(); err != nil || trial || c.Devices[0].Interval.D() != time.Second {
		t.Fatalf("after restart: %v %v", trial, err)
	}
	if _, r := m.Consider(3, "it", v3); r.Status != StatusCurrent {
		t.Fatalf("same version again: %+v", r)
	}
	if _, r := m.Consider(2, "it", cfgText(dir, "5s")); r.Status != StatusIgnored {
		t.Fatalf("older version: %+v", r)
	}
	// Version 4 fails its trial: back to version 3, and 4 is not tried again.
	v4 := cfgText(dir, "3s")
	m.Consider(4, "it", v4)
	m.Begin(4, "it", v4)
	back, r, _ := m.Rollback("uplink did not reconnect within 1m0s")
	if r.Status != StatusRolledBack || r.Applied != 3 || back.Devices[0].Interval.D() != time.Second {
		t.Fatalf("rollback: %+v", r)
	}
	m, _ = Open(dir, local, now)
	if c, _, _ := m.Effective(); c.Devices[0].Interval.D() != time.Second {
		t.Fatal("rollback not kept across a restart")
	}
	if _, r := m.Consider(4, "it", v4); r.Status != StatusIgnored {
		t.Fatalf("the rolled-back version again: %+v", r)
	}
}

// TestBeginDuringTrialRollsBackToTheLastProvenConfig: a config that replaces
// one still in trial rolls back to the config before that one, never to
// the unproven one.
func TestBeginDuringTrialRollsBackToTheLastProvenConfig(t *testing.T) {
	dir, local, m := newManager(t)
	if err := m.Begin(1, "it", cfgText(dir, "1s")); err != nil {
		t.Fatal(err)
	}
	m.Confirm() // version 1 proved itself
	if err := m.Begin(2, "it", cfgText(dir, "3s")); err != nil {
		t.Fatal(err)
	}
	if err := m.Begin(3, "it", cfgText(dir, "4s")); err != nil { // replaces 2 while 2 is in trial
		t.Fatal(err)
	}
	cfg, r, err := m.Rollback("the uplink did not reconnect")
	if err != nil {
		t.Fatal(err)
	}
	if r.Applied != 1 || m.InUse() != 1 || cfg.Devices[0].Interval.D() != time.Second {
		t.Fatalf("rolled back to version %d (interval %s); want version 1, the last proven config", r.Applied, cfg.Devices[0].Interval)
	}
	// After a restart the same config is in effect, out of trial.
	m2, err := Open(dir, local, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if c, trial, err := m2.Effective(); err != nil || trial || c.Devices[0].Interval.D() != time.Second {
		t.Fatalf("after a restart: trial %v, err %v; want version 1 out of trial", trial, err)
	}
}

// TestFailedBeginChangesNothing: when the new version's file or the state
// cannot be written, the config in use and its file stay as they were.
func TestFailedBeginChangesNothing(t *testing.T) {
	dir, local, m := newManager(t)
	if err := m.Begin(3, "it", cfgText(dir, "1s")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Confirm(); err != nil {
		t.Fatal(err)
	}
	for _, blocker := range []string{fileOf(4) + ".tmp", stateFile + ".tmp"} {
		os.Mkdir(filepath.Join(dir, blocker), 0o700) // writeFile cannot create its temporary file
		if err := m.Begin(4, "it", cfgText(dir, "4s")); err == nil {
			t.Fatalf("Begin succeeded with %s blocked", blocker)
		}
		os.Remove(filepath.Join(dir, blocker))
		// Still version 3, here and after a restart.
		for _, mm := range []*Manager{m, mustOpen(t, dir, local)} {
			c, trial, err := mm.Effective()
			if err != nil || trial || mm.InUse() != 3 || c.Devices[0].Interval.D() != time.Second {
				t.Fatalf("with %s blocked: in use %d, trial %v, err %v; want version 3 unchanged", blocker, mm.InUse(), trial, err)
			}
		}
	}
}

// newManager is a box whose local config file has a 2s simulated scanner.
func newManager(t *testing.T) (dir string, local *config.Config, m *Manager) {
	t.Helper()
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, "local.yaml"), cfgText(dir, "2s"), 0o600)
	local, err := config.Load(filepath.Join(dir, "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, local, mustOpen(t, dir, local)
}

func mustOpen(t *testing.T, dir string, local *config.Config) *Manager {
	t.Helper()
	m, err := Open(dir, local, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A remote config cannot name a picture file for a simulated camera: the
// picture would go to the cloud as every photo.
func TestRemotePictureFileRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "local.yaml"), cfgText(dir, "2s"), 0o600)
	local, err := config.Load(filepath.Join(dir, "local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, local, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(dir, "picture.png")
	var pic bytes.Buffer
	if err := pngenc.Encode(&pic, image.NewGray(image.Rect(0, 0, 4, 4))); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(png, pic.Bytes(), 0o600)
	camera := string(cfgText(dir, "2s")) + "  - {name: cam, kind: camera, driver: sim-camera, image: " + png + "}\n"
	if c, r := m.Consider(2, "it", []byte(camera)); c != nil || r.Status != StatusRejected || !strings.Contains(strings.Join(r.Errors, "\n"), "devices[1].image: a local-only setting") {
		t.Fatalf("a remote picture file: %+v", r)
	}
}

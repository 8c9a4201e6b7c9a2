package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/mailroomd/mailroomd/internal/update"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/mqtttest"
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

// The fleet tools refuse, before connecting to anything, flags of another
// subcommand, durations that are not positive, an unknown subcommand and a
// malformed blob hash, each with exit status 2 and a message naming it;
// --help lists the subcommand's own flags only.
func TestFleetUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "events", "--broker", "mqtt://127.0.0.1:1", "--for", "-5s"}, "--for must be positive, not -5s"},
		{[]string{"fleet", "cmd", "--broker", "mqtt://127.0.0.1:1", "--ttl", "0s", "--target", "x", "reboot"}, "--ttl must be positive"},
		{[]string{"fleet", "status", "--broker", "mqtt://127.0.0.1:1", "--sha256", "x"}, "--sha256 is not a flag of this subcommand"},
		{[]string{"fleet", "bogus"}, `unknown subcommand "bogus"`},
		{[]string{"fleet", "blobs"}, `the subcommand is "blobs get"`},
		{[]string{"fleet", "config", "--broker", "mqtt://127.0.0.1:1"}, `the subcommand is "config push"`},
		{[]string{"fleet", "directory", "pull"}, `the subcommand is "directory push"`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--target", "mr-1", "--sha256", "abc", "--out", "x"}, `--sha256 "abc" is not a SHA-256`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--target", "mr/1", "--sha256", strings.Repeat("a", 64), "--out", "x"}, `--target "mr/1" is not one appliance id`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--target", "*", "--sha256", strings.Repeat("a", 64), "--out", "x"}, `--target "*" is not one appliance id`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--target", "site:lab", "--sha256", strings.Repeat("a", 64), "--out", "x"}, `--target "site:lab" is not one appliance id`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--target", "mr-1", "--out", "x"}, "--sha256 is required"},
		{[]string{"fleet", "status", "--broker", "mqtt://127.0.0.1:1", "--prefix", "mail#"}, `--prefix "mail#" is not a valid topic prefix`},
		{[]string{"fleet", "events", "--broker", "mqtt://127.0.0.1:1", "--prefix", "mailroom/v1/"}, `--prefix "mailroom/v1/" is not a valid topic prefix`},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtt://127.0.0.1:1", "--sha256", strings.Repeat("a", 64)}, "--target is required"},
		{[]string{"fleet", "blobs", "get", "--target", "mr-1", "--sha256", strings.Repeat("a", 64), "--out", "x"}, "--broker is required"},
		{[]string{"fleet", "blobs", "get", "--broker", "mqtts://127.0.0.1:1", "--target", "*", "--out", "x"}, "--sha256 is required"},
	} {
		var out, errOut strings.Builder
		if code := Main(c.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
	var out, errOut strings.Builder
	if code := Main([]string{"fleet", "blobs", "--help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "--sha256") {
		t.Errorf("fleet blobs --help: exit %d, want 0 and the flags of blobs get:\n%s", code, errOut.String())
	}
	errOut.Reset()
	if code := Main([]string{"fleet", "events", "--help"}, &out, &errOut); code != 0 {
		t.Errorf("fleet events --help: exit %d, want 0", code)
	}
	var usage strings.Builder
	if code := Main([]string{"fleet", "--help"}, &out, &usage); code != 0 || !strings.Contains(usage.String(), "config push") {
		t.Errorf("fleet --help: exit %d, want 0 and the subcommands:\n%s", code, usage.String())
	}
	if help := errOut.String(); !strings.Contains(help, "--follow") || strings.Contains(help, "--sha256") || strings.Contains(help, "--sign-key") {
		t.Errorf("fleet events --help:\n%s", help)
	}
}

// `fleet blobs get` writes the photo to a new file readable by its owner
// only, replacing one there before whatever its mode, or to standard
// output with --out -.
func TestFleetBlobsGetOut(t *testing.T) {
	b := mqtttest.Start(t)
	photo := bytes.Repeat([]byte("label photo "), 10000) // two chunks
	sum := sha256.Sum256(photo)
	sha := hex.EncodeToString(sum[:])
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("box").SetTLSConfig(b.TLSConfig(t, "box")))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	const chunk = 65536
	publish := func(topic string, body []byte) {
		if tok := c.Publish(topic, 1, true, body); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	publish("mailroom/v1/mr-1/blobs/"+sha, []byte(fmt.Sprintf(`{"v":1,"sha256":%q,"size":%d,"content_type":"image/jpeg","kind":"label","chunk_size":%d,"chunks":2}`, sha, len(photo), chunk)))
	publish("mailroom/v1/mr-1/blobs/"+sha+"/0", photo[:chunk])
	publish("mailroom/v1/mr-1/blobs/"+sha+"/1", photo[chunk:])

	opCert, opKey := b.ClientFiles(t, "operator-blobs")
	get := func(out string) (int, string, string) {
		var stdout, stderr strings.Builder
		code := Main([]string{"fleet", "blobs", "get", "--broker", b.URL(), "--ca", b.Files.CA, "--cert", opCert, "--key", opKey,
			"--target", "mr-1", "--sha256", sha, "--out", out, "--wait", "10s"}, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	path := filepath.Join(t.TempDir(), "label.jpg")
	if err := os.WriteFile(path, []byte("an older file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := get(path); code != 0 {
		t.Fatalf("blobs get --out FILE: exit %d: %s", code, errOut)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || !bytes.Equal(got, photo) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file written over an older one: %d bytes, mode %v, %v", len(got), fi.Mode().Perm(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(left) != 1 {
		t.Fatalf("files beside the photo (temporary files left?): %v", left)
	}
	// A link stays a link, and a device is written into, not replaced.
	link := filepath.Join(filepath.Dir(path), "link.jpg")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("older again"), 0o600)
	if code, _, errOut := get(link); code != 0 {
		t.Fatalf("blobs get --out LINK: exit %d: %s", code, errOut)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, photo) {
		t.Fatal("the file the link names was not written")
	}
	if code, _, errOut := get(os.DevNull); code != 0 {
		t.Fatalf("blobs get --out /dev/null: exit %d: %s", code, errOut)
	}
	if fi, err := os.Stat(os.DevNull); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", fi.Mode(), err)
	}
	code, stdout, errOut := get("-")
	if code != 0 || stdout != string(photo) || !strings.Contains(errOut, "SHA-256 checked") {
		t.Fatalf("blobs get --out -: exit %d, %d bytes on stdout, stderr %q", code, len(stdout), errOut)
	}
	// A manifest that is not JSON is reported as damaged, not as missing.
	other := strings.Repeat("b", 64)
	publish("mailroom/v1/mr-1/blobs/"+other, []byte("{not json"))
	var so, se strings.Builder
	if code := Main([]string{"fleet", "blobs", "get", "--broker", b.URL(), "--ca", b.Files.CA, "--cert", opCert, "--key", opKey,
		"--target", "mr-1", "--sha256", other, "--out", filepath.Join(t.TempDir(), "x"), "--wait", "1s"}, &so, &se); code != 1 ||
		!strings.Contains(se.String(), "manifest of blob "+other+" from mr-1 is damaged") {
		t.Fatalf("a damaged manifest: exit %d, stderr %q", code, se.String())
	}
}

// The packaged updater refuses a marker it cannot read, with exit status
// 2 and the reason, and removes it, so that the path unit does not start it
// again and again.
func TestUpdateApplyRefusesABadMarker(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pending")
	if err := os.WriteFile(marker, []byte(`{"artifact":"/srv/a.deb","timeout_ns":-5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := Main([]string{"update-apply", "--deb", "--pending", marker}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "read update marker: negative timeout") {
		t.Errorf("exit %d, stderr %q; want 2 and the marker's error", code, errOut.String())
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the marker is still there: %v", err)
	}
}

// The packaged update unit's command line is one update-apply accepts: it
// gets as far as reading its marker.
func TestUpdateUnitCommandLineParses(t *testing.T) {
	b, err := os.ReadFile("../packaging/mailroomd-update.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=/usr/bin/mailroomd ((?:.*\\\n)*.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no ExecStart=/usr/bin/mailroomd in the unit:\n%s", b)
	}
	args := strings.Fields(strings.ReplaceAll(string(m[1]), "\\\n", " "))
	marker := filepath.Join(t.TempDir(), "pending")
	for i, a := range args {
		if a == "/var/lib/mailroomd/update/pending" {
			args[i] = marker // absent: the run ends there
		}
	}
	// The daemon writes the marker where the path unit looks for it.
	if path, err := os.ReadFile("../packaging/mailroomd-update.path"); err != nil || !strings.Contains(string(path), "\nPathExists="+update.PackagePending+"\n") {
		t.Errorf("mailroomd-update.path does not watch %s (%v):\n%s", update.PackagePending, err, path)
	}
	if !strings.Contains(string(b), "--pending "+update.PackagePending+" ") {
		t.Errorf("the unit's updater does not read %s", update.PackagePending)
	}
	var out, errOut strings.Builder
	code := Main(args, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "update-apply: open "+marker) {
		t.Fatalf("%v: exit %d, stderr %q; want the flags accepted and the missing marker reported", args, code, errOut.String())
	}
}

// TestUpdateMarkerUnreadable: a marker the updater cannot parse ends the
// update with a failure on record for the daemon to publish, and is
// removed, so that the path unit does not start the updater again.
func TestUpdateMarkerUnreadable(t *testing.T) {
	state := t.TempDir()
	if err := os.Mkdir(filepath.Join(state, update.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(state, update.Dir, "pending")
	if err := os.WriteFile(marker, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := Main([]string{"update-apply", "--pending", marker, "--state", state, "--exe", filepath.Join(state, "mailroomd")}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, stderr %q; want 2", code, errOut.String())
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the marker is still there (%v)", err)
	}
	r, ok := update.ReadResult(state)
	if !ok || r.Status != "failed" || !strings.Contains(r.Error, "the update's marker") {
		t.Fatalf("result on record: %+v %v; want failed, naming the marker", r, ok)
	}
}

// TestUpdateMarkerSymlinkRefused: the updater runs as root and the
// marker's directory is the daemon's: a marker that is a symbolic link is
// not followed.
func TestUpdateMarkerSymlinkRefused(t *testing.T) {
	state := t.TempDir()
	if err := os.Mkdir(filepath.Join(state, update.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(`{"artifact": "/etc/shadow"}`), 0o600)
	marker := filepath.Join(state, update.Dir, "pending")
	if err := os.Symlink(secret, marker); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := Main([]string{"update-apply", "--pending", marker, "--state", state, "--exe", filepath.Join(state, "mailroomd")}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, stderr %q; want 2", code, errOut.String())
	}
	if r, ok := update.ReadResult(state); !ok || r.Status != "failed" || r.Artifact != "" {
		t.Fatalf("result on record: %+v %v; want failed, no artifact", r, ok)
	}
}

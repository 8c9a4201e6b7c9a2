package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// peopleCSV is a directory file of n people.
func peopleCSV(n int) []byte {
	var b strings.Builder
	b.WriteString("id,name,email,location,badges,delegates,active\n")
	for i := range n {
		fmt.Fprintf(&b, "P%05d,Person Nummer%05d,p%d@example.com,MS-%d,BADGE-%05d,,true\n", i, i, i, i%50, i)
	}
	b.WriteString("P99999,Jürgen Müller,,MS-2.14,EMP-0042,,true\n")
	return []byte(b.String())
}

// A directory pushed in signed parts: one part tampered with spoils its
// version, nothing of it is applied and the report says why; a push whose
// parts all verify is applied whole and reported.
func TestDirectoryPushInParts(t *testing.T) {
	r := newFleetRig(t)
	a := r.box(t, "mr-dir-a")
	cfg := a.config(t, r.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 1h}\n"+r.fleetSection())
	reports := r.broker.Subscribe(t, "dir-reports", "mailroom/v1/mr-dir-a/directory/reported")
	p := startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	waitReport := func(version int64, status string) fleet.DirectoryReport {
		t.Helper()
		var got fleet.DirectoryReport
		reports.WaitFor(t, 20*time.Second, fmt.Sprintf("report %d %s", version, status), func(ms []mqtttest.Message) bool {
			for _, m := range ms {
				var rep fleet.DirectoryReport
				json.Unmarshal(m.Payload, &rep)
				if rep.Version == version && rep.Status == status {
					got = rep
					return true
				}
			}
			return false
		})
		return got
	}
	search := func(q string) string {
		var out, errOut strings.Builder
		Main([]string{"directory", "search", "--config", cfg, q}, &out, &errOut)
		return out.String() + errOut.String()
	}

	csv := peopleCSV(3000)
	parts, err := r.op.SignDirectory("mr-dir-a", 1, csv, 16<<10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 5 {
		t.Fatalf("%d parts; the test needs several", len(parts))
	}
	// Part 3's directory bytes changed after signing: its signature fails.
	var env envelope.Envelope
	json.Unmarshal(parts[2], &env)
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	payload = []byte(strings.Replace(string(payload), "Person Nummer", "Persen Nummer", 1))
	env.Payload = base64.StdEncoding.EncodeToString(payload)
	parts[2], _ = json.Marshal(env)
	for i, part := range parts {
		if err := r.op.PublishRaw("mr-dir-a", fmt.Sprintf("directory/desired/%d", i+1), part, true); err != nil {
			t.Fatal(err)
		}
	}
	rep := waitReport(1, fleet.DirectoryRejected)
	if !strings.Contains(strings.Join(rep.Errors, ";"), "part 3: bad signature") || rep.Applied != 0 {
		t.Fatalf("report of the tampered push = %+v", rep)
	}
	if out := search("Jürgen Müller"); strings.Contains(out, "P99999") {
		t.Fatalf("a push with a tampered part was applied:\n%s", out)
	}

	// All parts valid, through the command line: applied, reported. The
	// file differs from version 1's (one more person).
	csv = append(csv, "P99998,Zora Zweite,,MS-1,,,true\n"...)
	file := filepath.Join(t.TempDir(), "people.csv")
	os.WriteFile(file, csv, 0o600)
	opCert, opKey := r.broker.ClientFiles(t, "operator-dir")
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	writeFleetKey(t, keyFile, r.priv)
	var out, errOut strings.Builder
	code := Main([]string{"fleet", "directory", "push", "--broker", r.broker.URL(), "--ca", r.broker.Files.CA, "--cert", opCert, "--key", opKey,
		"--sign-key", keyFile, "--key-id", "it", "--target", "mr-dir-a", "--version", "2", "--part-size", "16384", "--wait", "30s", file}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "mr-dir-a: applied (version 2 in use, 3002 people)") {
		t.Fatalf("directory push: %d\n%s%s", code, out.String(), errOut.String())
	}
	rep = waitReport(2, fleet.DirectoryApplied)
	if rep.People != 3002 || rep.Active != 3002 || rep.Applied != 2 {
		t.Fatalf("report = %+v", rep)
	}
	if out := search("Zora Zweite"); !strings.Contains(out, `"id":"P99998"`) {
		t.Fatalf("the pushed directory is not searched:\n%s", out)
	}
	// An older version is refused by the operator's command before it
	// replaces the retained parts of the version in use.
	out.Reset()
	errOut.Reset()
	code = Main([]string{"fleet", "directory", "push", "--broker", r.broker.URL(), "--ca", r.broker.Files.CA, "--cert", opCert, "--key", opKey,
		"--sign-key", keyFile, "--key-id", "it", "--target", "mr-dir-a", "--version", "1", "--wait", "20s", file}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), "mr-dir-a: version 1 is not newer than version 2, the last mr-dir-a tried") {
		t.Fatalf("push of an older version: %d\n%s%s", code, out.String(), errOut.String())
	}
	// After a restart the directory is there and its report is published
	// again, retained.
	p.stop(t)
	p = startDaemon(t, cfg)
	p.waitLog(t, "remote instructions ready", 10*time.Second)
	if out := search("Zora Zweite"); !strings.Contains(out, `"id":"P99998"`) {
		t.Fatalf("the pushed directory did not survive a restart:\n%s", out)
	}
	again := r.broker.Subscribe(t, "dir-reports-after", "mailroom/v1/mr-dir-a/directory/reported")
	again.WaitFor(t, 10*time.Second, "the retained report of version 2", func(ms []mqtttest.Message) bool {
		for _, m := range ms {
			var rep fleet.DirectoryReport
			if json.Unmarshal(m.Payload, &rep) == nil && rep.Version == 2 && rep.Status == fleet.DirectoryApplied {
				return true
			}
		}
		return false
	})
}

// writeFleetKey writes a fleet signing key as `fleet keygen` does.
func writeFleetKey(t *testing.T, path string, key ed25519.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

package update

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/release"
)

// An update that fails before anything is installed starts the daemon that
// handed over (or was stopped) again, and records the failure for it.
func TestFailureBeforeInstallStartsThePreviousVersion(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	pubFile := filepath.Join(t.TempDir(), "release.pub")
	if err := os.WriteFile(pubFile, []byte(base64.StdEncoding.EncodeToString(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, p *Plan)
		want  string
	}{
		{"signed by another key", func(t *testing.T, p *Plan) {
			if err := release.Sign(otherKey, filepath.Dir(p.Artifact), []string{p.Artifact}); err != nil {
				t.Fatal(err)
			}
		}, "not signed by the release key"},
		{"no signed sums", func(t *testing.T, p *Plan) {}, release.SumsFile},
		{"no release key", func(t *testing.T, p *Plan) { p.PubFile = filepath.Join(t.TempDir(), "absent.pub") }, "release key: open "},
		{"a release key that is none", func(t *testing.T, p *Plan) {
			p.PubFile = filepath.Join(t.TempDir(), "bad.pub")
			os.WriteFile(p.PubFile, []byte("not a key\n"), 0o644)
		}, "release key " + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, rel := t.TempDir(), t.TempDir()
			if err := os.Mkdir(filepath.Join(state, Dir), 0o700); err != nil {
				t.Fatal(err)
			}
			exe := filepath.Join(t.TempDir(), "mailroomd")
			os.WriteFile(exe, []byte("version 1"), 0o755)
			p := Plan{PubFile: pubFile, Artifact: filepath.Join(rel, "mailroomd"), StateDir: state, Buffer: filepath.Join(state, "buffer.db"),
				Exe: exe, From: "1.0.0", RequestID: "req-9", HealthTimeout: time.Second, Log: t.Logf}
			os.WriteFile(p.Artifact, []byte("version 2"), 0o755)
			tc.setup(t, &p)
			starts := 0
			p.Start = func() (int, error) {
				// The failure is on record before the daemon starts.
				if r, ok := ReadResult(state); !ok || r.Status != "failed" {
					t.Errorf("started before the result was written: %+v %v", r, ok)
				}
				starts++
				return 4242, nil
			}
			p.Stop = func(int) { t.Error("nothing was started by the update, nothing to stop") }
			r := Apply(p)
			if r.Status != "failed" || !strings.Contains(r.Error, tc.want) || r.RequestID != "req-9" {
				t.Fatalf("result %+v, want failed with %q", r, tc.want)
			}
			if starts != 1 {
				t.Fatalf("the previous version was started %d times, want once", starts)
			}
			if b, _ := os.ReadFile(exe); string(b) != "version 1" {
				t.Fatalf("the installed binary changed: %q", b)
			}
		})
	}
}

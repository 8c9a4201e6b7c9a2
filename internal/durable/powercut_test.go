package durable_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailroomd/mailroomd/internal/durable"
	"github.com/mailroomd/mailroomd/internal/powercut"
)

// TestWriteFileSurvivesAPowerCut writes files with WriteFile, into a
// directory that is there and into new nested ones, on a file system that
// throws away what was not synced: after the cut every file is there whole.
// A plain write of the same kind is lost, which shows the cut is real.
func TestWriteFileSurvivesAPowerCut(t *testing.T) {
	if err := powercut.Check(); err != nil {
		t.Fatal(err)
	}
	fs, err := powercut.Mount(t.TempDir(), powercut.Options{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	root := fs.Dir()
	files := map[string][]byte{
		filepath.Join(root, "health.json"):                    []byte(`{"pid": 42}`),
		filepath.Join(root, "state", "update", "result.json"): bytes.Repeat([]byte("r"), 10000),
		filepath.Join(root, "certs", "client.pem"):            []byte("-----BEGIN CERTIFICATE-----\n"),
	}
	for path, b := range files {
		if err := durable.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := durable.WriteFile(filepath.Join(root, "health.json"), []byte(`{"pid": 43}`), 0o600); err != nil {
		t.Fatal(err)
	}
	files[filepath.Join(root, "health.json")] = []byte(`{"pid": 43}`)
	plain := filepath.Join(root, "plain", "lost.json")
	os.MkdirAll(filepath.Dir(plain), 0o700)
	os.WriteFile(plain, []byte("not synced"), 0o600)

	if err := fs.Cut(powercut.DropAll); err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the cut: %d bytes, %v; want its %d bytes", path, len(got), err, len(want))
		}
	}
	if _, err := os.Stat(plain); err == nil {
		t.Error("a file written without fsync survived the cut: the cut threw nothing away")
	}
	if tmp, _ := filepath.Glob(filepath.Join(root, "*.tmp")); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesWholeAndLeavesNoTemporary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "health.json")
	for _, content := range []string{`{"v":1}`, `{"v":2,"longer":true}`, `{}`} {
		if err := WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("read back %q (%v), want %q", b, err, content)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", fi.Mode(), err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	// A write that cannot create its temporary file changes nothing.
	os.Mkdir(path+".tmp", 0o700)
	if err := WriteFile(path, []byte("new"), 0o600); err == nil {
		t.Fatal("write succeeded with its temporary file blocked")
	}
	if b, _ := os.ReadFile(path); string(b) != `{}` {
		t.Fatalf("a failed write changed the file to %q", b)
	}
}

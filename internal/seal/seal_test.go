package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	line1 := NewKeyLine("k1")
	old, err := Parse(line1)
	if err != nil {
		t.Fatal(err)
	}
	sealed := old.Seal("id-1", []byte(`{"barcode":"1Z"}`))
	if bytes.Contains(sealed, []byte("1Z")) {
		t.Fatal("payload visible in the sealed bytes")
	}
	// After a rotation the new key seals and the old one still opens.
	rotated, err := Parse(NewKeyLine("k2") + "\n" + line1)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Current() != "k2" {
		t.Fatalf("current key %s", rotated.Current())
	}
	got, err := rotated.Open("k1", "id-1", sealed)
	if err != nil || string(got) != `{"barcode":"1Z"}` {
		t.Fatalf("open after rotation: %q %v", got, err)
	}
	if _, err := rotated.Open("k1", "id-2", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("payload moved to another row: %v", err)
	}
	if _, err := rotated.Open("k9", "id-1", sealed); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	wrong, _ := Parse(NewKeyLine("k1"))
	if _, err := wrong.Open("k1", "id-1", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestLoadRefusesReadableKeyFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.key")
	os.WriteFile(path, []byte(NewKeyLine("k1")+"\n"), 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable key file: %v", err)
	}
	os.Chmod(path, 0o600)
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "k1", "k1:abc", "k1:" + strings.Repeat("A", 44) + "\nk1:" + strings.Repeat("A", 44)} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestTagIsKeyedAndStable(t *testing.T) {
	a, err := Parse(NewKeyLine("a"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(NewKeyLine("b"))
	if first, again := a.Tag("EMP-1"), a.Tag("EMP-1"); first != again {
		t.Fatal("the same value must have the same tag")
	}
	if a.Tag("EMP-1") == a.Tag("EMP-2") {
		t.Fatal("different values must have different tags")
	}
	if a.Tag("EMP-1") == b.Tag("EMP-1") {
		t.Fatal("tags under different keys must differ")
	}
	if strings.Contains(a.Tag("EMP-1"), "EMP") {
		t.Fatal("a tag must not contain its value")
	}
}

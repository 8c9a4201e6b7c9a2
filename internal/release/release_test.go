package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "mailroomd_1.0_amd64.deb"), filepath.Join(dir, "mailroomd.exe")
	os.WriteFile(a, []byte("deb bytes"), 0o644)
	os.WriteFile(b, []byte("exe bytes"), 0o644)
	if err := Sign(priv, dir, []string{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := VerifyFile(pub, a); err != nil {
		t.Fatal(err)
	}
	if err := VerifyFile(otherPub, a); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key: %v", err)
	}
	os.WriteFile(b, []byte("exe bytes, tampered"), 0o644)
	if err := VerifyFile(pub, b); err == nil {
		t.Fatal("a tampered artifact verified")
	}
	sums, _ := os.ReadFile(filepath.Join(dir, SumsFile))
	os.WriteFile(filepath.Join(dir, SumsFile), append(sums, []byte("0000000000000000000000000000000000000000000000000000000000000000  evil\n")...), 0o644)
	if err := VerifyFile(pub, a); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("edited sums: %v", err)
	}
}

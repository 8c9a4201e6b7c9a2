package blobstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/internal/seal"
)

func TestPutGetSealedAndDamaged(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		dir := t.TempDir()
		var keys *seal.Keys
		if sealed {
			keys, _ = seal.Parse(seal.NewKeyLine("k1"))
		}
		s := New(dir, keys)
		photo := []byte("\xff\xd8\xff\xe0 a photo of a parcel with a name: Zacharias Quellenberger")
		sha, err := s.Put(photo)
		if err != nil || sha != Sum(photo) {
			t.Fatalf("put: %s %v", sha, err)
		}
		if again, err := s.Put(photo); err != nil || again != sha {
			t.Fatalf("put again: %s %v", again, err)
		}
		got, err := s.Get(sha)
		if err != nil || !bytes.Equal(got, photo) {
			t.Fatalf("get: %q %v", got, err)
		}
		raw, _ := os.ReadFile(s.Path(sha))
		if sealed == strings.Contains(string(raw), "Quellenberger") {
			t.Fatalf("sealed=%v, the file holds the bytes in clear: %v", sealed, !sealed)
		}
		if sealed {
			if _, err := New(dir, nil).Get(sha); err == nil {
				t.Fatal("a sealed blob read without a key")
			}
		}
		// No temporary file is left behind.
		if left, _ := filepath.Glob(filepath.Join(dir, sha[:2], ".tmp-*")); len(left) != 0 {
			t.Fatalf("temporary files left: %v", left)
		}
		// A damaged file is refused, not handed out.
		raw[len(raw)-1] ^= 1
		os.WriteFile(s.Path(sha), raw, 0o600)
		if _, err := s.Get(sha); err == nil {
			t.Fatal("a damaged blob was read")
		}
		if err := s.Remove(sha); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(sha); !errors.Is(err, ErrNotFound) {
			t.Fatalf("removed blob: %v", err)
		}
		if _, err := s.Get("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a name that is no hash: %v", err)
		}
	}
}

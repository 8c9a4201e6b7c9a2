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

// TestGetIntoReusesTheBuffer: GetInto reads into the buffer given when it
// is large enough, grows it when not, and checks the bytes as Get does:
// a buffer reused from a larger blob never leaks its tail into a smaller
// one, and an empty or damaged file is an error.
func TestGetIntoReusesTheBuffer(t *testing.T) {
	s := New(t.TempDir(), nil)
	big := bytes.Repeat([]byte("B"), 100_000)
	small := []byte("a small photo")
	shaBig, _ := s.Put(big)
	shaSmall, _ := s.Put(small)
	body, backing, err := s.GetInto(shaBig, make([]byte, 10))
	if err != nil || !bytes.Equal(body, big) || cap(backing) < len(big) {
		t.Fatalf("into a small buffer: %d bytes, %v", len(body), err)
	}
	body, again, err := s.GetInto(shaSmall, backing)
	if err != nil || !bytes.Equal(body, small) || &again[:1][0] != &backing[:1][0] {
		t.Fatalf("into the big one again: %q %v (same buffer: %v)", body, err, &again[:1][0] == &backing[:1][0])
	}
	os.WriteFile(s.Path(shaSmall), nil, 0o600)
	if _, _, err := s.GetInto(shaSmall, backing); err == nil || !strings.Contains(err.Error(), "not a blob file") {
		t.Fatalf("an empty file: %v", err)
	}
	raw, _ := os.ReadFile(s.Path(shaBig))
	os.WriteFile(s.Path(shaBig), raw[:len(raw)-1], 0o600)
	if _, _, err := s.GetInto(shaBig, backing); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a file cut short: %v", err)
	}
}

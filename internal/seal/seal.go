// Package seal encrypts event payloads at rest with AES-256-GCM. A key
// file holds one or more keys, "ID:BASE64" per line (32 bytes each); the
// first seals new rows, all of them open old ones, so keys can rotate. Each
// sealed row names its key id, and the row's event id is bound to the
// ciphertext, so a payload cannot be moved to another row unnoticed.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// Keys seal and open payloads.
type Keys struct {
	current string
	aeads   map[string]cipher.AEAD
	tags    map[string][]byte // per key id, the key of Tag
}

// ErrUnknownKey means a row was sealed with a key that is not in the file.
var ErrUnknownKey = errors.New("sealed with a key that is not in storage.encryption_key_file")

// ErrOpen means a payload could not be opened: a wrong key or damage.
var ErrOpen = errors.New("sealed payload does not open with its key (wrong key, or damaged)")

// Load reads a key file. It must be readable by its owner only.
func Load(path string) (*Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("encryption key file %s is readable by group or others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	return Parse(string(b))
}

// Parse reads keys from text.
func Parse(text string) (*Keys, error) {
	k := &Keys{aeads: map[string]cipher.AEAD{}, tags: map[string][]byte{}}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, b64, ok := strings.Cut(line, ":")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || id == "" || err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("encryption key file line %d: want ID:BASE64 of 32 bytes", n+1)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("encryption key file line %d: duplicate key id %q", n+1, id)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		k.aeads[id] = aead
		m := hmac.New(sha256.New, raw)
		m.Write([]byte("mailroomd lookup tag v1"))
		k.tags[id] = m.Sum(nil)
		if k.current == "" {
			k.current = id
		}
	}
	if k.current == "" {
		return nil, errors.New("encryption key file holds no key")
	}
	return k, nil
}

// NewKeyLine returns a fresh key as a key file line.
func NewKeyLine(id string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return id + ":" + base64.StdEncoding.EncodeToString(b)
}

// Current is the id of the key that seals new rows.
func (k *Keys) Current() string { return k.current }

// Has reports whether the key id is known.
func (k *Keys) Has(id string) bool { _, ok := k.aeads[id]; return ok }

// Tag returns a keyed hash of value under the current key, for looking up
// sealed rows by a value without storing it in clear: equal values have
// equal tags, and a tag says nothing of its value without the key. Tags
// change with the current key.
func (k *Keys) Tag(value string) string {
	m := hmac.New(sha256.New, k.tags[k.current])
	m.Write([]byte(value))
	return "t:" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// Seal encrypts payload for the row with the given event id.
func (k *Keys) Seal(eventID string, payload []byte) []byte {
	aead := k.aeads[k.current]
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(payload)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out[:aead.NonceSize()], payload, []byte(eventID))
}

// Open decrypts a row's payload sealed with keyID.
func (k *Keys) Open(keyID, eventID string, sealed []byte) ([]byte, error) {
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, keyID)
	}
	n := aead.NonceSize()
	if len(sealed) < n+aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(eventID))
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

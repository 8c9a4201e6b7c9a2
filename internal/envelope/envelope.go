// Package envelope authenticates remote instructions. Every desired config
// and every command reaches the box as an envelope: a payload (the exact
// bytes that were signed, base64 in transit), the id of the fleet key that
// signed them, and an Ed25519 signature over those bytes. The target,
// version or nonce and expiry are inside the signed payload, so none of
// them can be changed without breaking the signature. Nothing is ever
// re-serialised before verification.
//
// Wire format (JSON, one MQTT message):
//
//	{"key_id":"it-2026","payload":"<base64 of the payload bytes>","sig":"<base64 of the 64-byte signature>"}
//
// Payload (JSON, signed as is):
//
//	{"v":1,"kind":"command","target":"mr-berlin-01","name":"ping","id":"req-1",
//	 "nonce":"c2f1…","issued":"2026-11-27T10:00:00Z","expires":"2026-11-27T10:05:00Z","args":{}}
//	{"v":1,"kind":"config","target":"mr-berlin-01","version":7,
//	 "issued":"2026-11-27T10:00:00Z","expires":"2027-11-27T10:00:00Z","config":"version: 1\n…"}
//	{"v":1,"kind":"directory","target":"site:berlin","version":3,"part":1,"parts":12,
//	 "sha256":"9f2c…","issued":"…","expires":"…","directory":"id,name,email,…\n…"}
package envelope

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kinds of payload.
const (
	KindCommand   = "command"
	KindConfig    = "config"
	KindDirectory = "directory"
)

// Limits of a directory push: how many parts, and how many bytes of CSV
// they carry together.
const (
	MaxDirectoryParts = 1024
	MaxDirectorySize  = 32 << 20
)

// MaxSize is the largest envelope accepted, in bytes.
const MaxSize = 256 << 10

// MaxCommandLifetime bounds expires-issued of a command, so that the nonces
// a box must remember stay few.
const MaxCommandLifetime = 24 * time.Hour

// Payload is what was signed.
type Payload struct {
	V    int    `json:"v"`
	Kind string `json:"kind"`
	// Target is an appliance id, "site:<site>" or "*" (every box).
	Target string `json:"target"`
	// Name is the command's name; it must match the topic it came on.
	Name string `json:"name,omitempty"`
	// ID is the request id the result names.
	ID string `json:"id,omitempty"`
	// Nonce makes a command unique; a box runs each nonce once.
	Nonce string `json:"nonce,omitempty"`
	// Version of a desired config: it must increase for the appliance.
	Version int64           `json:"version,omitempty"`
	Issued  time.Time       `json:"issued"`
	Expires time.Time       `json:"expires"`
	Args    json.RawMessage `json:"args,omitempty"`
	Config  string          `json:"config,omitempty"`
	// Part (from 1) and Parts of a directory push; SHA256 is the hex
	// SHA-256 of the whole CSV file, Directory this part's bytes of it.
	Part      int    `json:"part,omitempty"`
	Parts     int    `json:"parts,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Directory string `json:"directory,omitempty"`
}

// Envelope is the signed message on the wire.
type Envelope struct {
	KeyID   string `json:"key_id"`
	Payload string `json:"payload"`
	Sig     string `json:"sig"`
}

// Reasons a message is rejected. Every rejection wraps one of them.
var (
	ErrMalformed    = errors.New("malformed envelope")
	ErrTooLarge     = errors.New("envelope too large")
	ErrUnknownKey   = errors.New("signed by an unknown key")
	ErrBadSignature = errors.New("bad signature")
	ErrWrongTarget  = errors.New("not addressed to this appliance")
	ErrExpired      = errors.New("expired")
	ErrNotYetValid  = errors.New("issued in the future")
	ErrWrongKind    = errors.New("wrong kind of payload")
)

// Verifier checks envelopes for one appliance.
type Verifier struct {
	// Keys are the fleet's public keys by id (several during a rotation).
	Keys      map[string]ed25519.PublicKey
	Appliance string
	Site      string
	Now       func() time.Time
	// Skew is how far in the future "issued" may be (clocks differ).
	Skew time.Duration
}

// Open verifies an envelope and returns its payload and the key id that
// signed it. The signature is checked over the exact payload bytes before
// anything in them is read.
func (v *Verifier) Open(msg []byte, kind string) (Payload, string, error) {
	var p Payload
	if len(msg) > MaxSize {
		return p, "", fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(msg), MaxSize)
	}
	var env Envelope
	dec := json.NewDecoder(strings.NewReader(string(msg)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return p, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	key, ok := v.Keys[env.KeyID]
	if !ok {
		return p, env.KeyID, fmt.Errorf("%w %q", ErrUnknownKey, env.KeyID)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return p, env.KeyID, fmt.Errorf("%w: payload is not base64: %v", ErrMalformed, err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return p, env.KeyID, fmt.Errorf("%w: sig is not a base64 Ed25519 signature", ErrMalformed)
	}
	if !ed25519.Verify(key, payload, sig) {
		return p, env.KeyID, ErrBadSignature
	}
	dec = json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, env.KeyID, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	switch {
	case p.V != 1:
		return p, env.KeyID, fmt.Errorf("%w: payload version %d", ErrMalformed, p.V)
	case p.Kind != kind:
		return p, env.KeyID, fmt.Errorf("%w: %q, expected %q", ErrWrongKind, p.Kind, kind)
	case !v.addressed(p.Target):
		return p, env.KeyID, fmt.Errorf("%w: target %q", ErrWrongTarget, p.Target)
	case p.Issued.IsZero() || p.Expires.IsZero():
		return p, env.KeyID, fmt.Errorf("%w: issued and expires are required", ErrMalformed)
	}
	now := v.Now()
	switch {
	case now.After(p.Expires):
		return p, env.KeyID, fmt.Errorf("%w at %s", ErrExpired, p.Expires.UTC().Format(time.RFC3339))
	case p.Issued.After(now.Add(v.Skew)):
		return p, env.KeyID, fmt.Errorf("%w: %s", ErrNotYetValid, p.Issued.UTC().Format(time.RFC3339))
	}
	if kind == KindCommand {
		if p.Nonce == "" || len(p.Nonce) > 128 || p.Name == "" {
			return p, env.KeyID, fmt.Errorf("%w: a command needs a name and a nonce of at most 128 characters", ErrMalformed)
		}
		if p.Expires.Sub(p.Issued) > MaxCommandLifetime {
			return p, env.KeyID, fmt.Errorf("%w: a command may live at most %s", ErrMalformed, MaxCommandLifetime)
		}
	}
	if (kind == KindConfig || kind == KindDirectory) && p.Version <= 0 {
		return p, env.KeyID, fmt.Errorf("%w: a %s needs a positive version", ErrMalformed, kind)
	}
	if kind == KindDirectory {
		switch {
		case p.Parts < 1 || p.Parts > MaxDirectoryParts || p.Part < 1 || p.Part > p.Parts:
			return p, env.KeyID, fmt.Errorf("%w: a directory part needs 1 <= part <= parts <= %d", ErrMalformed, MaxDirectoryParts)
		case len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "":
			return p, env.KeyID, fmt.Errorf("%w: sha256 must be 64 lower-case hex digits", ErrMalformed)
		}
	}
	return p, env.KeyID, nil
}

func (v *Verifier) addressed(target string) bool {
	switch {
	case target == "*":
		return true
	case strings.HasPrefix(target, "site:"):
		return v.Site != "" && target[5:] == v.Site
	}
	return target != "" && target == v.Appliance
}

// Sign makes an envelope of a payload, for the fleet CLI and tests.
func Sign(key ed25519.PrivateKey, keyID string, p Payload) ([]byte, error) {
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return SignBytes(key, keyID, payload)
}

// SignBytes makes an envelope of payload bytes exactly as given.
func SignBytes(key ed25519.PrivateKey, keyID string, payload []byte) ([]byte, error) {
	return json.Marshal(Envelope{KeyID: keyID, Payload: base64.StdEncoding.EncodeToString(payload),
		Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(key, payload))})
}

// ParsePublicKey reads an Ed25519 public key: PEM (as `openssl pkey
// -pubout` writes it) or the base64 of the raw 32 bytes.
func ParsePublicKey(text string) (ed25519.PublicKey, error) {
	text = strings.TrimSpace(text)
	if block, _ := pem.Decode([]byte(text)); block != nil {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		pk, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("parse public key: not an Ed25519 key (%T)", k)
		}
		return pk, nil
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, errors.New("parse public key: neither PEM nor base64 (of the 32-byte key, or of the DER that `openssl pkey -pubout` wraps in PEM)")
	}
	if len(raw) == ed25519.PublicKeySize {
		return ed25519.PublicKey(raw), nil
	}
	// The base64 of a DER SubjectPublicKeyInfo: the body of the PEM file.
	k, err := x509.ParsePKIXPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %d bytes are neither a 32-byte Ed25519 key nor a DER public key: %w", len(raw), err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("parse public key: not an Ed25519 key (%T)", k)
	}
	return pk, nil
}

// ParsePrivateKey reads an Ed25519 private key in PKCS#8 PEM, as `openssl
// genpkey -algorithm ed25519` and `mailroomd fleet keygen` write it.
func ParsePrivateKey(text []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(text)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	pk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse private key: not an Ed25519 key (%T)", k)
	}
	return pk, nil
}

package envelope

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func keys(t testing.TB) (ed25519.PrivateKey, *Verifier) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, &Verifier{Keys: map[string]ed25519.PublicKey{"k1": pub}, Appliance: "mr-1", Site: "berlin",
		Now: func() time.Time { return now }, Skew: 5 * time.Minute}
}

func cmd() Payload {
	return Payload{V: 1, Kind: KindCommand, Target: "mr-1", Name: "ping", ID: "r1", Nonce: "n1",
		Issued: now.Add(-time.Minute), Expires: now.Add(time.Minute)}
}

func TestOpenAcceptsAndRejects(t *testing.T) {
	priv, v := keys(t)
	otherPriv, _ := keys(t)
	sign := func(p Payload) []byte {
		b, err := Sign(priv, "k1", p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := sign(cmd())
	if p, kid, err := v.Open(good, KindCommand); err != nil || kid != "k1" || p.Name != "ping" || p.Nonce != "n1" {
		t.Fatalf("good envelope: %+v %s %v", p, kid, err)
	}
	site := cmd()
	site.Target = "site:berlin"
	all := cmd()
	all.Target = "*"
	for _, p := range []Payload{site, all} {
		if _, _, err := v.Open(sign(p), KindCommand); err != nil {
			t.Errorf("target %s: %v", p.Target, err)
		}
	}
	with := func(f func(*Payload)) []byte { p := cmd(); f(&p); return sign(p) }
	otherKey, _ := Sign(otherPriv, "k1", cmd())
	tampered := func() []byte {
		var env Envelope
		json.Unmarshal(good, &env)
		raw, _ := base64.StdEncoding.DecodeString(env.Payload)
		env.Payload = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"mr-1"`, `"mr-2"`, 1)))
		b, _ := json.Marshal(env)
		return b
	}()
	for _, tc := range []struct {
		name string
		msg  []byte
		kind string
		want error
	}{
		{"garbage", []byte("{not json"), KindCommand, ErrMalformed},
		{"unknown field", []byte(`{"key_id":"k1","payload":"","sig":"","x":1}`), KindCommand, ErrMalformed},
		{"oversized", make([]byte, MaxSize+1), KindCommand, ErrTooLarge},
		{"unknown key", []byte(strings.Replace(string(good), `"k1"`, `"k9"`, 1)), KindCommand, ErrUnknownKey},
		{"signed by another key", otherKey, KindCommand, ErrBadSignature},
		{"payload tampered", tampered, KindCommand, ErrBadSignature},
		{"wrong target", with(func(p *Payload) { p.Target = "mr-2" }), KindCommand, ErrWrongTarget},
		{"wrong site", with(func(p *Payload) { p.Target = "site:hamburg" }), KindCommand, ErrWrongTarget},
		{"expired", with(func(p *Payload) { p.Expires = now.Add(-time.Second) }), KindCommand, ErrExpired},
		{"from the future", with(func(p *Payload) { p.Issued = now.Add(time.Hour); p.Expires = now.Add(2 * time.Hour) }), KindCommand, ErrNotYetValid},
		{"no nonce", with(func(p *Payload) { p.Nonce = "" }), KindCommand, ErrMalformed},
		{"lives too long", with(func(p *Payload) { p.Expires = now.Add(48 * time.Hour) }), KindCommand, ErrMalformed},
		{"a command as config", good, KindConfig, ErrWrongKind},
	} {
		_, _, err := v.Open(tc.msg, tc.kind)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestOpenSSLSignedEnvelope signs a payload with openssl, an independent
// Ed25519 implementation, and checks that the box accepts it and rejects
// each signed field changed.
func TestOpenSSLSignedEnvelope(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required for this test (Debian package openssl)")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "fleet.key")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("genpkey: %v %s", err, out)
	}
	pubPEM, err := exec.Command(openssl, "pkey", "-in", keyFile, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(string(pubPEM))
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Keys: map[string]ed25519.PublicKey{"ops": pub}, Appliance: "mr-1", Now: func() time.Time { return now }}
	payload := `{"v":1,"kind":"command","target":"mr-1","name":"ping","id":"r1","nonce":"n-openssl","issued":"2026-11-27T09:59:00Z","expires":"2026-11-27T10:01:00Z"}`
	sign := func(payload string) []byte {
		in := filepath.Join(dir, "payload.json")
		os.WriteFile(in, []byte(payload), 0o600)
		sig, err := exec.Command(openssl, "pkeyutl", "-sign", "-inkey", keyFile, "-rawin", "-in", in).Output()
		if err != nil {
			t.Fatalf("pkeyutl: %v", err)
		}
		b, _ := json.Marshal(Envelope{KeyID: "ops", Payload: base64.StdEncoding.EncodeToString([]byte(payload)),
			Sig: base64.StdEncoding.EncodeToString(sig)})
		return b
	}
	env := sign(payload)
	if p, _, err := v.Open(env, KindCommand); err != nil || p.Nonce != "n-openssl" {
		t.Fatalf("openssl-signed envelope: %+v %v", p, err)
	}
	// Each signed field changed after signing breaks the signature.
	var e Envelope
	json.Unmarshal(env, &e)
	for _, change := range [][2]string{
		{`"mr-1"`, `"mr-2"`}, {`"ping"`, `"restart"`}, {`"n-openssl"`, `"n-other"`},
		{`10:01:00Z`, `11:01:00Z`}, {`"r1"`, `"r2"`}, {`"command"`, `"config"`},
	} {
		tampered := e
		tampered.Payload = base64.StdEncoding.EncodeToString([]byte(strings.Replace(payload, change[0], change[1], 1)))
		b, _ := json.Marshal(tampered)
		if _, _, err := v.Open(b, KindCommand); !errors.Is(err, ErrBadSignature) {
			t.Errorf("changed %s to %s: %v, want bad signature", change[0], change[1], err)
		}
	}
	// The private key openssl wrote is readable as a fleet signing key.
	b, _ := os.ReadFile(keyFile)
	if _, err := ParsePrivateKey(b); err != nil {
		t.Fatal(err)
	}
}

func TestParsePublicKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	// The raw key, the PEM of `openssl pkey -pubout`, and the base64 line
	// inside that PEM (the DER), as docs/configuration.md shows it.
	for _, text := range []string{base64.StdEncoding.EncodeToString(pub), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		base64.StdEncoding.EncodeToString(der)} {
		got, err := ParsePublicKey(text)
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %v", text, err)
		}
	}
	rsaDER := []byte{0x30, 0x03, 0x02, 0x01, 0x01} // DER, but no public key
	for _, bad := range []string{"", "abc", base64.StdEncoding.EncodeToString([]byte("short")), base64.StdEncoding.EncodeToString(rsaDER)} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

func FuzzOpen(f *testing.F) {
	priv, v := keys(f)
	good, _ := Sign(priv, "k1", cmd())
	f.Add(good)
	f.Add([]byte(`{"key_id":"k1","payload":"e30=","sig":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, _, err := v.Open(msg, KindCommand)
		if err == nil && (p.Target != "mr-1" && p.Target != "*" && p.Target != "site:berlin") {
			t.Fatalf("accepted an envelope for %q", p.Target)
		}
	})
}

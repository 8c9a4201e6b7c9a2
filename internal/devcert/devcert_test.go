package devcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"
)

func TestWriteDirKeepsCertificatesOfTheSameApplianceOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteDir(dir, "mr-demo-01", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDir(dir, "mr-demo-01", time.Now()); err != nil {
		t.Fatalf("the same appliance again: %v", err)
	}
	if _, err := WriteDir(dir, "mr-other", time.Now()); err == nil || !strings.Contains(err.Error(), `for "mr-demo-01" exist`) {
		t.Fatalf("another appliance id: %v, want a refusal naming the existing one", err)
	}
}

// The operator pair is for `mailroomd fleet`: CN fleet-operator (the
// operator of configs/mosquitto-acl.conf), a client certificate of the
// same CA, its key readable by its owner only. A directory from before
// the pair is made anew.
func TestWriteDirOperatorPair(t *testing.T) {
	dir := t.TempDir()
	f, err := WriteDir(dir, "mr-demo-01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(f.OperatorCert, f.OperatorKey); err != nil {
		t.Fatalf("operator pair: %v", err)
	}
	cert := parse(t, f.OperatorCert)
	roots := x509.NewCertPool()
	roots.AddCert(parse(t, f.CA))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cert.Subject.CommonName != "fleet-operator" {
		t.Fatalf("operator certificate CN %q: %v", cert.Subject.CommonName, err)
	}
	if fi, err := os.Stat(f.OperatorKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("operator key mode: %v %v", fi.Mode().Perm(), err)
	}
	// A directory from before the operator pair: made anew, all of it.
	oldCA, _ := os.ReadFile(f.CA)
	os.Remove(f.OperatorKey)
	os.Remove(f.OperatorCert)
	if f, err = WriteDir(dir, "mr-demo-01", time.Now()); err != nil {
		t.Fatal(err)
	}
	newCA, _ := os.ReadFile(f.CA)
	if _, err := os.Stat(f.OperatorKey); err != nil || bytes.Equal(oldCA, newCA) || !f.Renewed {
		t.Fatalf("an old directory was not made anew: operator key %v, same CA %v, renewed %v", err, bytes.Equal(oldCA, newCA), f.Renewed)
	}
	if f, _ := WriteDir(t.TempDir(), "mr-demo-01", time.Now()); f.Renewed {
		t.Fatal("a fresh directory reported as renewed")
	}
}

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

package fleet

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
)

// CertRenewal makes the box's next client key and takes the certificate
// IT's CA signed for it. The private key never leaves the box: only the
// certificate request travels.
type CertRenewal struct {
	CertFile, KeyFile, CAFile string
	CommonName                string
}

func (c CertRenewal) pendingKey() string { return c.KeyFile + ".new" }

// Request makes a new key (kept beside the current one until the signed
// certificate arrives) and returns a certificate request for it, PEM.
func (c CertRenewal) Request() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := durable.WriteFile(c.pendingKey(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("keep the new key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: c.CommonName}}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), nil
}

// Install checks a signed certificate against the pending key and the CA
// and puts both in place; the uplink uses them from its next connection.
func (c CertRenewal) Install(certPEM []byte, now time.Time) (time.Time, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return time.Time{}, errors.New("install-cert: no PEM certificate given")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("install-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.pendingKey())
	if err != nil {
		return time.Time{}, errors.New("install-cert: no pending key; run renew-cert first")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return time.Time{}, errors.New("install-cert: pending key unreadable")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("install-cert: pending key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.(*ecdsa.PrivateKey).Public())
	if err != nil {
		return time.Time{}, err
	}
	certPub, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if !bytes.Equal(pub, certPub) {
		return time.Time{}, errors.New("install-cert: the certificate is not for the key of the last renew-cert")
	}
	if cert.Subject.CommonName != c.CommonName {
		return time.Time{}, fmt.Errorf("install-cert: the certificate names %q, not this appliance %q", cert.Subject.CommonName, c.CommonName)
	}
	if caPEM, err := os.ReadFile(c.CAFile); err == nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return time.Time{}, fmt.Errorf("install-cert: %w", err)
		}
	}
	// Durably: a power cut leaves the old pair or the new one in place.
	tmp := c.CertFile + ".new"
	if err := durable.WriteFile(tmp, certPEM, 0o644); err != nil {
		return time.Time{}, err
	}
	if err := durable.Rename(c.pendingKey(), c.KeyFile); err != nil {
		return time.Time{}, err
	}
	if err := durable.Rename(tmp, c.CertFile); err != nil {
		return time.Time{}, err
	}
	return cert.NotAfter, nil
}

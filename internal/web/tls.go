package web

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/internal/durable"
)

// IsLoopback reports whether a listen address only accepts connections
// from this machine.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SelfSigned loads the self-signed certificate kept in dir, or generates
// one on first use. fresh is true when it was just generated. The
// certificate names this host and the listen address.
func SelfSigned(dir, listen string, now time.Time) (cert tls.Certificate, fingerprint string, fresh bool, err error) {
	certFile, keyFile := filepath.Join(dir, "web-selfsigned.pem"), filepath.Join(dir, "web-selfsigned.key")
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return cert, "", false, fmt.Errorf("web certificate %s: %w", certFile, err)
	}
	if err != nil {
		if err := generate(certFile, keyFile, listen, now); err != nil {
			return cert, "", false, fmt.Errorf("generate web certificate: %w", err)
		}
		fresh = true
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return cert, "", false, err
		}
	}
	return cert, Fingerprint(cert.Certificate[0]), fresh, nil
}

// Fingerprint is the SHA-256 of a certificate, as browsers show it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func generate(certFile, keyFile, listen string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "mailroomd " + host, Organization: []string{"mailroomd"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	if h, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && ip == nil {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := durable.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	if err := durable.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return durable.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

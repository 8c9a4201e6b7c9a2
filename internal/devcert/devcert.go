// Package devcert issues throwaway X.509 certificates for development and
// tests: a CA, a broker (server) certificate for loopback, and client
// certificates whose common name is the appliance id. They are not for
// production use.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// Pair is an issued certificate and its private key, PEM-encoded.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed CA named name, valid from now for validity.
func NewCA(name string, now time.Time, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"mailroomd development"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// IssueServer issues a server certificate valid for localhost and the
// loopback addresses.
func (ca *CA) IssueServer(now time.Time, validity time.Duration) (Pair, error) {
	return ca.issue("localhost", now, validity, func(t *x509.Certificate) {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		t.DNSNames = []string{"localhost"}
		t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	})
}

// IssueClient issues a client certificate whose common name is cn.
func (ca *CA) IssueClient(cn string, now time.Time, validity time.Duration) (Pair, error) {
	return ca.issue(cn, now, validity, func(t *x509.Certificate) {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
}

func (ca *CA) issue(cn string, now time.Time, validity time.Duration, edit func(*x509.Certificate)) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("generate key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Pair{}, fmt.Errorf("issue certificate for %s: %w", cn, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("encode key for %s: %w", cn, err)
	}
	return Pair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

// Files names the files WriteDir produces.
type Files struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	// WatcherCert and WatcherKey (CN "watcher") are for a person watching
	// the broker: a client needs a certificate of its own, since the broker
	// takes the client id from the certificate (use_username_as_clientid).
	WatcherCert, WatcherKey string
	// OperatorCert and OperatorKey (CN "fleet-operator", the operator of
	// configs/mosquitto-acl.conf) are for `mailroomd fleet`, beside a
	// watcher.
	OperatorCert, OperatorKey string
	// Renewed is set when WriteDir replaced certificates made before the
	// operator pair: a broker using the old ones must be restarted.
	Renewed bool
}

// WriteDir writes a CA, a loopback server pair, a client pair for clientCN,
// a watcher pair and an operator pair into dir (keys mode 0600) and
// returns their paths. Existing files are left alone, so a development
// setup keeps its certificates (a directory from before the operator pair
// is made anew, all of it: the CA's key is not kept).
func WriteDir(dir, clientCN string, now time.Time) (Files, error) {
	f := Files{
		CA:           filepath.Join(dir, "ca.pem"),
		ServerCert:   filepath.Join(dir, "server.pem"),
		ServerKey:    filepath.Join(dir, "server.key"),
		ClientCert:   filepath.Join(dir, "client.pem"),
		ClientKey:    filepath.Join(dir, "client.key"),
		WatcherCert:  filepath.Join(dir, "watcher.pem"),
		WatcherKey:   filepath.Join(dir, "watcher.key"),
		OperatorCert: filepath.Join(dir, "operator.pem"),
		OperatorKey:  filepath.Join(dir, "operator.key"),
	}
	if _, err := os.Stat(f.OperatorKey); err == nil {
		// Kept, but only for the same appliance: a certificate for another
		// id would make the broker file the box under that id.
		if b, err := os.ReadFile(f.ClientCert); err == nil {
			if block, _ := pem.Decode(b); block != nil {
				if c, err := x509.ParseCertificate(block.Bytes); err == nil && c.Subject.CommonName != clientCN {
					return f, fmt.Errorf("development certificates for %q exist in %s; remove the directory to make new ones for %q",
						c.Subject.CommonName, dir, clientCN)
				}
			}
		}
		return f, nil
	}
	if _, err := os.Stat(f.CA); err == nil {
		f.Renewed = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, fmt.Errorf("write development certificates: %w", err)
	}
	ca, err := NewCA("mailroomd development CA", now, 5*365*24*time.Hour)
	if err != nil {
		return f, err
	}
	srv, err := ca.IssueServer(now, 2*365*24*time.Hour)
	if err != nil {
		return f, err
	}
	cli, err := ca.IssueClient(clientCN, now, 2*365*24*time.Hour)
	if err != nil {
		return f, err
	}
	watcher, err := ca.IssueClient("watcher", now, 2*365*24*time.Hour)
	if err != nil {
		return f, err
	}
	operator, err := ca.IssueClient("fleet-operator", now, 2*365*24*time.Hour)
	if err != nil {
		return f, err
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CA, ca.CertPEM, 0o644}, {f.ServerCert, srv.CertPEM, 0o644}, {f.ServerKey, srv.KeyPEM, 0o600},
		{f.ClientCert, cli.CertPEM, 0o644}, {f.ClientKey, cli.KeyPEM, 0o600},
		{f.WatcherCert, watcher.CertPEM, 0o644}, {f.WatcherKey, watcher.KeyPEM, 0o600},
		{f.OperatorCert, operator.CertPEM, 0o644}, {f.OperatorKey, operator.KeyPEM, 0o600},
	} {
		os.Remove(w.path) // a file there before keeps its mode through WriteFile
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return f, fmt.Errorf("write development certificates: %w", err)
		}
	}
	return f, nil
}

// SignCSR issues a client certificate for a PEM certificate request, as
// IT's CA does when a box renews its certificate.
func (ca *CA) SignCSR(csrPEM []byte, now time.Time, validity time.Duration) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("sign csr: no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign csr: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// LoadTLS builds the mutual-TLS client configuration: the broker must present
// a certificate signed by the CA in caFile for the host it is dialled by, and
// the appliance presents the certificate in certFile. TLS 1.2 is the minimum.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load uplink CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load uplink CA: %s holds no PEM certificate", caFile)
	}
	rc := &reloadingCert{certFile: certFile, keyFile: keyFile}
	if _, err := rc.get(nil); err != nil {
		return nil, err
	}
	return &tls.Config{
		RootCAs:              pool,
		GetClientCertificate: rc.get,
		MinVersion:           tls.VersionTLS12,
	}, nil
}

// reloadingCert serves the client certificate from its files and reads
// them again when either changes on disk, so that a renewed certificate is
// used from the next connection on, without a restart.
type reloadingCert struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	certMod, keyMod   time.Time
}

func (r *reloadingCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, err1 := os.Stat(r.certFile)
	ks, err2 := os.Stat(r.keyFile)
	if r.cert != nil && err1 == nil && err2 == nil && cs.ModTime().Equal(r.certMod) && ks.ModTime().Equal(r.keyMod) {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // a half-written renewal: keep the working pair
		}
		return nil, fmt.Errorf("load uplink client certificate: %w", err)
	}
	r.cert = &cert
	if err1 == nil && err2 == nil {
		r.certMod, r.keyMod = cs.ModTime(), ks.ModTime()
	}
	return r.cert, nil
}

// Explain turns a connection error into a sentence an operator can act on.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	var ee endpointErrors
	if errors.As(err, &ee) {
		return ee.Error() // each endpoint explained on its own
	}
	msg := err.Error()
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var op *net.OpError
	switch {
	case errors.As(err, &ua) || strings.Contains(msg, "certificate signed by unknown authority"):
		return "the broker's certificate is not signed by uplink.ca_file: " + msg
	case errors.As(err, &hn) || strings.Contains(msg, "certificate is valid for"):
		return "the broker's certificate does not match its address: " + msg
	case errors.As(err, &ci) || strings.Contains(msg, "certificate has expired"):
		return "the broker's certificate is not valid: " + msg
	case strings.Contains(msg, "unknown certificate authority") || strings.Contains(msg, "bad certificate") ||
		strings.Contains(msg, "certificate required") || strings.Contains(msg, "unknown certificate"):
		return "the broker refused our client certificate (uplink.cert_file): " + msg
	case strings.Contains(msg, "not Authorized") || strings.Contains(msg, "not authorised"):
		return "the broker refused this client id or certificate identity: " + msg
	case strings.Contains(msg, "connection refused"):
		return "nothing is listening at the broker address: " + msg
	case errors.As(err, &op) && op.Timeout(), strings.Contains(msg, "i/o timeout"):
		return "the broker did not answer in time: " + msg
	}
	return msg
}

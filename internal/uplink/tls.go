package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
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
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load uplink client certificate: %w", err)
	}
	return &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// Explain turns a connection error into a sentence an operator can act on.
func Explain(err error) string {
	if err == nil {
		return ""
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

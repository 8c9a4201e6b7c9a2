package mqtttest

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/devcert"
)

// NATS is a nats-server with its MQTT interface on, mutual TLS required,
// for broker compatibility tests.
type NATS struct {
	Port int
	CA   *devcert.CA
	// CAFile is the CA certificate a client trusts.
	CAFile string
	dir    string
}

// StartNATS starts nats-server (Debian package nats-server) with JetStream
// and an MQTT listener on a free loopback port. It fails the test when the
// server is not installed.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr == nil {
			bin = "/usr/sbin/nats-server"
		} else {
			t.Fatal("nats-server is not installed: run `make deps` (Debian package nats-server)")
		}
	}
	dir := t.TempDir()
	ca, srv := serverPKI(t, "nats test CA")
	n := &NATS{Port: FreePort(t), CA: ca, CAFile: filepath.Join(dir, "ca.pem"), dir: dir}
	must(t, os.WriteFile(n.CAFile, ca.CertPEM, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "server.pem"), srv.CertPEM, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "server.key"), srv.KeyPEM, 0o600))
	conf := fmt.Sprintf(`server_name: mailroomd-test
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
mqtt {
  listen: 127.0.0.1:%d
  tls {
    cert_file: %q
    key_file: %q
    ca_file: %q
    verify: true
    timeout: 5
  }
}
`, FreePort(t), filepath.Join(dir, "js"), n.Port, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), n.CAFile)
	must(t, os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o644))
	logf, err := os.Create(filepath.Join(dir, "nats.log"))
	must(t, err)
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nats.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	waitListening(t, "nats-server", n.Port, 15*time.Second, filepath.Join(dir, "nats.log"))
	return n
}

// URL is the MQTT broker URL.
func (n *NATS) URL() string { return fmt.Sprintf("mqtts://127.0.0.1:%d", n.Port) }

// TLSConfig is a client configuration with a certificate for cn.
func (n *NATS) TLSConfig(t testing.TB, cn string) *tls.Config { return clientTLS(t, n.CA, cn) }

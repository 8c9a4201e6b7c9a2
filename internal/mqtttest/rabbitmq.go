package mqtttest

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/devcert"
)

// RabbitMQ is a rabbitmq-server with the MQTT plugin on a TLS listener
// that requires client certificates, for broker compatibility tests.
type RabbitMQ struct {
	Port int
	CA   *devcert.CA
}

// StartRabbitMQ starts a private RabbitMQ node (Debian package
// rabbitmq-server) with rabbitmq_mqtt. It fails the test when the server is
// not installed.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		t.Fatal("rabbitmq-server is not installed: run `make deps` (Debian package rabbitmq-server)")
	}
	dir := t.TempDir()
	ca, srv := serverPKI(t, "rabbitmq test CA")
	r := &RabbitMQ{Port: FreePort(t), CA: ca}
	for name, b := range map[string][]byte{"ca.pem": ca.CertPEM, "server.pem": srv.CertPEM, "server.key": srv.KeyPEM} {
		must(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	must(t, os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[rabbitmq_mqtt].\n"), 0o644))
	conf := fmt.Sprintf(`listeners.tcp.default = 127.0.0.1:%d
mqtt.listeners.tcp = none
mqtt.listeners.ssl.default = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
mqtt.allow_anonymous = true
loopback_users = none
`, FreePort(t), r.Port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	must(t, os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644))
	logf, err := os.Create(filepath.Join(dir, "rabbitmq.log"))
	must(t, err)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"), "RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		fmt.Sprintf("RABBITMQ_NODENAME=mrtest%d@localhost", r.Port), "RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", FreePort(t)), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, cmd.Start())
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	waitListening(t, "rabbitmq", r.Port, 90*time.Second, filepath.Join(dir, "rabbitmq.log"))
	return r
}

// URL is the MQTT broker URL.
func (r *RabbitMQ) URL() string { return fmt.Sprintf("mqtts://127.0.0.1:%d", r.Port) }

// TLSConfig is a client configuration with a certificate for cn.
func (r *RabbitMQ) TLSConfig(t testing.TB, cn string) *tls.Config { return clientTLS(t, r.CA, cn) }

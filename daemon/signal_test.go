package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/mailroomd/mailroomd/internal/devcert"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// silentBroker accepts mutual-TLS MQTT connections and CONNACKs them, but
// never acknowledges a PUBLISH: in-flight publishes never settle.
func silentBroker(t *testing.T, ca *devcert.CA) string {
	t.Helper()
	srv, err := ca.IssueServer(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				for {
					p, err := packets.ReadPacket(c)
					if err != nil {
						return
					}
					switch p.(type) {
					case *packets.ConnectPacket:
						packets.NewControlPacket(packets.Connack).Write(c)
					case *packets.PingreqPacket:
						packets.NewControlPacket(packets.Pingresp).Write(c)
					}
				}
			}(c)
		}
	}()
	return fmt.Sprintf("mqtts://%s", l.Addr().String())
}

func TestSecondSignalAbortsShutdown(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("silent CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.CertPEM, 0o644)
	cert, key := mqtttest.WriteClient(t, ca, "mr-sig-01")
	url := silentBroker(t, ca)
	cfg := filepath.Join(dir, "mailroomd.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
appliance: {id: mr-sig-01}
storage: {path: %s}
uplink: {brokers: ["%s"], ca_file: %s, cert_file: %s, key_file: %s, shutdown_timeout: 60s}
devices: [{name: sim, kind: scanner, driver: sim, interval: 10ms}]
`, filepath.Join(dir, "buffer.db"), url, caFile, cert, key)), 0o644)

	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "seq=5", 10*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(t, "stopping uplink", 10*time.Second)
	// The uplink now waits up to 60s for PUBACKs that will never come.
	select {
	case <-p.done:
		t.Fatalf("daemon exited before the second signal:\n%s", p.log.String())
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("second signal did not abort the shutdown:\n%s", p.log.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit code %d, want 130", code)
	}
	if !strings.Contains(p.log.String(), "second signal: aborting shutdown") {
		t.Fatalf("abort not logged:\n%s", p.log.String())
	}
	t.Logf("aborted %s after the second signal", time.Since(start).Round(time.Millisecond))
}

func TestDemoConfigIsValid(t *testing.T) {
	// Lay out configs/demo.yaml as in the repository, with certificates
	// generated as `make run` does, and check it.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "configs"), 0o755)
	demo, err := os.ReadFile("../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "configs", "demo.yaml"), demo, 0o644)
	var out strings.Builder
	if code := Main([]string{"dev-certs", "--dir", filepath.Join(root, "var", "demo", "certs")}, &out, &out); code != 0 {
		t.Fatalf("dev-certs: %d %s", code, out.String())
	}
	if code := Main([]string{"check-config", "--config", filepath.Join(root, "configs", "demo.yaml")}, &out, &out); code != 0 {
		t.Fatalf("demo config invalid: %s", out.String())
	}
	fi, err := os.Stat(filepath.Join(root, "var", "demo", "certs", "client.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode: %v %v", fi.Mode(), err)
	}
}

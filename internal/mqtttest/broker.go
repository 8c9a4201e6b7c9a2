// Package mqtttest runs a real mosquitto broker with mutual TLS on a free
// loopback port, and subscribers that record what reached it, for tests.
package mqtttest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/devcert"
)

// Broker is a mosquitto process under test control.
type Broker struct {
	t    testing.TB
	Dir  string
	Port int
	CA   *devcert.CA
	// Files holds the CA and the server certificate the broker uses.
	Files devcert.Files

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// Path finds the mosquitto binary. A missing broker fails the test: it is
// never a reason to skip.
func Path(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("mosquitto not found: run `make deps` (apt-get install mosquitto)")
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start generates a CA and certificates in a temporary directory and starts
// mosquitto with require_certificate and persistence. It is stopped at the
// end of the test.
func Start(t testing.TB) *Broker { return StartWithACL(t, "") }

// StartProduction starts a broker that saves its persistence database as
// mosquitto does by default (every 30 minutes and at exit) rather than
// every second: for benchmarks with many retained bytes, where saving them
// every second would stall the broker.
func StartProduction(t testing.TB) *Broker { return start(t, "", "autosave_interval 1800") }

// StartWithACL starts a broker that enforces the given mosquitto ACL file
// contents (empty: no ACL, everything allowed).
func StartWithACL(t testing.TB, acl string) *Broker { return start(t, acl, "autosave_interval 1") }

func start(t testing.TB, acl, autosave string) *Broker {
	t.Helper()
	dir := t.TempDir()
	ca, srv := serverPKI(t, "test CA")
	b := &Broker{t: t, Dir: dir, Port: FreePort(t), CA: ca, Files: devcert.Files{
		CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server.key"),
	}}
	must(t, os.WriteFile(b.Files.CA, ca.CertPEM, 0o644))
	must(t, os.WriteFile(b.Files.ServerCert, srv.CertPEM, 0o644))
	must(t, os.WriteFile(b.Files.ServerKey, srv.KeyPEM, 0o600))
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", b.Port),
		"cafile " + b.Files.CA,
		"certfile " + b.Files.ServerCert,
		"keyfile " + b.Files.ServerKey,
		"require_certificate true",
		"use_identity_as_username true",
		"use_username_as_clientid true", // as configs/mosquitto.conf
		"tls_version tlsv1.2",
		"persistence true",
		"persistence_location " + dir + "/",
		autosave,
		"max_inflight_messages 0",
		"max_queued_messages 0",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
	}
	if os.Geteuid() == 0 {
		conf = append(conf, "user root")
	}
	if acl != "" {
		aclFile := filepath.Join(dir, "acl")
		must(t, os.WriteFile(aclFile, []byte(acl), 0o644))
		conf = append(conf, "acl_file "+aclFile)
	}
	must(t, os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o644))
	b.Start()
	t.Cleanup(b.Kill)
	return b
}

// serverPKI makes a throwaway CA named name and a server certificate for
// loopback signed by it, valid for a day.
func serverPKI(t testing.TB, name string) (*devcert.CA, devcert.Pair) {
	t.Helper()
	now := time.Now()
	ca, err := devcert.NewCA(name, now, 24*time.Hour)
	must(t, err)
	srv, err := ca.IssueServer(now, 24*time.Hour)
	must(t, err)
	return ca, srv
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// URL is the broker's mqtts:// address.
func (b *Broker) URL() string { return fmt.Sprintf("mqtts://127.0.0.1:%d", b.Port) }

// Start (re)starts the broker process on its port and waits until it
// accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return
	}
	logf, err := os.OpenFile(filepath.Join(b.Dir, "mosquitto.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(b.t, err)
	cmd := exec.Command(Path(b.t), "-c", filepath.Join(b.Dir, "mosquitto.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	must(b.t, cmd.Start())
	b.cmd, b.log = cmd, logf
	waitListening(b.t, "mosquitto", b.Port, 10*time.Second, filepath.Join(b.Dir, "mosquitto.log"))
}

// Stop stops the broker gracefully (SIGTERM), letting it save its
// persistent state.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill stops the broker at once (SIGKILL).
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	b.cmd.Wait()
	b.log.Close()
	b.cmd = nil
}

// SetACL replaces the access list of a broker started with StartWithACL
// and has mosquitto reload it (SIGHUP), as an operator changing the list.
func (b *Broker) SetACL(acl string) {
	b.t.Helper()
	must(b.t, os.WriteFile(filepath.Join(b.Dir, "acl"), []byte(acl), 0o644))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		must(b.t, b.cmd.Process.Signal(syscall.SIGHUP))
	}
}

// Log returns what the broker logged so far.
func (b *Broker) Log() string {
	out, _ := os.ReadFile(filepath.Join(b.Dir, "mosquitto.log"))
	return string(out)
}

// ClientFiles issues a client certificate for cn, signed by the broker's CA,
// and writes cert and key (0600) into a temporary directory.
func (b *Broker) ClientFiles(t testing.TB, cn string) (certFile, keyFile string) {
	return WriteClient(t, b.CA, cn)
}

// WriteClient issues a client certificate for cn from ca and writes it.
func WriteClient(t testing.TB, ca *devcert.CA, cn string) (certFile, keyFile string) {
	t.Helper()
	p, err := ca.IssueClient(cn, time.Now(), 24*time.Hour)
	must(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	must(t, os.WriteFile(certFile, p.CertPEM, 0o644))
	must(t, os.WriteFile(keyFile, p.KeyPEM, 0o600))
	return certFile, keyFile
}

// TLSConfig returns a client TLS configuration trusting the broker's CA with
// a fresh client certificate for cn.
func (b *Broker) TLSConfig(t testing.TB, cn string) *tls.Config { return clientTLS(t, b.CA, cn) }

// clientTLS is a client configuration trusting ca, with a fresh client
// certificate for cn from it.
func clientTLS(t testing.TB, ca *devcert.CA, cn string) *tls.Config {
	t.Helper()
	certFile, keyFile := WriteClient(t, ca, cn)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// waitListening waits until something accepts connections on port, and
// fails the test with the log at logPath otherwise.
func waitListening(t testing.TB, what string, port int, timeout time.Duration, logPath string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s did not start listening on %d: %v\n%s", what, port, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Message is one message a Subscriber received.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Subscriber records every message on a topic filter. With a persistent
// session (clean session off, QoS 1) the broker keeps messages for it while
// it is disconnected, so nothing published during a broker or subscriber
// restart is missed.
type Subscriber struct {
	client mqtt.Client
	mu     sync.Mutex
	msgs   []Message
}

// Subscribe connects a subscriber with a persistent session and subscribes
// to filter at QoS 1. It reconnects by itself after a broker restart.
func (b *Broker) Subscribe(t testing.TB, clientID, filter string) *Subscriber {
	t.Helper()
	s := &Subscriber{}
	opts := mqtt.NewClientOptions().
		AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", b.Port)).
		SetClientID(clientID).
		SetTLSConfig(b.TLSConfig(t, clientID)).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).
		SetKeepAlive(5 * time.Second).
		SetOrderMatters(true)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { s.add(m) })
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.add(m) })
	})
	s.client = mqtt.NewClient(opts)
	tok := s.client.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	// Make sure the subscription is in place before the test goes on.
	st := s.client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.add(m) })
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, st.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s
}

func (s *Subscriber) add(m mqtt.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained()})
	s.mu.Unlock()
}

// Messages returns a copy of what was received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor polls until cond holds for the messages received, or fails the
// test after timeout.
func (s *Subscriber) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Message) bool) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.Messages()
		if cond(msgs) {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%d messages received)", timeout, what, len(msgs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package mqtttest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
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

// ClusterSize is the number of nodes StartNATSCluster runs.
const ClusterSize = 3

// NATSCluster is a cluster of ClusterSize nats-server processes on
// loopback: routes between them, JetStream on each, and an MQTT listener
// with mutual TLS on each whose streams and consumers (sessions, messages,
// retained messages) are replicated to all three nodes. A node can be
// killed and restarted with its JetStream store, as a crashed machine that
// comes back.
type NATSCluster struct {
	CA *devcert.CA
	// CAFile is the CA certificate a client trusts.
	CAFile string

	t     testing.TB
	bin   string
	dir   string
	nodes [ClusterSize]*natsNode
}

// natsNode is one member of a NATSCluster.
type natsNode struct {
	name      string
	mqttPort  int
	httpPort  int
	conf, log string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *os.File
}

// StartNATSCluster starts a 3-node nats-server cluster (Debian package
// nats-server) with JetStream and MQTT over mutual TLS on every node, and
// returns once the cluster has a JetStream meta leader and every node
// acknowledges a QoS 1 publish. It fails the test when nats-server is not
// installed. Every node is killed when the test ends.
func StartNATSCluster(t testing.TB) *NATSCluster {
	t.Helper()
	bin := natsBinary(t)
	dir := t.TempDir()
	ca, srv := serverPKI(t, "nats cluster test CA")
	c := &NATSCluster{CA: ca, CAFile: filepath.Join(dir, "ca.pem"), t: t, bin: bin, dir: dir}
	must(t, os.WriteFile(c.CAFile, ca.CertPEM, 0o644))
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	must(t, os.WriteFile(certFile, srv.CertPEM, 0o644))
	must(t, os.WriteFile(keyFile, srv.KeyPEM, 0o600))
	var routePorts [ClusterSize]int
	var routes []string
	for i := range routePorts {
		routePorts[i] = FreePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i]))
	}
	for i := range c.nodes {
		n := &natsNode{name: fmt.Sprintf("n%d", i), mqttPort: FreePort(t), httpPort: FreePort(t)}
		ndir := filepath.Join(dir, n.name)
		must(t, os.MkdirAll(ndir, 0o700))
		n.conf, n.log = filepath.Join(ndir, "nats.conf"), filepath.Join(ndir, "nats.log")
		// Replicas 3 for the MQTT streams and consumers: a session, a
		// retained message or a stored QoS 1 message survives the loss
		// of any one node.
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: mailroomd-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
mqtt {
  listen: 127.0.0.1:%d
  stream_replicas: 3
  consumer_replicas: 3
  tls {
    cert_file: %q
    key_file: %q
    ca_file: %q
    verify: true
    timeout: 5
  }
}
`, n.name, FreePort(t), n.httpPort, filepath.Join(ndir, "js"), routePorts[i], strings.Join(routes, ", "),
			n.mqttPort, certFile, keyFile, c.CAFile)
		must(t, os.WriteFile(n.conf, []byte(conf), 0o644))
		c.nodes[i] = n
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Kill(i)
		}
	})
	for i := range c.nodes {
		c.launch(i)
	}
	for i := range c.nodes {
		c.waitReady(i, 60*time.Second)
	}
	c.WaitHealthy(time.Minute)
	return c
}

// natsBinary finds nats-server; a missing server fails the test.
func natsBinary(t testing.TB) string {
	t.Helper()
	if bin, err := exec.LookPath("nats-server"); err == nil {
		return bin
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	t.Fatal("nats-server is not installed: run `make deps` (Debian package nats-server)")
	return ""
}

// launch starts node i's process and waits until its MQTT port listens.
func (c *NATSCluster) launch(i int) {
	c.t.Helper()
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return
	}
	out, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(c.t, err)
	cmd := exec.Command(c.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = out, out
	must(c.t, cmd.Start())
	n.cmd, n.out = cmd, out
	waitListening(c.t, "nats-server "+n.name, n.mqttPort, 30*time.Second, n.log)
}

// Kill stops node i at once (SIGKILL), as a machine that loses power. It
// does nothing to a node that is not running.
func (c *NATSCluster) Kill(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
	n.out.Close()
	n.cmd = nil
}

// Restart starts a killed node i again on the same ports and JetStream
// store, and waits until it knows the meta leader and takes a QoS 1
// publish over MQTT. Its replicas may still be catching up: WaitHealthy
// waits for that, so that the next node lost is a single failure again.
func (c *NATSCluster) Restart(i int) {
	c.t.Helper()
	c.launch(i)
	c.waitReady(i, 60*time.Second)
}

// Healthy reports whether node i answers its health check (/healthz)
// with 200: for a clustered JetStream server, its meta group and every
// stream and consumer replica it holds are current.
func (c *NATSCluster) Healthy(i int) bool {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.nodes[i].httpPort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitHealthy waits until every running node is Healthy, and fails the
// test after timeout.
func (c *NATSCluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sick := -1
		for i := range c.nodes {
			if c.Running(i) && !c.Healthy(i) {
				sick = i
				break
			}
		}
		if sick < 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats cluster node %s not healthy after %s\n%s", c.nodes[sick].name, timeout, c.Log(sick))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Running reports whether node i's process is running.
func (c *NATSCluster) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// URL is node i's MQTT broker URL.
func (c *NATSCluster) URL(i int) string {
	return fmt.Sprintf("mqtts://127.0.0.1:%d", c.nodes[i].mqttPort)
}

// URLs are the MQTT broker URLs of every node, in node order.
func (c *NATSCluster) URLs() []string {
	out := make([]string, len(c.nodes))
	for i := range c.nodes {
		out[i] = c.URL(i)
	}
	return out
}

// Node returns the index of the node whose MQTT URL is url, or -1.
func (c *NATSCluster) Node(url string) int {
	for i := range c.nodes {
		if c.URL(i) == url {
			return i
		}
	}
	return -1
}

// TLSConfig is a client configuration with a certificate for cn.
func (c *NATSCluster) TLSConfig(t testing.TB, cn string) *tls.Config {
	return clientTLS(t, c.CA, cn)
}

// Log returns what node i logged so far.
func (c *NATSCluster) Log(i int) string {
	b, _ := os.ReadFile(c.nodes[i].log)
	return string(b)
}

// MetaLeader asks node i which node leads the JetStream meta group; ""
// when it does not know (no leader elected, or the node is down).
func (c *NATSCluster) MetaLeader(i int) string {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", c.nodes[i].httpPort))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var jsz struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil || jsz.Meta == nil {
		return ""
	}
	return jsz.Meta.Leader
}

// waitReady waits until node i knows the JetStream meta leader and takes
// a QoS 1 publish over MQTT (its first MQTT connect also creates the
// replicated MQTT streams), and fails the test with the node's log after
// timeout.
func (c *NATSCluster) waitReady(i int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if c.MetaLeader(i) == "" {
			last = fmt.Errorf("no JetStream meta leader known to %s", c.nodes[i].name)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if last = c.probe(i, min(time.Until(deadline), 15*time.Second)); last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("nats cluster node %s not ready after %s: %v\n%s", c.nodes[i].name, timeout, last, c.Log(i))
}

// probe connects to node i, publishes one QoS 1 message and waits for its
// PUBACK.
func (c *NATSCluster) probe(i int, timeout time.Duration) error {
	id := "probe-" + c.nodes[i].name
	o := mqtt.NewClientOptions().AddBroker(c.URL(i)).SetClientID(id).SetTLSConfig(c.TLSConfig(c.t, id)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(timeout).SetProtocolVersion(4)
	cl := mqtt.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("probe connect %s: no CONNACK within %s", c.nodes[i].name, timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("probe connect %s: %w", c.nodes[i].name, err)
	}
	defer cl.Disconnect(100)
	pt := cl.Publish("mailroomd-test/probe", 1, false, []byte("probe"))
	if !pt.WaitTimeout(timeout) {
		return fmt.Errorf("probe publish %s: no PUBACK within %s", c.nodes[i].name, timeout)
	}
	if err := pt.Error(); err != nil {
		return fmt.Errorf("probe publish %s: %w", c.nodes[i].name, err)
	}
	return nil
}

// RSS is node i's resident memory in bytes (VmRSS, Linux), 0 when the
// node is not running or the figure cannot be read.
func (c *NATSCluster) RSS(i int) int64 {
	n := c.nodes[i]
	n.mu.Lock()
	if n.cmd == nil {
		n.mu.Unlock()
		return 0
	}
	pid := n.cmd.Process.Pid
	n.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return 0
}

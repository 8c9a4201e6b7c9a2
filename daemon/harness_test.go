package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// binary is the mailroomd binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailroomd-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mailroomd")
	args := []string{"build", "-o", binary}
	if os.Getenv("MAILROOMD_RACE") != "" {
		args = append(args, "-race") // the binary itself under the race detector
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mailroomd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a log sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gapless fails the test unless the delivered events' seqs run from 1 to
// the highest without a hole.
func gapless(t testing.TB, bySeq map[int64]event.Event) {
	t.Helper()
	var last int64
	for seq := range bySeq {
		last = max(last, seq)
	}
	for seq := int64(1); seq <= last; seq++ {
		if _, ok := bySeq[seq]; !ok {
			t.Fatalf("seq %d missing of %d", seq, last)
		}
	}
}

// proc is one run of the real binary.
type proc struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error
}

func startDaemon(t testing.TB, cfgPath string, extraEnv ...string) *proc {
	t.Helper()
	p := &proc{log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, "run", "--config", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), extraEnv...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
			t.Error("the race detector found a data race in the daemon")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.log.String())
		}
	})
	return p
}

// waitLog waits until the daemon's log contains s.
func (p *proc) waitLog(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.log.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("daemon exited (%v) before logging %q:\n%s", p.err, s, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not log %q within %s:\n%s", s, timeout, p.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop on SIGTERM:\n%s", p.log.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// setup holds what a daemon test needs around the binary.
type setup struct {
	dir    string
	broker *mqtttest.Broker
	id     string
	cert   string
	key    string
	ca     string
}

func newSetup(t testing.TB, id string) *setup {
	b := mqtttest.Start(t)
	cert, key := b.ClientFiles(t, id)
	return &setup{dir: t.TempDir(), broker: b, id: id, cert: cert, key: key, ca: b.Files.CA}
}

// config writes a configuration file with the given devices section.
func (s *setup) config(t testing.TB, brokerURL, devices string) string {
	t.Helper()
	path := filepath.Join(s.dir, "mailroomd.yaml")
	if err := os.WriteFile(path, []byte(s.configText(brokerURL, devices)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// configText is the configuration config writes.
func (s *setup) configText(brokerURL, devices string) string {
	return fmt.Sprintf(`version: 1
appliance: {id: %s, site: test-site}
storage: {path: %s, retain_sent: 720h}
uplink:
  brokers: [%s]
  ca_file: %s
  cert_file: %s
  key_file: %s
  reconnect_min: 50ms
  reconnect_max: 300ms
  keepalive: 2s
  connect_timeout: 2s
devices:
%s
log: {level: info}
`, s.id, filepath.Join(s.dir, "buffer.db"), brokerURL, s.ca, s.cert, s.key, devices)
}

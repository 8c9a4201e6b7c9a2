package main

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// binary is the mailroomd binary under test: built once by TestMain, or
// the one MAILROOMD_TEST_BINARY names (a cross-compiled one, for example).
// startDaemon runs it through binaryExec; the few tests that run it
// otherwise (web_test.go's passwd, update_test.go) need the host's build.
var binary string

// binaryExec is the command line that runs binary, from
// MAILROOMD_TEST_EXEC split at spaces (for example "qemu-aarch64-static -L
// /usr/aarch64-linux-gnu"); empty, binary runs by itself.
var binaryExec []string

// timeScale multiplies the timeouts of the tests that run a given binary
// under emulation (MAILROOMD_TEST_TIME_SCALE, a whole number; 1 unless set).
var timeScale = 1

func TestMain(m *testing.M) {
	if err := selectBinary(); err != nil {
		fmt.Fprintf(os.Stderr, "mailroomd binary under test: %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "mailroomd-bin")
	if err != nil {
		panic(err)
	}
	if binary == "" {
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
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// selectBinary takes the binary under test, the command that runs it and
// the time scale from MAILROOMD_TEST_BINARY, MAILROOMD_TEST_EXEC and
// MAILROOMD_TEST_TIME_SCALE. A given binary must run `version` through
// binaryExec, and with MAILROOMD_TEST_GOARCH set its build information
// must name that architecture, so that a run meant for an emulated build
// cannot test the host's instead; the line it prints names both.
func selectBinary() error {
	binaryExec = strings.Fields(os.Getenv("MAILROOMD_TEST_EXEC"))
	if s := os.Getenv("MAILROOMD_TEST_TIME_SCALE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("MAILROOMD_TEST_TIME_SCALE=%q: want a whole number of at least 1", s)
		}
		timeScale = n
	}
	given := os.Getenv("MAILROOMD_TEST_BINARY")
	if given == "" {
		if len(binaryExec) > 0 || os.Getenv("MAILROOMD_TEST_GOARCH") != "" {
			return errors.New("MAILROOMD_TEST_EXEC and MAILROOMD_TEST_GOARCH need MAILROOMD_TEST_BINARY")
		}
		return nil
	}
	if os.Getenv("MAILROOMD_RACE") != "" {
		return errors.New("MAILROOMD_RACE builds the binary; it cannot be combined with MAILROOMD_TEST_BINARY")
	}
	abs, err := filepath.Abs(given)
	if err != nil {
		return fmt.Errorf("MAILROOMD_TEST_BINARY: %w", err)
	}
	binary = abs
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("read the build information of %s: %w", binary, err)
	}
	var arch string
	for _, s := range info.Settings {
		if s.Key == "GOARCH" {
			arch = s.Value
		}
	}
	if want := os.Getenv("MAILROOMD_TEST_GOARCH"); want != "" && arch != want {
		return fmt.Errorf("%s is built for GOARCH %q, want %q", binary, arch, want)
	}
	out, err := binaryCommand("version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(binaryCommand("version").Args, " "), err, out)
	}
	fmt.Printf("binary under test: %s, GOARCH %s, run by %q: %s", binary, arch, strings.Join(binaryExec, " "), out)
	return nil
}

// binaryCommand is a command that runs the binary under test with args,
// through binaryExec when it is set.
func binaryCommand(args ...string) *exec.Cmd {
	argv := append(append(slices.Clone(binaryExec), binary), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// scaled is d times timeScale: a timeout long enough for the binary under
// test, emulated or not.
func scaled(d time.Duration) time.Duration {
	return d * time.Duration(timeScale)
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
	p.cmd = binaryCommand("run", "--config", cfgPath)
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

// Package serialtest plays a serial device (a scanner, a scale) on the
// master side of a real pseudo-terminal pair, so the driver under test opens
// an actual tty. The device is reachable through a stable symlink, like a
// /dev/serial/by-id link, that Replug points at a fresh tty.
package serialtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Scanner is a fake serial device behind a PTY.
type Scanner struct {
	t      testing.TB
	Link   string // the stable path to configure
	mu     sync.Mutex
	master *os.File
	Term   []byte
}

// New creates a PTY and a symlink to its slave at link.
func New(t testing.TB, link string) *Scanner {
	t.Helper()
	s := &Scanner{t: t, Link: link, Term: []byte{'\r'}}
	s.Replug()
	t.Cleanup(s.Unplug)
	return s
}

// Replug attaches a new tty behind the link, as when a scanner is plugged in
// again and gets a new device node.
func (s *Scanner) Replug() {
	s.t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		s.t.Fatalf("open pty: %v", err)
	}
	name := slave.Name()
	// The driver opens the slave by name; the test keeps only the master.
	slave.Close()
	tmp := s.Link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(name, tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Clean(s.Link)); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	if s.master != nil {
		s.master.Close()
	}
	s.master = master
	s.mu.Unlock()
}

// Unplug closes the master side: the driver's reads fail as on a real unplug.
func (s *Scanner) Unplug() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master != nil {
		s.master.Close()
		s.master = nil
	}
}

// Write sends raw bytes, exactly as given.
func (s *Scanner) Write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master == nil {
		return fmt.Errorf("scanner unplugged")
	}
	_, err := s.master.Write(b)
	return err
}

// Read reads what the driver sent to the device. It fails once the device
// is unplugged.
func (s *Scanner) Read(p []byte) (int, error) {
	s.mu.Lock()
	m := s.master
	s.mu.Unlock()
	if m == nil {
		return 0, fmt.Errorf("device unplugged")
	}
	return m.Read(p)
}

// Master returns the current master side, to read from it while the lock is
// not held; it is nil while unplugged.
func (s *Scanner) Master() *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master
}

// Scan sends code followed by the terminator.
func (s *Scanner) Scan(code string) error {
	return s.Write(append([]byte(code), s.Term...))
}

// Answer plays a polled device until stop is closed: whenever the driver
// sends bytes, reply is called with them and what it returns is written
// back in two halves, as slow devices split their frames. An empty reply is
// silence. Reads fail with EIO while no one has the slave open and after an
// unplug; Answer then waits and tries again, so it follows Replug.
func (s *Scanner) Answer(stop <-chan struct{}, reply func(req []byte) []byte) {
	buf := make([]byte, 256)
	for {
		select {
		case <-stop:
			return
		default:
		}
		m := s.Master()
		if m == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		n, err := m.Read(buf)
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if r := reply(buf[:n]); len(r) > 0 {
			m.Write(r[:len(r)/2])
			time.Sleep(2 * time.Millisecond)
			m.Write(r[len(r)/2:])
		}
	}
}

// Next returns the next reading a driver sends on out, failing the test
// when none comes within five seconds.
func Next[R any](t testing.TB, out <-chan R) R {
	t.Helper()
	select {
	case r := <-out:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no reading")
	}
	var zero R
	return zero
}

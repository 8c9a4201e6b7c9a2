package serialline_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial"
	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/scanner/serialline"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// states records the device condition as the driver reports it.
type states struct {
	mu      sync.Mutex
	up      bool
	changes chan bool
}

func (s *states) Set(string, health.Severity, string) { s.set(false) }
func (s *states) Clear(string)                        { s.set(true) }
func (s *states) set(up bool) {
	s.mu.Lock()
	changed := s.up != up
	s.up = up
	s.mu.Unlock()
	if changed {
		s.changes <- up
	}
}

func (s *states) wait(t *testing.T, up bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case v := <-s.changes:
			if v == up {
				return
			}
		case <-timeout:
			t.Fatalf("device never became up=%v", up)
		}
	}
}

func TestPTYScanUnplugReplug(t *testing.T) {
	link := filepath.Join(t.TempDir(), "scanner")
	fake := serialtest.New(t, link)
	st := &states{changes: make(chan bool, 16)}
	d := serialline.New(serialline.Config{
		Name: "dock", Port: link,
		Mode:       serial.Mode{BaudRate: 9600, DataBits: 7, Parity: serial.EvenParity, StopBits: serial.OneStopBit},
		Terminator: []byte("\r\n"), Prefix: []byte("]C1"), MaxLength: 24, Control: serialline.StripControl,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
	}, nil, nil, nil, st)
	fake.Term = []byte("\r\n")
	out := make(chan scanner.Reading, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, scanner.ToChannel(out)) }()
	st.wait(t, true)

	fake.Scan("]C11Z999AA10123456784")
	if r := serialtest.Next(t, out); string(r.Barcode) != "1Z999AA10123456784" || r.Device != "dock" {
		t.Fatalf("reading = %q from %q", r.Barcode, r.Device)
	}
	// Garbage and an oversize line are dropped; the next code still arrives.
	fake.Write([]byte("\x00\x01\r\n" + "X123456789012345678901234567890\r\n"))
	fake.Scan("9400111899223197428490")
	if r := serialtest.Next(t, out); string(r.Barcode) != "9400111899223197428490" {
		t.Fatalf("after garbage: %q", r.Barcode)
	}

	// Unplug: the driver notices; replug behind the same path: it reconnects.
	fake.Unplug()
	st.wait(t, false)
	fake.Replug()
	st.wait(t, true)
	fake.Scan("JJD0099999999")
	if r := serialtest.Next(t, out); string(r.Barcode) != "JJD0099999999" {
		t.Fatalf("after replug: %q", r.Barcode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v on cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("driver did not stop on cancel (blocked read?)")
	}
}

func TestMissingPortRetries(t *testing.T) {
	link := filepath.Join(t.TempDir(), "absent")
	st := &states{changes: make(chan bool, 16), up: true}
	d := serialline.New(serialline.Config{Name: "x", Port: link, Mode: serial.Mode{BaudRate: 9600},
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}, nil, nil, nil, st)
	out := make(chan scanner.Reading, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, scanner.ToChannel(out)) }()
	st.wait(t, false)
	// Plugging it in later is picked up without a restart.
	fake := serialtest.New(t, link)
	st.wait(t, true)
	fake.Scan("LATE")
	if r := serialtest.Next(t, out); string(r.Barcode) != "LATE" {
		t.Fatalf("reading = %q", r.Barcode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

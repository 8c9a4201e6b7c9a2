package serialscale_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial"
	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scale/serialscale"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// conditions records active health conditions.
type conditions struct {
	mu     sync.Mutex
	active map[string]string
}

func (c *conditions) Set(k string, _ health.Severity, msg string) {
	c.mu.Lock()
	c.active[k] = msg
	c.mu.Unlock()
}
func (c *conditions) Clear(k string) { c.mu.Lock(); delete(c.active, k); c.mu.Unlock() }
func (c *conditions) has(k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.active[k]
	return ok
}

// fakeNCI answers "W\r" with the current reply, or stays silent when the
// reply is empty.
type fakeNCI struct {
	stop  chan struct{}
	dev   *serialtest.Scanner
	mu    sync.Mutex
	reply string
}

func (f *fakeNCI) set(reply string) { f.mu.Lock(); f.reply = reply; f.mu.Unlock() }

func (f *fakeNCI) serve() {
	f.dev.Answer(f.stop, func(req []byte) []byte {
		if !strings.Contains(string(req), "W\r") {
			return nil
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return []byte(f.reply)
	})
}

func TestNCIScaleOnPTY(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyScale")
	dev := serialtest.New(t, link)
	fake := &fakeNCI{dev: dev, reply: "\n0002.50LB\r\n00\r\x03", stop: make(chan struct{})}
	go fake.serve()
	defer close(fake.stop)
	conds := &conditions{active: map[string]string{}}
	d := serialscale.New(serialscale.Config{
		Name: "dock-scale", Port: link, Protocol: serialscale.NCI{},
		Mode: serial.Mode{BaudRate: 9600, DataBits: 7, Parity: serial.EvenParity, StopBits: serial.OneStopBit},
		Poll: 20 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
	}, nil, nil, nil, conds)
	out := make(chan scale.Reading, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()

	if r := serialtest.Next(t, out); r.Value != 2.5 || r.Unit != scale.Pound || !r.Stable || r.Device != "dock-scale" {
		t.Fatalf("first reading %+v", r)
	}
	fake.set("\n0003.10LB\r\n10\r\x03")
	if r := serialtest.Next(t, out); r.Status != scale.StatusMotion || r.Stable {
		t.Fatalf("motion reading %+v", r)
	}
	// Silence is reported, not waited on; answering again clears it.
	fake.set("")
	waitfor.True(t, 10*time.Second, "not answering", func() bool { return conds.has(serialscale.SilentKey("dock-scale")) })
	fake.set("\n0001.00KG\r\n00\r\x03")
	if r := serialtest.Next(t, out); r.Value != 1 || r.Unit != scale.Kilogram {
		t.Fatalf("after silence %+v", r)
	}
	waitfor.True(t, 10*time.Second, "answering again", func() bool { return !conds.has(serialscale.SilentKey("dock-scale")) })

	// Unplug and replug behind the same path.
	dev.Unplug()
	waitfor.True(t, 10*time.Second, "disconnected", func() bool { return conds.has(serialscale.DisconnectedKey("dock-scale")) })
	fake.set("\n0004.00LB\r\n00\r\x03")
	dev.Replug()
	if r := serialtest.Next(t, out); r.Value != 4 || r.Unit != scale.Pound {
		t.Fatalf("after replug %+v", r)
	}
	waitfor.True(t, 10*time.Second, "reconnected", func() bool { return !conds.has(serialscale.DisconnectedKey("dock-scale")) })

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dev.Unplug()
}

func TestContinuousScaleOnPTY(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyScale")
	dev := serialtest.New(t, link)
	d := serialscale.New(serialscale.Config{Name: "stream", Port: link, Protocol: serialscale.Continuous{},
		Mode: serial.Mode{BaudRate: 9600}, ReadTimeout: time.Second}, nil, nil, nil, nil)
	out := make(chan scale.Reading, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()
	time.Sleep(100 * time.Millisecond) // let the driver open the port
	dev.Write([]byte("US,GS,+  1.230 kg\r\nnoise\x00\r\nST,GS,+  1.234 kg\r\nST,GS,+  1.234 kg\r\n"))
	if r := serialtest.Next(t, out); r.Status != scale.StatusMotion {
		t.Fatalf("first %+v", r)
	}
	if r := serialtest.Next(t, out); r.Value != 1.234 || !r.Stable {
		t.Fatalf("second %+v", r)
	}
	select {
	case r := <-out:
		t.Fatalf("an unchanged frame was sent again: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestScaleKeepsParsingAfterManyFrames runs hundreds of split frames through
// the driver: the receive buffer must not shrink until frames are cut.
func TestScaleKeepsParsingAfterManyFrames(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyScale")
	dev := serialtest.New(t, link)
	stop := make(chan struct{})
	defer close(stop)
	var mu sync.Mutex
	n := 0
	go dev.Answer(stop, func(req []byte) []byte {
		if !strings.Contains(string(req), "W\r") {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		n++
		return []byte(fmt.Sprintf("\n%07.2fLB\r\n00\r\x03", float64(n)))
	})
	d := serialscale.New(serialscale.Config{
		Name: "dock-scale", Port: link, Protocol: serialscale.NCI{},
		Mode: serial.Mode{BaudRate: 9600, DataBits: 7, Parity: serial.EvenParity, StopBits: serial.OneStopBit},
		Poll: 2 * time.Millisecond, ReadTimeout: time.Second, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
	}, nil, nil, nil, nil)
	out := make(chan scale.Reading, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()
	prev := 0.0
	for i := 0; i < 300; i++ {
		r := serialtest.Next(t, out)
		if r.Value <= prev || !r.Stable {
			t.Fatalf("reading %d = %+v after %g", i, r, prev)
		}
		prev = r.Value
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dev.Unplug()
}

// stuckPort is a serial port whose writes block, as when flow control
// holds it, until released; closing it does not wake them, as with a real
// tty.
type stuckPort struct {
	serial.Port
	release chan struct{}
}

func (p *stuckPort) SetReadTimeout(time.Duration) error { return nil }
func (p *stuckPort) Write(b []byte) (int, error)        { <-p.release; return len(b), nil }
func (p *stuckPort) Read([]byte) (int, error)           { time.Sleep(10 * time.Millisecond); return 0, nil }
func (p *stuckPort) Close() error                       { return nil }

// TestBlockedPollWriteDoesNotHangTheStop: a poll request that the port
// never takes does not keep Run from returning when it is cancelled.
func TestBlockedPollWriteDoesNotHangTheStop(t *testing.T) {
	port := &stuckPort{release: make(chan struct{})}
	defer close(port.release) // let the abandoned write finish (goleak)
	open := func(string, *serial.Mode) (serial.Port, error) { return port, nil }
	proto, _ := serialscale.ByName("nci", "")
	d := serialscale.New(serialscale.Config{Name: "dock-scale", Port: "/dev/ttyFAKE", Protocol: proto, Poll: 50 * time.Millisecond,
		ReadTimeout: 5 * time.Second, ReconnectMax: time.Second}, open, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, make(chan scale.Reading, 16)) }()
	time.Sleep(100 * time.Millisecond) // the first poll request is blocked by now
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of its cancel while a write was blocked")
	}
}

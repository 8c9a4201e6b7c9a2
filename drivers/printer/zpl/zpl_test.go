package zpl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.bug.st/serial"
	"golang.org/x/term"

	"github.com/mailroomd/mailroomd/drivers/printer"
	"github.com/mailroomd/mailroomd/drivers/printer/zpl/zpltest"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func nextStatus(t *testing.T, out <-chan printer.Reading, want func(printer.Status) bool) printer.Status {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-out:
			if want(r.Status) {
				return r.Status
			}
		case <-timeout:
			t.Fatal("status never reached")
		}
	}
}

func TestEscapeBlocksInjection(t *testing.T) {
	evil := "1Z999^XZ^XA^FDpwned~JR_\x1d"
	got := Escape(evil)
	if strings.ContainsAny(got, "^~\x1d") || got != "1Z999_5EXZ_5EXA_5EFDpwned_7EJR_5F_1D" {
		t.Fatalf("Escape = %q", got)
	}
}

func TestParseHostStatus(t *testing.T) {
	ans := []byte("\x02030,1,1,1245,000,1,0,0,000,0,0,0\x03\r\n\x02000,0,1,1,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n")
	s, complete, err := ParseHostStatus(ans)
	if err != nil || !complete || !s.PaperOut || !s.Paused || !s.BufferFull || !s.HeadOpen || !s.RibbonOut {
		t.Fatalf("%+v %v %v", s, complete, err)
	}
	if _, complete, _ := ParseHostStatus(ans[:40]); complete {
		t.Fatal("a partial answer reported complete")
	}
	if _, _, err := ParseHostStatus([]byte("\x02x\x03\x02y\x03\x02z\x03")); err == nil {
		t.Fatal("malformed answer accepted")
	}
}

func FuzzParseHostStatus(f *testing.F) {
	f.Add([]byte("\x02030,1,1,1245,000,1,0,0,000,0,0,0\x03\r\n\x02000,0,1,1,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseHostStatus(b) })
}

func TestPrinterOverTCP(t *testing.T) {
	fake := zpltest.Start(t)
	p := New(Config{Name: "dock-printer", Where: fake.Addr(), Dial: DialTCP(fake.Addr(), time.Second),
		Poll: 50 * time.Millisecond, Timeout: 200 * time.Millisecond, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	out := make(chan printer.Reading, 32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, out) }()

	nextStatus(t, out, func(s printer.Status) bool { return s.OK() })
	labels := []string{
		string(Label(Field(50, 40, 40, "Müller, Raum 3.14"), Code128(50, 100, 100, "1Z999AA10123456784"))),
		string(Label(Field(50, 40, 40, "evil ^XZ^XA~JR"))),
		string(Label(Field(50, 40, 40, "third"))),
	}
	for _, l := range labels {
		p.Submit([]byte(l), nil)
	}
	waitfor.True(t, 10*time.Second, "3 labels", func() bool { return len(fake.Labels()) == 3 })
	for i, got := range fake.Labels() {
		if got+"\n" != labels[i] {
			t.Fatalf("label %d arrived as %q, want %q", i, got, labels[i])
		}
	}

	fake.SetPaperOut(true)
	if s := nextStatus(t, out, func(s printer.Status) bool { return s.PaperOut }); s.String() != "paper out" {
		t.Fatalf("status %q", s)
	}
	fake.SetPaperOut(false)
	fake.SetSilent(true)
	nextStatus(t, out, func(s printer.Status) bool { return s.Silent })

	// The connection drops; a job submitted meanwhile is printed once after
	// the reconnect.
	fake.SetSilent(false)
	fake.DropAll()
	var sentCalls atomic.Int32
	p.Submit(Label(Field(0, 0, 30, "after reconnect")), func() { sentCalls.Add(1) })
	waitfor.True(t, 10*time.Second, "the 4th label", func() bool { return len(fake.Labels()) >= 4 })
	// A fifth job is printed after any duplicate of the fourth would be.
	p.Submit(Label(Field(0, 0, 30, "marker")), nil)
	waitfor.True(t, 10*time.Second, "the marker label", func() bool {
		l := fake.Labels()
		return len(l) > 0 && strings.Contains(l[len(l)-1], "marker")
	})
	if n := len(fake.Labels()); n != 5 {
		t.Fatalf("%d labels printed, want 5 (no duplicate of the fourth)", n)
	}
	if n := sentCalls.Load(); n != 1 {
		t.Fatalf("sent callback called %d times, want 1", n)
	}
	if p.Queued() != 0 {
		t.Fatalf("%d jobs still queued", p.Queued())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// ptyPrinter plays a ZPL printer on a PTY master: it collects formats and
// answers ~HS, like a printer on a serial port or a USB printer device.
type ptyPrinter struct {
	mu     sync.Mutex
	buf    []byte
	labels []string
	paper  bool
}

func (f *ptyPrinter) reply(req []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, req...)
	var out []byte
	for {
		hs := bytes.Index(f.buf, []byte("~HS"))
		xa := bytes.Index(f.buf, []byte("^XA"))
		xz := bytes.Index(f.buf, []byte("^XZ"))
		switch {
		case hs >= 0 && (xa < 0 || hs < xa):
			f.buf = append(f.buf[:hs], f.buf[hs+3:]...)
			paper := 0
			if f.paper {
				paper = 1
			}
			out = append(out, fmt.Sprintf("\x02030,%d,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02000,0,0,0,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n", paper)...)
		case xa >= 0 && xz > xa:
			f.labels = append(f.labels, string(f.buf[xa:xz+3]))
			f.buf = f.buf[xz+3:]
		default:
			return out
		}
	}
}

func (f *ptyPrinter) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.labels...)
}

func TestPrinterOverSerialAndDevice(t *testing.T) {
	for _, transport := range []string{"serial", "device"} {
		t.Run(transport, func(t *testing.T) {
			link := filepath.Join(t.TempDir(), "ttyPrinter")
			dev := serialtest.New(t, link)
			fake := &ptyPrinter{}
			stop := make(chan struct{})
			go dev.Answer(stop, fake.reply)
			defer close(stop)
			dial := DialSerial(link, &serial.Mode{BaudRate: 9600}, nil)
			if transport == "device" {
				// A raw-mode tty stands in for /dev/usb/lp0: a character
				// device that is written, read and polled.
				target, _ := os.Readlink(link)
				f, err := os.OpenFile(target, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := term.MakeRaw(int(f.Fd())); err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				dial = DialDevice(target)
			}
			p := New(Config{Name: "desk-printer", Where: transport, Dial: dial, Poll: 50 * time.Millisecond,
				Timeout: 300 * time.Millisecond, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
			out := make(chan printer.Reading, 32)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx, out) }()
			nextStatus(t, out, func(s printer.Status) bool { return s.OK() })
			label := string(Label(Field(10, 10, 30, "über serial ^XZ")))
			var sent atomic.Int32
			p.Submit([]byte(label), func() { sent.Add(1) })
			waitfor.True(t, 10*time.Second, "the label", func() bool { return len(fake.got()) == 1 })
			if got := fake.got()[0] + "\n"; got != label {
				t.Fatalf("label arrived as %q", got)
			}
			fake.mu.Lock()
			fake.paper = true
			fake.mu.Unlock()
			nextStatus(t, out, func(s printer.Status) bool { return s.PaperOut })
			if sent.Load() != 1 {
				t.Fatalf("sent callback %d times", sent.Load())
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestJobsWaitWhileThePrinterCannotPrint: a job submitted while the printer
// reports paper out is not sent (a power cycle to fix the paper would lose
// it); it is sent, and only then reported sent, once the printer is ready.
func TestJobsWaitWhileThePrinterCannotPrint(t *testing.T) {
	fake := zpltest.Start(t)
	fake.SetPaperOut(true)
	p := New(Config{Name: "dock-printer", Dial: DialTCP(fake.Addr(), time.Second), Poll: 50 * time.Millisecond,
		Timeout: time.Second, ReconnectMax: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan printer.Reading, 16)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, out) }()
	defer func() { cancel(); <-done }()
	nextStatus(t, out, func(s printer.Status) bool { return s.PaperOut })
	var sent atomic.Int32
	p.Submit(Label(Field(0, 0, 30, "waits for paper")), func() { sent.Add(1) })
	// Five more status polls with the paper out: the job stays queued.
	polls := fake.Queries()
	waitfor.True(t, 10*time.Second, "five more status polls", func() bool { return fake.Queries() >= polls+5 })
	if n := len(fake.Labels()); n != 0 || sent.Load() != 0 || p.Queued() != 1 {
		t.Fatalf("with the paper out: %d labels printed, sent called %d times, %d queued; want 0, 0, 1", n, sent.Load(), p.Queued())
	}
	fake.SetPaperOut(false)
	waitfor.True(t, 10*time.Second, "the job printed once the paper is back", func() bool { return len(fake.Labels()) == 1 })
	waitfor.True(t, 10*time.Second, "sent reported", func() bool { return sent.Load() == 1 && p.Queued() == 0 })
}

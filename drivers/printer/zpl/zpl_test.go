package zpl

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer"
)

// fakePrinter is a ZPL printer on loopback: it collects complete formats and
// answers ~HS with its current flags, or not at all when silent.
type fakePrinter struct {
	l        net.Listener
	mu       sync.Mutex
	labels   []string
	paperOut bool
	headOpen bool
	silent   bool
	conns    []net.Conn
}

func startFake(t *testing.T) *fakePrinter {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePrinter{l: l}
	t.Cleanup(func() { l.Close(); f.dropAll() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakePrinter) serve(c net.Conn) {
	var buf []byte
	rd := make([]byte, 512)
	for {
		n, err := c.Read(rd)
		if err != nil {
			return
		}
		buf = append(buf, rd[:n]...)
		for {
			if i := bytes.Index(buf, []byte("~HS")); i >= 0 && (bytes.Index(buf, []byte("^XA")) < 0 || i < bytes.Index(buf, []byte("^XA"))) {
				buf = append(buf[:i], buf[i+3:]...)
				f.mu.Lock()
				silent, paper, head := f.silent, f.paperOut, f.headOpen
				f.mu.Unlock()
				if !silent {
					b := func(v bool) int {
						if v {
							return 1
						}
						return 0
					}
					fmt.Fprintf(c, "\x02030,%d,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02000,0,%d,0,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n", b(paper), b(head))
				}
				continue
			}
			s := bytes.Index(buf, []byte("^XA"))
			e := bytes.Index(buf, []byte("^XZ"))
			if s < 0 || e < s {
				break
			}
			f.mu.Lock()
			f.labels = append(f.labels, string(buf[s:e+3]))
			f.mu.Unlock()
			buf = buf[e+3:]
		}
	}
}

func (f *fakePrinter) dropAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *fakePrinter) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.labels...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

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
	fake := startFake(t)
	p := New(Config{Name: "dock-printer", Where: fake.l.Addr().String(), Dial: DialTCP(fake.l.Addr().String(), time.Second),
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
		p.Submit([]byte(l))
	}
	waitFor(t, "3 labels", func() bool { return len(fake.got()) == 3 })
	for i, got := range fake.got() {
		if got+"\n" != labels[i] {
			t.Fatalf("label %d arrived as %q, want %q", i, got, labels[i])
		}
	}

	fake.mu.Lock()
	fake.paperOut = true
	fake.mu.Unlock()
	if s := nextStatus(t, out, func(s printer.Status) bool { return s.PaperOut }); s.String() != "paper out" {
		t.Fatalf("status %q", s)
	}
	fake.mu.Lock()
	fake.paperOut, fake.silent = false, true
	fake.mu.Unlock()
	nextStatus(t, out, func(s printer.Status) bool { return s.Silent })

	// The connection drops; a job submitted meanwhile is printed once after
	// the reconnect.
	fake.mu.Lock()
	fake.silent = false
	fake.mu.Unlock()
	fake.dropAll()
	p.Submit(Label(Field(0, 0, 30, "after reconnect")))
	waitFor(t, "the 4th label", func() bool { return len(fake.got()) >= 4 })
	time.Sleep(200 * time.Millisecond)
	if n := len(fake.got()); n != 4 {
		t.Fatalf("%d labels printed, want 4 (no duplicates)", n)
	}
	if p.Queued() != 0 {
		t.Fatalf("%d jobs still queued", p.Queued())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

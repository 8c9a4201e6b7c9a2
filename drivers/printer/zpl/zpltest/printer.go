// Package zpltest provides a ZPL label printer on loopback for tests: it
// collects complete formats exactly as received and answers ~HS with the
// flags the test sets, or not at all while silent.
package zpltest

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Printer is a fake raw-TCP (port 9100 style) ZPL printer.
type Printer struct {
	l        net.Listener
	mu       sync.Mutex
	labels   []string
	paperOut bool
	headOpen bool
	silent   bool
	queries  int
	conns    []net.Conn
}

// Start listens on a free loopback port until the test ends.
func Start(t testing.TB) *Printer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Printer{l: l}
	t.Cleanup(func() { l.Close(); f.DropAll() })
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

// Queries returns how many ~HS status requests the printer received.
func (f *Printer) Queries() int { f.mu.Lock(); defer f.mu.Unlock(); return f.queries }

// Addr is the printer's host:port.
func (f *Printer) Addr() string { return f.l.Addr().String() }

// Labels returns every complete format received so far, ^XA to ^XZ.
func (f *Printer) Labels() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.labels...)
}

// SetPaperOut, SetHeadOpen and SetSilent change what ~HS answers.
func (f *Printer) SetPaperOut(v bool) { f.mu.Lock(); f.paperOut = v; f.mu.Unlock() }

// SetHeadOpen sets the head-up flag of the status answer.
func (f *Printer) SetHeadOpen(v bool) { f.mu.Lock(); f.headOpen = v; f.mu.Unlock() }

// SetSilent makes the printer ignore ~HS, as some do with media out.
func (f *Printer) SetSilent(v bool) { f.mu.Lock(); f.silent = v; f.mu.Unlock() }

// DropAll closes every open connection.
func (f *Printer) DropAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *Printer) serve(c net.Conn) {
	var buf []byte
	rd := make([]byte, 512)
	for {
		n, err := c.Read(rd)
		if err != nil {
			return
		}
		buf = append(buf, rd[:n]...)
		for {
			if i, xa := bytes.Index(buf, []byte("~HS")), bytes.Index(buf, []byte("^XA")); i >= 0 && (xa < 0 || i < xa) {
				buf = append(buf[:i], buf[i+3:]...)
				f.mu.Lock()
				silent, paper, head := f.silent, f.paperOut, f.headOpen
				f.queries++
				f.mu.Unlock()
				if !silent {
					fmt.Fprintf(c, "\x02030,%d,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02000,0,%d,0,0,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n", b01(paper), b01(head))
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

func b01(v bool) int {
	if v {
		return 1
	}
	return 0
}

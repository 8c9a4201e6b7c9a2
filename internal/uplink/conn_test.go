package uplink

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// gatedConn records every Write it is given; each Write waits until the
// test lets it through (or fails it).
type gatedConn struct {
	net.Conn // one end of a net.Pipe, for the methods not overridden
	mu       sync.Mutex
	writes   [][]byte
	gate     chan error
	closed   chan struct{}
	once     sync.Once
}

func newGatedConn(t *testing.T) *gatedConn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &gatedConn{Conn: a, gate: make(chan error), closed: make(chan struct{})}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	select {
	case err := <-g.gate:
		if err != nil {
			return 0, err
		}
	case <-g.closed:
		return 0, net.ErrClosed
	}
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(p))
	g.mu.Unlock()
	return len(p), nil
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *gatedConn) SetWriteDeadline(time.Time) error { return nil }

func (g *gatedConn) recorded() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]byte(nil), g.writes...)
}

// waitTaken returns once the flusher has taken everything written so far.
func waitTaken(c *coalescingConn) {
	for {
		c.mu.Lock()
		n := len(c.buf)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func packet(i int) []byte { return []byte(fmt.Sprintf("<packet %03d>", i)) }

func TestCoalescingConnGathersPacketsWrittenDuringAWrite(t *testing.T) {
	g := newGatedConn(t)
	c := newCoalescingConn(g, time.Second)
	// The first packet goes out on its own; the flusher is held in that
	// write while 99 more arrive, and they leave together in the next.
	c.Write(packet(0))
	want := packet(0)
	waitTaken(c)
	for i := 1; i < 100; i++ {
		if _, err := c.Write(packet(i)); err != nil {
			t.Fatal(err)
		}
		want = append(want, packet(i)...)
	}
	g.gate <- nil
	g.gate <- nil
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	w := g.recorded()
	if len(w) != 2 {
		t.Fatalf("got %d writes, want 2 (one packet, then the 99 gathered meanwhile)", len(w))
	}
	if got := bytes.Join(w, nil); !bytes.Equal(got, want) {
		t.Fatalf("bytes on the wire differ from the packets in order:\n got %q\nwant %q", got, want)
	}
}

func TestCoalescingConnCloseSendsWhatIsGathered(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newCoalescingConn(a, time.Second)
	got := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		buf.ReadFrom(b)
		got <- buf.Bytes()
	}()
	var want []byte
	for i := range 10 {
		c.Write(packet(i))
		want = append(want, packet(i)...)
	}
	c.Write([]byte("DISCONNECT"))
	want = append(want, "DISCONNECT"...)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("peer got %q, want %q", g, want)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

func TestCoalescingConnFailedWriteFailsLaterWritesAndClosesTheConnection(t *testing.T) {
	g := newGatedConn(t)
	c := newCoalescingConn(g, time.Second)
	c.Write(packet(1))
	broken := errors.New("connection reset by peer")
	g.gate <- broken
	select {
	case <-g.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a failed write did not close the connection, so paho's reader would never see the loss")
	}
	<-c.done
	_, err := c.Write(packet(2))
	if !errors.Is(err, broken) {
		t.Fatalf("write after a failed write: %v, want it to wrap %v", err, broken)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close after failure: %v", err)
	}
}

func TestCoalescingConnCloseDoesNotWaitForeverOnAStalledPeer(t *testing.T) {
	g := newGatedConn(t) // never lets a write through
	c := newCoalescingConn(g, 50*time.Millisecond)
	c.Write(packet(1))
	done := make(chan error)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a write the peer never took")
	}
}

func TestCoalescingConnWriteWaitsWhileTheBufferIsFull(t *testing.T) {
	g := newGatedConn(t)
	c := newCoalescingConn(g, time.Second)
	c.Write(packet(0)) // taken by the flusher, held at the gate
	waitTaken(c)       // so what follows is gathered behind it
	big := bytes.Repeat([]byte{'x'}, maxBuffered)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() {
		c.Write(packet(1))
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatalf("a write past %d buffered bytes did not wait", maxBuffered)
	case <-time.After(50 * time.Millisecond):
	}
	g.gate <- nil // packet 0 out; the flusher takes the big buffer
	<-wrote
	g.gate <- nil
	g.gate <- nil
	c.Close()
	if got, want := len(bytes.Join(g.recorded(), nil)), 2*len(packet(0))+maxBuffered; got != want {
		t.Fatalf("%d bytes on the wire, want %d", got, want)
	}
}

func TestCoalescingConnDropsABrokerThatStopsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // held open, never read
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	defer peer.Close()
	c := newCoalescingConn(raw, 200*time.Millisecond)
	defer c.Close()
	failed := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte{'p'}, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				failed <- err
				return
			}
		}
	}()
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write to a stalled broker failed with %v, want a write timeout", err)
		}
	case <-time.After(20 * time.Second):
		c.Conn.Close() // ends the writer goroutine
		<-failed
		t.Fatal("writes to a broker that reads nothing never failed: the write timeout is not enforced")
	}
	// The connection is closed, so paho's reader sees the loss too.
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after the write timed out: %v, want the connection closed", err)
	}
}

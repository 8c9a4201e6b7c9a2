//go:build linux

package uplink

import (
	"net"
	"syscall"
	"testing"
)

// TestQuickAckAfterEveryRead: the broker connection acknowledges at once
// after each read (Linux clears TCP_QUICKACK on its own; the connection
// sets it again), so that a broker with Nagle's algorithm does not hold
// the next PUBACK of a window for a delayed acknowledgement.
func TestQuickAckAfterEveryRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for range 3 {
			c.Write([]byte{0x40, 0x02, 0x00, 0x01}) // a PUBACK
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := withQuickAck(raw)
	defer c.Close()
	quick := func() int {
		sc, _ := raw.(*net.TCPConn).SyscallConn()
		v := -1
		sc.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK) })
		return v
	}
	buf := make([]byte, 4)
	for i := range 3 {
		sc, _ := raw.(*net.TCPConn).SyscallConn()
		sc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 0) })
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		if v := quick(); v != 1 {
			t.Fatalf("after read %d TCP_QUICKACK is %d, want 1", i+1, v)
		}
	}
}

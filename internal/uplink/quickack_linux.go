//go:build linux

package uplink

import (
	"net"
	"syscall"
)

// blobWindow and blobBusyWindow: with every segment acknowledged at once,
// sixteen blob publishes in flight (1 MiB) are faster than a few; while
// events flow, two (128 KiB) keep the bytes an event waits behind few.
const (
	blobWindow     = 16
	blobBusyWindow = 2
)

// quickAckConn acknowledges every segment it reads at once (TCP_QUICKACK,
// which Linux clears again after a while, so it is set after every read).
// A broker with Nagle's algorithm on, as mosquitto has by default, holds a
// small packet (a PUBACK) back until its previous one is acknowledged; with
// delayed acknowledgements on this side, each PUBACK after the first of a
// window then waits up to 40 ms.
type quickAckConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func withQuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{TCPConn: tc, raw: raw}
	q.quickAck()
	return q
}

func (c *quickAckConn) quickAck() {
	c.raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

// Read reads and keeps acknowledgements immediate.
func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.quickAck()
	return n, err
}

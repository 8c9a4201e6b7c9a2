//go:build !linux

package uplink

import "net"

// blobWindow is one here: without immediate acknowledgements, a broker
// with Nagle's algorithm holds every PUBACK after the first of a window for
// a delayed acknowledgement (up to 200 ms on Windows).
const (
	blobWindow     = 1
	blobBusyWindow = 1
)

// withQuickAck returns c: immediate acknowledgements are set on Linux only.
func withQuickAck(c net.Conn) net.Conn { return c }

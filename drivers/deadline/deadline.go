// Package deadline bounds writes to devices that have no write deadline of
// their own. go.bug.st/serial writes block while flow control (CTS, XOFF)
// holds the port, and closing the port does not wake a blocked write, so a
// driver that wrote directly could hang a daemon's stop for good.
package deadline

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Writer writes to W, one write at a time, each within a time limit.
type Writer struct {
	W io.Writer
	// OnTimeout, if set, is called once a write took too long or its
	// context ended: closing the device there wakes a blocked write where
	// the device allows it (a TCP connection does, a serial port does not).
	OnTimeout func()

	mu      sync.Mutex
	blocked bool // a write that timed out has not returned yet
}

// Use makes later writes go to dst (a reopened device) while keeping the
// Writer's memory of a write still blocked in the old one.
func (w *Writer) Use(dst io.Writer) {
	w.mu.Lock()
	w.W = dst
	w.mu.Unlock()
}

// ErrBlocked is returned while an earlier write that timed out is still
// blocked in the device.
var ErrBlocked = fmt.Errorf("write: an earlier write is still blocked in the device (flow control holding the port?)")

// Write writes all of b, or returns an error once timeout has passed or
// ctx is done. A write that times out keeps running in the background
// until the device takes or refuses it; further writes fail with
// ErrBlocked meanwhile.
func (w *Writer) Write(ctx context.Context, b []byte, timeout time.Duration) error {
	w.mu.Lock()
	if w.blocked {
		w.mu.Unlock()
		return ErrBlocked
	}
	w.blocked = true
	dst := w.W
	w.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		err := writeAll(dst, b)
		w.mu.Lock()
		w.blocked = false
		w.mu.Unlock()
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if w.OnTimeout != nil {
			w.OnTimeout()
		}
		return ctx.Err()
	case <-t.C:
		if w.OnTimeout != nil {
			w.OnTimeout()
		}
		return fmt.Errorf("write: not done within %s (flow control holding the port, or the device stalled)", timeout)
	}
}

func writeAll(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n, err := w.Write(b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

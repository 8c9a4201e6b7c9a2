package zpl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.bug.st/serial"
)

// errTimeout is what a serial or device-file read returns at its deadline;
// it is a net.Error with Timeout() true, like a TCP read deadline.
type errTimeout struct{}

func (errTimeout) Error() string   { return "read timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// serialConn adapts a serial port to Conn: a read deadline becomes the
// port's read timeout, and a read that times out says so.
type serialConn struct {
	serial.Port
	deadline time.Time
}

func (c *serialConn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	if t.IsZero() {
		return c.Port.SetReadTimeout(serial.NoTimeout)
	}
	return c.Port.SetReadTimeout(max(time.Until(t), time.Millisecond))
}

func (c *serialConn) Read(b []byte) (int, error) {
	n, err := c.Port.Read(b)
	if n == 0 && err == nil {
		return 0, errTimeout{}
	}
	return n, err
}

// DialSerial returns a dialer for a printer on a serial port; open is
// serial.Open or a USB-id lookup.
func DialSerial(port string, mode *serial.Mode, open func(string, *serial.Mode) (serial.Port, error)) func(ctx context.Context) (Conn, error) {
	if open == nil {
		open = serial.Open
	}
	return func(context.Context) (Conn, error) {
		p, err := open(port, mode)
		if err != nil {
			return nil, err
		}
		return &serialConn{Port: p}, nil
	}
}

// DialDevice returns a dialer for a printer behind a character device, such
// as a USB printer-class device through Linux's usblp driver
// (/dev/usb/lp0): bulk OUT carries the jobs, bulk IN the ~HS answers of a
// bi-directional printer. karalabe/usb only speaks interrupt endpoints, so
// the kernel's printer driver does the bulk transfers.
func DialDevice(path string) func(ctx context.Context) (Conn, error) {
	return func(context.Context) (Conn, error) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		return &deviceConn{File: f}, nil
	}
}

// deviceConn is a printer device file. Reads honour the deadline where the
// device supports polling; otherwise a read that cannot be bounded is
// reported as silence.
type deviceConn struct {
	*os.File
	writeOnly bool // the device cannot bound a read: answers are not read
}

// WriteOnly reports whether the device cannot be read (no status answers).
func (c *deviceConn) WriteOnly() bool { return c.writeOnly }

func (c *deviceConn) SetReadDeadline(t time.Time) error {
	if err := c.File.SetReadDeadline(t); err != nil {
		if errors.Is(err, os.ErrNoDeadline) {
			c.writeOnly = true
			return nil
		}
		return fmt.Errorf("set read deadline: %w", err)
	}
	return nil
}

func (c *deviceConn) Read(b []byte) (int, error) {
	if c.writeOnly {
		return 0, errTimeout{}
	}
	n, err := c.File.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errTimeout{}
	}
	return n, err
}

package usbhid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/internal/health"
)

// Match selects a USB device.
type Match struct {
	VendorID, ProductID uint16
	// Serial, if set, must equal the device's serial number.
	Serial string
}

// String formats the match as vid:pid[/serial].
func (m Match) String() string {
	s := fmt.Sprintf("%04x:%04x", m.VendorID, m.ProductID)
	if m.Serial != "" {
		s += "/" + m.Serial
	}
	return s
}

// ParseMatch parses "vid:pid" or "vid:pid/serial", ids in hex.
func ParseMatch(s string) (Match, error) {
	ids, serial, _ := strings.Cut(s, "/")
	v, p, ok := strings.Cut(ids, ":")
	if !ok {
		return Match{}, fmt.Errorf("%q is not vid:pid (hex, e.g. 0922:8003)", s)
	}
	vid, err1 := strconv.ParseUint(v, 16, 16)
	pid, err2 := strconv.ParseUint(p, 16, 16)
	if err1 != nil || err2 != nil {
		return Match{}, fmt.Errorf("%q is not vid:pid (hex, e.g. 0922:8003)", s)
	}
	return Match{VendorID: uint16(vid), ProductID: uint16(pid), Serial: serial}, nil
}

// Device is an open HID device delivering input reports.
type Device interface {
	// Read returns one input report.
	Read(p []byte) (int, error)
	Close() error
}

// Opener opens the device a Match selects.
type Opener func(m Match) (Device, error)

// ErrNotFound means no attached device matches.
var ErrNotFound = errors.New("no matching USB device attached")

// Loop owns one HID device: it opens it with capped backoff, hands every
// report to Handle, and reopens it after an unplug.
type Loop struct {
	Name   string
	Kind   string
	Match  Match
	Open   Opener
	Handle func(report []byte)
	// OnOpen, if set, is called after each successful open (decoders reset).
	OnOpen       func()
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	Log          *slog.Logger
	Health       health.Reporter
	// Wake cuts the reconnect backoff short when a device appears.
	Wake <-chan struct{}
}

// Run reads reports until ctx is cancelled; it returns nil then.
func (l *Loop) Run(ctx context.Context) error {
	loop := reopen.Loop[Device]{
		Name: l.Name, Kind: l.Kind, Where: "USB " + l.Match.String(),
		Open: func() (Device, error) { return l.Open(l.Match) },
		Serve: func(ctx context.Context, dev Device) error {
			if l.OnOpen != nil {
				l.OnOpen()
			}
			buf := make([]byte, 64)
			for {
				n, err := dev.Read(buf)
				if err != nil {
					return err
				}
				if n > 0 {
					l.Handle(buf[:n])
				}
			}
		},
		Min: max(l.ReconnectMin, 50*time.Millisecond), Max: l.ReconnectMax, Log: l.Log, Health: l.Health,
		Wake: l.Wake,
	}
	return loop.Run(ctx)
}

package usbhid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

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
	Match  Match
	Open   Opener
	Handle func(report []byte)
	// OnOpen, if set, is called after each successful open (decoders reset).
	OnOpen       func()
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	Log          *slog.Logger
	Health       health.Reporter
}

// Run reads reports until ctx is cancelled; it returns nil then.
func (l *Loop) Run(ctx context.Context) error {
	log, h := l.Log, l.Health
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = health.Discard{}
	}
	key := "device." + l.Name + ".disconnected"
	backoff := max(l.ReconnectMin, 50*time.Millisecond)
	capd := max(l.ReconnectMax, backoff)
	logged := false
	buf := make([]byte, 64)
	for ctx.Err() == nil {
		dev, err := l.Open(l.Match)
		if err != nil {
			h.Set(key, health.Warning, fmt.Sprintf("USB %s: %v", l.Match, err))
			if !logged {
				log.Warn("USB device unavailable, retrying", "device", l.Name, "usb", l.Match.String(), "err", err)
				logged = true
			}
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, capd)
			continue
		}
		h.Clear(key)
		if l.OnOpen != nil {
			l.OnOpen()
		}
		log.Info("USB device connected", "device", l.Name, "usb", l.Match.String())
		logged, backoff = false, max(l.ReconnectMin, 50*time.Millisecond)
		stop := context.AfterFunc(ctx, func() { dev.Close() })
		for {
			n, err := dev.Read(buf)
			if err != nil {
				if ctx.Err() == nil {
					h.Set(key, health.Warning, fmt.Sprintf("USB %s: %v", l.Match, err))
					log.Warn("USB device disconnected", "device", l.Name, "err", err)
				}
				break
			}
			if n > 0 {
				l.Handle(buf[:n])
			}
		}
		if stop() {
			dev.Close()
		}
		if !sleep(ctx, backoff) {
			return nil
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

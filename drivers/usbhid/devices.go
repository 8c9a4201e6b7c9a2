package usbhid

import (
	"context"
	"log/slog"
	"time"

	"github.com/mailroomd/mailroomd/drivers/hid"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
)

// Common holds what every USB HID device driver needs.
type Common struct {
	Name         string
	Match        Match
	Open         Opener // nil: OpenHID
	Clock        clock.Clock
	Log          *slog.Logger
	Health       health.Reporter
	ReconnectMax time.Duration
	// Wake cuts the reconnect backoff short when a device appears.
	Wake <-chan struct{}
}

func (c Common) loop(kind string) Loop {
	if c.Open == nil {
		c.Open = OpenHID
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return Loop{Name: c.Name, Kind: kind, Match: c.Match, Open: c.Open, ReconnectMin: 200 * time.Millisecond,
		ReconnectMax: c.ReconnectMax, Log: c.Log, Health: c.Health, Wake: c.Wake}
}

func (c Common) now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

// Scanner is a USB HID barcode scanner, in keyboard or HID POS mode.
type Scanner struct {
	Common
	// Keyboard selects boot keyboard reports with Layout; otherwise HID POS.
	Keyboard  bool
	Layout    *hid.Layout
	MaxLength int
}

var _ scanner.Driver = (*Scanner)(nil)

// Run reads codes until ctx is cancelled.
func (s *Scanner) Run(ctx context.Context, sink scanner.Sink) error {
	l := s.loop("scanner")
	var kbd *hid.KeyboardDecoder
	var pos *hid.POSScanner
	l.OnOpen = func() {
		kbd = hid.NewKeyboardDecoder(s.Layout, s.MaxLength)
		pos = hid.NewPOSScanner(s.MaxLength)
	}
	l.Handle = func(report []byte) {
		var code []byte
		var aim string
		var err error
		if s.Keyboard {
			code, err = kbd.Feed(report)
		} else {
			code, aim, err = pos.Feed(report)
		}
		if err != nil {
			s.Log.Warn("scanner input discarded", "device", s.Name, "err", err)
			return
		}
		if code == nil {
			return
		}
		sink(ctx, scanner.Reading{Device: s.Name, Barcode: code, Symbology: aim, At: s.now()})
	}
	return l.Run(ctx)
}

// Scale is a USB HID POS scale.
type Scale struct {
	Common
}

// Run sends a reading whenever weight or status changes, until ctx is
// cancelled.
func (s *Scale) Run(ctx context.Context, out chan<- scale.Reading) error {
	l := s.loop("scale")
	var dec *hid.ScaleDecoder
	var last scale.Reading
	var have bool
	l.OnOpen = func() { dec, have = &hid.ScaleDecoder{}, false }
	l.Handle = func(report []byte) {
		r, ok, err := dec.Feed(report)
		if err != nil {
			s.Log.Warn("scale report not understood", "device", s.Name, "err", err)
			return
		}
		if !ok || have && r.Value == last.Value && r.Unit == last.Unit && r.Status == last.Status {
			return
		}
		last, have = r, true
		r.Device, r.At = s.Name, s.now()
		select {
		case out <- r:
		case <-ctx.Done():
		}
	}
	return l.Run(ctx)
}

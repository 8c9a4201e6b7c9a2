package serialline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.bug.st/serial"

	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
)

// Config describes one serial-line scanner.
type Config struct {
	Name       string
	Port       string
	Mode       serial.Mode
	Terminator []byte
	Prefix     []byte
	Suffix     []byte
	MaxLength  int
	Control    ControlPolicy
	// ReconnectMin and ReconnectMax bound the reopen backoff.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// Wake cuts the reconnect backoff short when a device appears (hot-plug).
	Wake <-chan struct{}
}

// ParseParity maps a config word to a serial.Parity.
func ParseParity(s string) (serial.Parity, error) {
	switch s {
	case "", "none":
		return serial.NoParity, nil
	case "odd":
		return serial.OddParity, nil
	case "even":
		return serial.EvenParity, nil
	case "mark":
		return serial.MarkParity, nil
	case "space":
		return serial.SpaceParity, nil
	}
	return 0, fmt.Errorf("unknown parity %q", s)
}

// ParseStopBits maps "1", "1.5" or "2" to serial.StopBits.
func ParseStopBits(s string) (serial.StopBits, error) {
	switch s {
	case "", "1":
		return serial.OneStopBit, nil
	case "1.5":
		return serial.OnePointFiveStopBits, nil
	case "2":
		return serial.TwoStopBits, nil
	}
	return 0, fmt.Errorf("unknown stop bits %q", s)
}

// Opener opens a serial port; serial.Open in production.
type Opener func(path string, mode *serial.Mode) (serial.Port, error)

// Driver is a serial-line scanner.
type Driver struct {
	cfg    Config
	open   Opener
	clock  clock.Clock
	log    *slog.Logger
	health health.Reporter
}

var _ scanner.Driver = (*Driver)(nil)

// New returns a driver. open may be nil for serial.Open; c, log and h may be
// nil for the system clock, no logging and no health reporting.
func New(cfg Config, open Opener, c clock.Clock, log *slog.Logger, h health.Reporter) *Driver {
	if open == nil {
		open = serial.Open
	}
	if c == nil {
		c = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = health.Discard{}
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	return &Driver{cfg: cfg, open: open, clock: c, log: log.With("device", cfg.Name), health: h}
}

// Run reads the scanner until ctx is cancelled, reopening the port whenever
// it goes away.
func (d *Driver) Run(ctx context.Context, sink scanner.Sink) error {
	var lineMode bool
	loop := reopen.Loop[serial.Port]{
		Name: d.cfg.Name, Kind: "scanner", Where: d.cfg.Port,
		// Line mode is set before the port counts as connected, so that
		// nothing is read, or announced, before the tty frames lines.
		Open: func() (serial.Port, error) {
			// Lines left in the tty by the last run first, one by one.
			eol := d.terminator()[len(d.terminator())-1]
			f := d.framer()
			if err := pendingLines(d.cfg.Port, eol, func(b []byte) error { return d.deliver(ctx, f, b, sink) }); err != nil && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			port, err := d.open(d.cfg.Port, &d.cfg.Mode)
			if err == nil {
				lineMode = setLineMode(d.cfg.Port, d.terminator()[len(d.terminator())-1]) == nil
				d.log.Debug("tty line mode", "port", d.cfg.Port, "on", lineMode)
			}
			return port, err
		},
		Serve: func(ctx context.Context, port serial.Port) error {
			return d.read(ctx, port, sink, lineMode)
		},
		Min: d.cfg.ReconnectMin, Max: d.cfg.ReconnectMax, Log: d.log, Health: d.health,
		Wake: d.cfg.Wake,
	}
	return loop.Run(ctx)
}

func (d *Driver) terminator() []byte {
	if len(d.cfg.Terminator) == 0 {
		return []byte{'\r'}
	}
	return d.cfg.Terminator
}

func (d *Driver) framer() *Framer {
	return NewFramer(d.terminator(), d.cfg.Prefix, d.cfg.Suffix, d.cfg.MaxLength, d.cfg.Control)
}

// deliver frames what was read and hands each line to the sink, in order;
// it returns ctx's error once the daemon stops.
func (d *Driver) deliver(ctx context.Context, f *Framer, b []byte, sink scanner.Sink) error {
	for _, l := range f.Feed(b) {
		if l.Warning != nil {
			d.log.Warn("scanner input discarded", "err", l.Warning)
			continue
		}
		r := scanner.Reading{Device: d.cfg.Name, Barcode: l.Data, At: d.clock.Now()}
		if err := sink(ctx, r); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (d *Driver) read(ctx context.Context, port serial.Port, sink scanner.Sink, lineMode bool) error {
	f := d.framer()
	// In line mode (setLineMode) one read takes exactly one whole line;
	// otherwise reading one byte at a time leaves complete lines unread.
	// Either way, what the sink has not taken yet stays in the kernel's tty
	// buffer, where a crash of the daemon cannot lose it.
	buf := make([]byte, 1)
	if lineMode {
		buf = make([]byte, 8192)
	}
	for {
		n, err := port.Read(buf)
		if err != nil {
			var pe *serial.PortError
			if errors.As(err, &pe) && pe.Code() == serial.PortClosed {
				return errors.New("port closed (device unplugged?)")
			}
			return err
		}
		if n == 0 {
			continue
		}
		if err := d.deliver(ctx, f, buf[:n], sink); err != nil {
			return err
		}
	}
}

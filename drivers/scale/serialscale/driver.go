package serialscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.bug.st/serial"

	"github.com/mailroomd/mailroomd/drivers/deadline"
	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
)

// Config describes one serial scale.
type Config struct {
	Name     string
	Port     string
	Mode     serial.Mode
	Protocol Protocol
	// Poll is how often a weight is requested (polling protocols).
	Poll time.Duration
	// ReadTimeout is how long a reply (or, for continuous scales, the next
	// frame) may take before the scale is reported as not answering.
	ReadTimeout  time.Duration
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// Wake cuts the reconnect backoff short when a device appears (hot-plug).
	Wake <-chan struct{}
}

// Opener opens a serial port; serial.Open in production.
type Opener func(path string, mode *serial.Mode) (serial.Port, error)

// Driver owns one serial scale.
type Driver struct {
	writer deadline.Writer // the poll requests' writes, across reconnects
	cfg    Config
	open   Opener
	clock  clock.Clock
	log    *slog.Logger
	health health.Reporter
}

// New returns a scale driver; open, c, log and h may be nil.
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
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = time.Second
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	return &Driver{cfg: cfg, open: open, clock: c, log: log.With("device", cfg.Name), health: h}
}

// DisconnectedKey is raised while the scale cannot be opened.
func DisconnectedKey(name string) string { return reopen.DisconnectedKey(name) }

// SilentKey is raised while a connected scale does not answer.
func SilentKey(name string) string { return "device." + name + ".not_answering" }

// Run polls the scale until ctx is cancelled, sending a reading whenever
// the weight or status changes. It reopens the port after an unplug.
func (d *Driver) Run(ctx context.Context, out chan<- scale.Reading) error {
	loop := reopen.Loop[serial.Port]{
		Name: d.cfg.Name, Kind: "scale", Where: d.cfg.Port,
		Open: func() (serial.Port, error) { return d.open(d.cfg.Port, &d.cfg.Mode) },
		Serve: func(ctx context.Context, port serial.Port) error {
			defer d.health.Clear(SilentKey(d.cfg.Name))
			return d.serve(ctx, port, out)
		},
		Min: d.cfg.ReconnectMin, Max: d.cfg.ReconnectMax, Log: d.log, Health: d.health,
		Wake: d.cfg.Wake,
	}
	return loop.Run(ctx)
}

// maxPending is how many unparsed bytes the driver keeps waiting for a
// frame end.
const maxPending = 512

// serve talks to an open port until it fails or ctx is cancelled.
func (d *Driver) serve(ctx context.Context, port serial.Port, out chan<- scale.Reading) error {
	tick := min(d.cfg.Poll, 50*time.Millisecond)
	if err := port.SetReadTimeout(tick); err != nil {
		return fmt.Errorf("set read timeout: %w", err)
	}
	req := d.cfg.Protocol.Request()
	// The poll request's write must not block a stop: flow control can
	// hold a serial port for good, and closing it does not wake a write.
	// One Writer for the driver's life: a write still blocked in a port
	// closed by a reconnect keeps further writes from piling up.
	w := &d.writer
	w.Use(port)
	var (
		frame     = make([]byte, 2*maxPending)
		buf       = frame[:0]
		rd        = make([]byte, 256)
		last      scale.Reading
		haveLast  bool
		nextPoll  time.Time
		lastHeard = time.Now()
		silent    bool
	)
	for {
		now := time.Now()
		if req != nil && !now.Before(nextPoll) {
			if err := w.Write(ctx, req, d.cfg.ReadTimeout); err != nil {
				return err
			}
			nextPoll = now.Add(d.cfg.Poll)
		}
		n, err := port.Read(rd)
		if err != nil {
			var pe *serial.PortError
			if errors.As(err, &pe) && pe.Code() == serial.PortClosed {
				return errors.New("port closed (device unplugged?)")
			}
			return err
		}
		if n > 0 {
			chunk := rd[:n]
			Mask7(chunk)
			buf = append(buf, chunk...)
		}
		for len(buf) > 0 {
			used, r, ok, perr := d.cfg.Protocol.Parse(buf)
			if used == 0 {
				break
			}
			buf = buf[used:]
			if perr != nil {
				d.log.Warn("scale reply not understood", "err", perr)
				lastHeard = time.Now()
				continue
			}
			if !ok {
				continue
			}
			lastHeard = time.Now()
			if silent {
				silent = false
				d.health.Clear(SilentKey(d.cfg.Name))
				d.log.Info("scale answering again")
			}
			r.Device = d.cfg.Name
			r.At = d.clock.Now()
			if haveLast && r.Value == last.Value && r.Unit == last.Unit && r.Status == last.Status {
				continue
			}
			last, haveLast = r, true
			select {
			case out <- r:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// Move the unparsed rest to the front, so the buffer keeps its
		// full capacity however many frames went through it.
		buf = frame[:copy(frame, buf)]
		if len(buf) >= maxPending {
			buf = buf[:0] // never hold more than one buffer of noise
		}
		if !silent && time.Since(lastHeard) > d.cfg.ReadTimeout {
			silent = true
			d.health.Set(SilentKey(d.cfg.Name), health.Warning, fmt.Sprintf("scale on %s does not answer (no reply within %s)", d.cfg.Port, d.cfg.ReadTimeout))
			d.log.Warn("scale not answering", "port", d.cfg.Port, "timeout", d.cfg.ReadTimeout)
		}
	}
}

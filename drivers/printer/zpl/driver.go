package zpl

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/drivers/deadline"
	"github.com/mailroomd/mailroomd/drivers/printer"
	"github.com/mailroomd/mailroomd/drivers/reopen"
	"github.com/mailroomd/mailroomd/internal/health"
)

// Conn is an open connection to a printer. Deadlines bound the status read;
// connections without them (some serial ports) rely on the read timeout of
// the port itself.
type Conn interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
}

// DialTCP returns a dialer for a raw TCP printer, e.g. "10.1.2.3:9100".
func DialTCP(addr string, timeout time.Duration) func(ctx context.Context) (Conn, error) {
	return func(ctx context.Context) (Conn, error) {
		d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// Config describes one ZPL printer.
type Config struct {
	Name  string
	Where string // address, for messages
	Dial  func(ctx context.Context) (Conn, error)
	// Poll is how often the status is asked for while idle.
	Poll time.Duration
	// Timeout is how long a status answer may take.
	Timeout      time.Duration
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	Log          *slog.Logger
	Health       health.Reporter
	// Wake cuts the reconnect backoff short when a device appears (hot-plug).
	Wake <-chan struct{}
}

// Printer queues jobs for one printer and reports its status.
type Printer struct {
	cfg   Config
	mu    sync.Mutex
	queue []job
	wake  chan struct{}
	sent  int
}

// New returns a printer; Run must be running for jobs to print.
func New(cfg Config) *Printer {
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Health == nil {
		cfg.Health = health.Discard{}
	}
	return &Printer{cfg: cfg, wake: make(chan struct{}, 1)}
}

type job struct {
	data []byte
	sent func()
}

// Submit queues a job (one or more complete formats). sent, if not nil, is
// called once the whole job was written to the printer; a job cut off by a
// lost connection is sent again whole, and sent is called only once.
func (p *Printer) Submit(data []byte, sent func()) {
	p.mu.Lock()
	p.queue = append(p.queue, job{data: data, sent: sent})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Queued returns how many jobs wait to be sent.
func (p *Printer) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// StatusKey is the condition raised while the printer cannot print.
func StatusKey(name string) string { return "device." + name + ".printer" }

// Run connects, sends queued jobs, polls the status, and sends a reading on
// out whenever the status changes, until ctx is cancelled.
func (p *Printer) Run(ctx context.Context, out chan<- printer.Reading) error {
	var last printer.Status
	first := true
	report := func(s printer.Status) {
		if !first && s == last {
			return
		}
		first, last = false, s
		if s.OK() {
			p.cfg.Health.Clear(StatusKey(p.cfg.Name))
		} else {
			p.cfg.Health.Set(StatusKey(p.cfg.Name), health.Warning, "printer "+s.String())
		}
		select {
		case out <- printer.Reading{Device: p.cfg.Name, Status: s, At: time.Now()}:
		case <-ctx.Done():
		}
	}
	loop := reopen.Loop[Conn]{
		Name: p.cfg.Name, Kind: "printer", Where: p.cfg.Where,
		Open: func() (Conn, error) { return p.cfg.Dial(ctx) },
		Serve: func(ctx context.Context, c Conn) error {
			t := time.NewTicker(p.cfg.Poll)
			defer t.Stop()
			// No write may hang a stop: a stalled printer is closed (which
			// wakes a TCP write) and its job stays queued.
			w := &deadline.Writer{W: c, OnTimeout: func() { c.Close() }}
			for {
				// Each job is sent only to a printer that said it is ready
				// just before: a label sent while the paper is out is lost
				// when the printer is switched off to fix it. Until then jobs
				// wait in the queue, and the status is an alert.
				for {
					s, err := p.status(ctx, c, w)
					if err != nil {
						return err
					}
					report(s)
					if !ready(s, c) {
						break
					}
					j, ok := p.next()
					if !ok {
						break
					}
					if err := w.Write(ctx, j.data, p.jobTimeout(len(j.data))); err != nil {
						return fmt.Errorf("send job: %w", err) // stays queued, sent again whole
					}
					p.done()
					if j.sent != nil {
						j.sent()
					}
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-p.wake:
				case <-t.C:
				}
			}
		},
		Min: p.cfg.ReconnectMin, Max: p.cfg.ReconnectMax, Log: p.cfg.Log, Health: p.cfg.Health,
		Wake: p.cfg.Wake,
	}
	return loop.Run(ctx)
}

func (p *Printer) next() (job, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return job{}, false
	}
	return p.queue[0], true
}

func (p *Printer) done() {
	p.mu.Lock()
	p.queue = p.queue[1:]
	p.sent++
	p.mu.Unlock()
}

// ready reports whether jobs may be sent to a printer with status s: no
// paper, ribbon, head, pause or buffer problem, and an answer to the status
// request, except on a connection that cannot read at all (a write-only
// USB printer), where no answer ever comes.
func ready(s printer.Status, c Conn) bool {
	if s.Silent {
		wo, ok := c.(interface{ WriteOnly() bool })
		return ok && wo.WriteOnly() && (s == printer.Status{Silent: true})
	}
	return s.OK()
}

// jobTimeout is how long a job of n bytes may take to write: the read
// timeout, plus the time a 9600-baud serial line (about 960 bytes a
// second, counted as 500) needs for it.
func (p *Printer) jobTimeout(n int) time.Duration {
	return p.cfg.Timeout + time.Duration(n)*time.Second/500
}

// status asks ~HS and reads the answer; silence is a status, not an error.
// A read error other than a timeout means the connection is gone.
func (p *Printer) status(ctx context.Context, c Conn, w *deadline.Writer) (printer.Status, error) {
	if err := w.Write(ctx, HostStatusQuery, p.cfg.Timeout); err != nil {
		return printer.Status{}, fmt.Errorf("ask status: %w", err)
	}
	deadline := time.Now().Add(p.cfg.Timeout)
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	var buf []byte
	rd := make([]byte, 256)
	for {
		n, err := c.Read(rd)
		buf = append(buf, rd[:n]...)
		if s, complete, perr := ParseHostStatus(buf); complete {
			if perr != nil {
				p.cfg.Log.Warn("printer status not understood", "device", p.cfg.Name, "err", perr)
			}
			return s, nil
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return printer.Status{Silent: true}, nil
			}
			return printer.Status{}, fmt.Errorf("read status: %w", err)
		}
		if len(buf) > 4096 {
			buf = buf[len(buf)-1024:]
		}
	}
}

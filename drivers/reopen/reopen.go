// Package reopen keeps a device open: it opens it with capped exponential
// backoff, serves it until it fails (an unplug), reports the device's state
// to the health model, and opens it again, the same way every time. Every
// driver that owns a device runs one Loop in one goroutine.
package reopen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mailroomd/mailroomd/internal/health"
)

// Loop owns one device of type T.
type Loop[T io.Closer] struct {
	// Name is the configured device name; the loop raises and clears the
	// condition "device.<Name>.disconnected".
	Name string
	// Kind ("scanner", "scale") starts the log lines: "scanner connected".
	Kind string
	// Where names what is opened (a port path, a USB id) in messages.
	Where string
	// Open opens the device.
	Open func() (T, error)
	// Serve uses the open device until it fails or ctx is cancelled. The
	// loop closes the device when ctx is cancelled, which unblocks a read.
	Serve func(ctx context.Context, dev T) error
	// Min and Max bound the backoff between attempts.
	Min, Max time.Duration
	Log      *slog.Logger
	Health   health.Reporter
	// Wake, if set, cuts a backoff wait short: a device appeared (hot-plug).
	Wake <-chan struct{}
}

// DisconnectedKey is the condition a Loop raises while device name is not
// usable.
func DisconnectedKey(name string) string { return "device." + name + ".disconnected" }

// Run keeps the device open until ctx is cancelled; it returns nil then.
func (l *Loop[T]) Run(ctx context.Context) error {
	log, h := l.Log, l.Health
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if h == nil {
		h = health.Discard{}
	}
	minB := max(l.Min, 10*time.Millisecond)
	maxB := max(l.Max, minB)
	key := DisconnectedKey(l.Name)
	backoff := minB
	logged := false
	for {
		dev, err := l.Open()
		if ctx.Err() != nil {
			if err == nil {
				dev.Close()
			}
			return nil
		}
		if err != nil {
			h.Set(key, health.Warning, fmt.Sprintf("cannot open %s: %v", l.Where, err))
			if !logged {
				log.Warn(l.Kind+" unavailable, retrying", "device", l.Name, "at", l.Where, "err", err)
				logged = true
			}
			if !sleep(ctx, backoff, l.Wake) {
				return nil
			}
			backoff = min(backoff*2, maxB)
			continue
		}
		h.Clear(key)
		log.Info(l.Kind+" connected", "device", l.Name, "at", l.Where)
		logged, backoff = false, minB
		stop := context.AfterFunc(ctx, func() { dev.Close() })
		err = l.Serve(ctx, dev)
		if stop() {
			dev.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		h.Set(key, health.Warning, fmt.Sprintf("disconnected from %s: %v", l.Where, err))
		log.Warn(l.Kind+" disconnected", "device", l.Name, "at", l.Where, "err", err)
		if !sleep(ctx, backoff, l.Wake) {
			return nil
		}
	}
}

// sleep waits d, or until wake fires, or ctx ends (false).
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return true
	}
}

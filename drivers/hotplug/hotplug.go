package hotplug

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Uevent is one kernel device event.
type Uevent struct {
	Action    string
	DevPath   string
	Subsystem string
	DevName   string
}

// Parse reads one uevent message. ok is false for anything that is not a
// kernel uevent (udev's own messages start with "libudev").
func Parse(b []byte) (ev Uevent, ok bool) {
	head, rest, found := bytes.Cut(b, []byte{0})
	action, devpath, at := bytes.Cut(head, []byte("@"))
	if !found || !at || len(action) == 0 {
		return ev, false
	}
	ev.Action, ev.DevPath = string(action), string(devpath)
	for len(rest) > 0 {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{0})
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "SUBSYSTEM":
			ev.Subsystem = string(v)
		case "DEVNAME":
			ev.DevName = string(v)
		case "ACTION":
			ev.Action = string(v)
		}
	}
	return ev, true
}

// Relevant reports whether an event may bring back a device mailroomd drives.
func Relevant(ev Uevent) bool {
	if ev.Action != "add" && ev.Action != "bind" {
		return false
	}
	switch ev.Subsystem {
	case "tty", "usb", "hidraw", "usbmisc":
		return true
	}
	return false
}

// Watcher fans device arrivals out to subscribers.
type Watcher struct {
	Log *slog.Logger
	mu  sync.Mutex
	sub map[chan struct{}]struct{}
}

// NewWatcher returns a watcher; Run must run for it to see events.
func NewWatcher(log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{Log: log, sub: map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives a value when a relevant device
// appears (coalesced: one pending wake at most), and the function that
// removes the subscription again.
func (w *Watcher) Subscribe() (<-chan struct{}, func()) {
	if w == nil {
		return nil, func() {}
	}
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.sub[ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.sub, ch)
		w.mu.Unlock()
	}
}

// Subscribers returns how many subscriptions are in place.
func (w *Watcher) Subscribers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sub)
}

// Notify wakes every subscriber.
func (w *Watcher) Notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.sub {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// handle takes one raw message.
func (w *Watcher) handle(b []byte) {
	if ev, ok := Parse(b); ok && Relevant(ev) {
		w.Log.Debug("device appeared", "subsystem", ev.Subsystem, "name", ev.DevName)
		w.Notify()
	}
}

// Run listens for uevents until ctx is cancelled. Where that is not
// possible it logs why and returns nil: the drivers' backoff still works.
func (w *Watcher) Run(ctx context.Context) error { return w.run(ctx) }

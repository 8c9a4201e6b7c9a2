// Package scanner defines what every barcode scanner driver produces.
// Drivers know nothing of MQTT or SQLite: they own their device, report its
// state to a health.Reporter, and send typed readings on a channel.
package scanner

import (
	"context"
	"time"
)

// Reading is one barcode read by a scanner.
type Reading struct {
	// Device is the configured device name.
	Device string
	// Barcode holds the bytes exactly as the scanner sent them, less the
	// configured terminator, prefix and suffix.
	Barcode []byte
	// Symbology is the AIM symbology identifier (e.g. "]C1") when the
	// scanner reports one, else empty.
	Symbology string
	// At is when the reading was completed.
	At time.Time
}

// Sink takes a reading and returns once it has been handled: for the
// daemon, once the scan is committed to the buffer. A driver does not read
// the next code from its device before Sink returns, so that codes not yet
// taken stay in the device's or the kernel's buffer, where a crash of the
// daemon does not lose them. An error means the reading was refused (and
// reported by the sink); the driver goes on.
type Sink func(ctx context.Context, r Reading) error

// Driver is a scanner that hands readings to a sink until ctx is cancelled.
// Run returns nil on cancellation; it handles unplugging and reconnection
// itself and returns an error only when it cannot go on at all.
type Driver interface {
	Run(ctx context.Context, sink Sink) error
}

// ToChannel is a Sink that sends readings on ch (for tests and probes).
func ToChannel(ch chan<- Reading) Sink {
	return func(ctx context.Context, r Reading) error {
		select {
		case ch <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ConditionKey is the health condition a driver raises while device name is
// not usable.
func ConditionKey(name string) string { return "device." + name + ".disconnected" }

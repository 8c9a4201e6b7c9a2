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

// Driver is a scanner that sends readings until ctx is cancelled. Run
// returns nil on cancellation; it handles unplugging and reconnection
// itself and returns an error only when it cannot go on at all.
type Driver interface {
	Run(ctx context.Context, out chan<- Reading) error
}

// ConditionKey is the health condition a driver raises while device name is
// not usable.
func ConditionKey(name string) string { return "device." + name + ".disconnected" }

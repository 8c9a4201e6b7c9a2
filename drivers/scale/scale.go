// Package scale defines what every parcel scale driver produces. Drivers
// know nothing of MQTT or SQLite: they own their device and send typed
// readings on a channel.
package scale

import (
	"context"
	"fmt"
	"time"
)

// Unit is a unit of weight as the API spells it.
type Unit string

// Units.
const (
	Milligram Unit = "mg"
	Gram      Unit = "g"
	Kilogram  Unit = "kg"
	Ounce     Unit = "oz"
	Pound     Unit = "lb"
	Carat     Unit = "ct"
	TroyOunce Unit = "ozt"
	Unknown   Unit = ""
)

// Status is what the scale says about its reading.
type Status string

// Statuses. Only StatusStable readings carry a weight to record.
const (
	StatusStable      Status = "stable"
	StatusMotion      Status = "motion"
	StatusZero        Status = "zero"
	StatusUnderZero   Status = "under_zero"
	StatusOverload    Status = "over_capacity"
	StatusFault       Status = "fault"
	StatusCalibration Status = "needs_calibration"
	StatusRezero      Status = "needs_rezero"
)

// Reading is one weight report.
type Reading struct {
	Device string
	// Value is the weight in Unit; zero unless the status carries a weight.
	Value float64
	Unit  Unit
	// Stable is true when the scale reports a settled weight (a stable zero
	// is stable too).
	Stable bool
	Status Status
	At     time.Time
}

// String formats the reading for logs and probes, e.g. "1.25 kg stable".
func (r Reading) String() string {
	return fmt.Sprintf("%g %s %s", r.Value, r.Unit, r.Status)
}

// Grams converts the weight to grams; ok is false for an unknown unit.
func (r Reading) Grams() (g float64, ok bool) {
	switch r.Unit {
	case Milligram:
		return r.Value / 1000, true
	case Gram:
		return r.Value, true
	case Kilogram:
		return r.Value * 1000, true
	case Ounce:
		return r.Value * 28.349523125, true
	case Pound:
		return r.Value * 453.59237, true
	case Carat:
		return r.Value * 0.2, true
	case TroyOunce:
		return r.Value * 31.1034768, true
	}
	return 0, false
}

// Driver is a scale that sends readings until ctx is cancelled. Run
// returns nil on cancellation; it handles unplugging and reconnection
// itself.
type Driver interface {
	Run(ctx context.Context, out chan<- Reading) error
}

// Package health is the one model of what is wrong with the appliance. Every
// subsystem reports named warnings with a severity; the log, the status page,
// telemetry and alerts all read from the same Tracker.
package health

import (
	"sort"
	"sync"
	"time"

	"github.com/mailroomd/mailroomd/internal/clock"
)

// Severity ranks a warning.
type Severity int

// Severities, from least to most severe.
const (
	Info Severity = iota
	Warning
	Critical
)

// String names the severity as the API spells it.
func (s Severity) String() string {
	switch s {
	case Critical:
		return "critical"
	case Warning:
		return "warning"
	default:
		return "info"
	}
}

// Condition is one active warning.
type Condition struct {
	// Key is stable and names what is wrong, e.g. "uplink.disconnected" or
	// "device.dock-scanner.disconnected".
	Key      string
	Severity Severity
	Message  string
	Since    time.Time
}

// Reporter is what subsystems need to report their state.
type Reporter interface {
	// Set raises or updates the condition named key.
	Set(key string, sev Severity, msg string)
	// Clear removes the condition named key, if raised.
	Clear(key string)
}

// Tracker holds the active conditions.
type Tracker struct {
	mu     sync.Mutex
	clock  clock.Clock
	active map[string]Condition
	// OnChange, if set before use, is called (without the lock held) when a
	// condition is raised, changes its message or severity, or clears.
	onChange func(c Condition, cleared bool)
	devices  map[string]*deviceInfo
}

var _ Reporter = (*Tracker)(nil)

// NewTracker returns an empty tracker. onChange may be nil.
func NewTracker(c clock.Clock, onChange func(c Condition, cleared bool)) *Tracker {
	return &Tracker{clock: c, active: map[string]Condition{}, onChange: onChange}
}

// Set raises or updates a condition.
func (t *Tracker) Set(key string, sev Severity, msg string) {
	t.mu.Lock()
	old, ok := t.active[key]
	if ok && old.Severity == sev && old.Message == msg {
		t.mu.Unlock()
		return
	}
	c := Condition{Key: key, Severity: sev, Message: msg, Since: t.clock.Now()}
	if ok {
		c.Since = old.Since
	}
	t.active[key] = c
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange(c, false)
	}
}

// Clear removes a condition.
func (t *Tracker) Clear(key string) {
	t.mu.Lock()
	c, ok := t.active[key]
	delete(t.active, key)
	t.mu.Unlock()
	if ok && t.onChange != nil {
		t.onChange(c, true)
	}
}

// Active returns the active conditions, most severe first.
func (t *Tracker) Active() []Condition {
	t.mu.Lock()
	out := make([]Condition, 0, len(t.active))
	for _, c := range t.active {
		out = append(out, c)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Severity != out[j].Severity {
			return out[i].Severity > out[j].Severity
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// Discard is a Reporter that forgets everything.
type Discard struct{}

var _ Reporter = Discard{}

// Set does nothing.
func (Discard) Set(string, Severity, string) {}

// Clear does nothing.
func (Discard) Clear(string) {}

// Package clock abstracts the wall clock so that tests can move time at will.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time.
type Clock interface {
	Now() time.Time
}

// Real is the system clock.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Offset is a clock that runs at the pace of another clock but is shifted by
// an adjustable offset. The daemon uses it to simulate wall-clock jumps in
// tests without touching the system clock.
type Offset struct {
	mu     sync.Mutex
	base   Clock
	offset time.Duration
}

var _ Clock = (*Offset)(nil)

// NewOffset returns a clock that reads base shifted by offset.
func NewOffset(base Clock, offset time.Duration) *Offset {
	return &Offset{base: base, offset: offset}
}

// Now returns base.Now() plus the current offset.
func (o *Offset) Now() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.base.Now().Add(o.offset)
}

// Set replaces the offset.
func (o *Offset) Set(d time.Duration) {
	o.mu.Lock()
	o.offset = d
	o.mu.Unlock()
}

// Fake is a manually driven clock for tests.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Set moves the fake clock to t, which may be in the past.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

// Advance moves the fake clock by d, which may be negative.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

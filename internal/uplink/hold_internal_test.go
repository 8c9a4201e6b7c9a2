package uplink

import (
	"context"
	"testing"
	"time"
)

// holdForPerson: no hold without a person waiting; a hold ends when the
// person is answered, when the drain stops, or after holdMax; after a
// hold, none for four times as long.
func TestHoldForPerson(t *testing.T) {
	ctx := context.Background()
	never := make(chan struct{}) // a person waiting who is never answered
	answered := make(chan struct{})
	close(answered)
	waitingOn := func(ch chan struct{}) func() <-chan struct{} {
		return func() <-chan struct{} { return ch }
	}

	// Without the option, or with nobody waiting: no hold.
	for _, p := range []*Publisher{{}, {opts: Options{PersonWaiting: func() <-chan struct{} { return nil }}}} {
		if next := p.holdForPerson(ctx, time.Time{}); !next.IsZero() {
			t.Fatalf("nobody waiting: next hold at %v, want no change", next)
		}
	}

	// A limit of 20 s: only the answer, or the end of the drain, ends
	// these holds at once.
	p := &Publisher{holdMax: 20 * time.Second, opts: Options{PersonWaiting: waitingOn(answered)}}
	began := time.Now()
	p.holdForPerson(ctx, time.Time{})
	p.opts.PersonWaiting = waitingOn(never)
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	p.holdForPerson(stopped, time.Time{})
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("holds for an answered person and a stopped drain took %v", took)
	}

	// Before notBefore a person waiting is not waited for.
	notBefore := time.Now().Add(time.Hour)
	if got := p.holdForPerson(ctx, notBefore); !got.Equal(notBefore) {
		t.Fatalf("within the gap: next hold at %v, want %v", got, notBefore)
	}

	// Someone waiting the whole time: the hold lasts holdMax, and the
	// next may come after four times as long.
	p.holdMax = 0
	began = time.Now()
	next := p.holdForPerson(ctx, time.Time{})
	if took := time.Since(began); took < holdMax {
		t.Fatalf("hold of %v while a person waited; want %v", took, holdMax)
	}
	if gap := next.Sub(began); gap < (1+holdGapFactor)*holdMax {
		t.Fatalf("next hold %v after the last began; want at least %v", gap, (1+holdGapFactor)*holdMax)
	}
}

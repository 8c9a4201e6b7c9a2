package uplink

import (
	"sync/atomic"
	"testing"
	"time"
)

// holdForPerson: no hold without a person waiting; a hold ends when the
// person is answered, or after holdMax; after a hold, none for holdGap.
func TestHoldForPerson(t *testing.T) {
	var calls, answerAfter atomic.Int32
	waiting := func() bool { return calls.Add(1) <= answerAfter.Load() }
	p := &Publisher{opts: Options{PersonWaiting: waiting}}

	// Nobody waiting: no hold, and the next may come at once.
	answerAfter.Store(0)
	if next := p.holdForPerson(time.Time{}); !next.IsZero() {
		t.Fatalf("nobody waiting: next hold at %v, want no change", next)
	}

	// Answered on the third look: the hold ends there, well before holdMax.
	calls.Store(0)
	answerAfter.Store(2)
	began := time.Now()
	next := p.holdForPerson(time.Time{})
	if c := calls.Load(); c != 3 {
		t.Fatalf("%d looks; want the hold to end at the third, which found nobody waiting", c)
	}
	if next.Sub(began) < holdGap {
		t.Fatalf("after a hold the next may come %v later; want at least %v", next.Sub(began), holdGap)
	}

	// Within holdGap of a hold, a person waiting is not waited for.
	calls.Store(0)
	answerAfter.Store(1 << 30)
	if got := p.holdForPerson(next); !got.Equal(next) || calls.Load() != 1 {
		t.Fatalf("within the gap: next %v (want %v), %d looks (want 1)", got, next, calls.Load())
	}

	// Someone waiting the whole time: the hold lasts holdMax, not longer
	// than the drain can bear.
	began = time.Now()
	p.holdForPerson(time.Time{})
	if took := time.Since(began); took < holdMax {
		t.Fatalf("hold of %v while a person waited; want %v", took, holdMax)
	}

	// Without the option, nothing is held.
	p = &Publisher{}
	if next := p.holdForPerson(time.Time{}); !next.IsZero() {
		t.Fatal("held without PersonWaiting")
	}
}

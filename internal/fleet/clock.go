package fleet

import (
	"fmt"
	"time"

	"github.com/mailroomd/mailroomd/internal/health"
)

// Clock conditions.
const (
	ConditionClockUnsynced = "clock.unsynchronized"
	ConditionClockJumped   = "clock.jumped"
)

// clockWatch notices wall-clock jumps: the wall clock moving by a
// different amount than the monotonic clock between two looks.
type clockWatch struct {
	lastWall time.Time // with its monotonic reading
	jumpedAt time.Time
}

// checkClock raises the clock conditions.
func (f *Fleet) checkClock(now time.Time) {
	h := f.opts.Health
	if synced, known := clockSynchronized(); known {
		toggle(h, ConditionClockUnsynced, !synced, health.Warning,
			"the system clock is not synchronised (no NTP): event times may be wrong; ids and seqs are unaffected")
	}
	real := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	cw := &f.clockWatch
	if !cw.lastWall.IsZero() {
		mono := real.Sub(cw.lastWall)                   // monotonic
		wall := real.Round(0).Sub(cw.lastWall.Round(0)) // wall clock
		if d := wall - mono; d > 2*time.Second || d < -2*time.Second {
			cw.jumpedAt = now
			h.Set(ConditionClockJumped, health.Warning, fmt.Sprintf("the system clock jumped by %s", d.Round(time.Second)))
		}
	}
	cw.lastWall = real
	if !cw.jumpedAt.IsZero() && now.Sub(cw.jumpedAt) > 15*time.Minute {
		cw.jumpedAt = time.Time{}
		h.Clear(ConditionClockJumped)
	}
}

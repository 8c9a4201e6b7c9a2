package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/mailroomd/mailroomd/internal/health"
)

// probeState tracks the synthetic round trip: a message the box publishes
// to its own probe topic and receives back through the broker.
type probeState struct {
	outstanding string    // id of the probe in flight
	sentAt      time.Time // when it was sent
	lastRTT     time.Duration
	failures    int
}

type probeMsg struct {
	ID   string    `json:"id"`
	Sent time.Time `json:"sent"`
}

func (f *Fleet) sendProbe(ctx context.Context) {
	now := f.opts.Clock.Now()
	f.mu.Lock()
	if f.probe.outstanding != "" {
		f.mu.Unlock()
		return // checkProbe decides about the one in flight
	}
	id := fmt.Sprintf("%d", now.UnixNano())
	f.probe.outstanding, f.probe.sentAt = id, now
	f.mu.Unlock()
	b, _ := json.Marshal(probeMsg{ID: id, Sent: now})
	if err := f.opts.Link.Publish(ctx, TopicProbe, b, false); err != nil {
		f.log.Debug("probe not sent", "err", err)
	}
}

// probeReturned takes a probe back from the broker.
func (f *Fleet) probeReturned(payload []byte) {
	var m probeMsg
	if json.Unmarshal(payload, &m) != nil {
		return
	}
	now := f.opts.Clock.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.ID != f.probe.outstanding {
		return // late or foreign
	}
	f.probe.lastRTT = now.Sub(f.probe.sentAt)
	f.probe.outstanding, f.probe.failures = "", 0
	h := f.opts.Health
	h.Clear(ConditionProbeFailed)
	toggle(h, ConditionProbeSlow, f.opts.Thresholds.ProbeSlowerThan > 0 && f.probe.lastRTT > f.opts.Thresholds.ProbeSlowerThan,
		health.Warning, fmt.Sprintf("a round trip through the broker took %s (baseline %s)", f.probe.lastRTT.Round(time.Millisecond), f.opts.Thresholds.ProbeSlowerThan))
}

// checkProbe fails a probe that did not come back in time.
func (f *Fleet) checkProbe(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.probe.outstanding == "" || now.Sub(f.probe.sentAt) < f.opts.ProbeTimeout {
		return
	}
	f.probe.outstanding = ""
	f.probe.failures++
	f.opts.Health.Set(ConditionProbeFailed, health.Critical,
		fmt.Sprintf("a probe through the broker did not come back within %s (%d in a row)", f.opts.ProbeTimeout, f.probe.failures))
}

// ProbeRTT returns the last round-trip time.
func (f *Fleet) ProbeRTT() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probe.lastRTT
}

package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/disk"

	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// Alert is published on {prefix}/{id}/alerts when raised and when cleared.
type Alert struct {
	V         int        `json:"v"`
	Key       string     `json:"key"`
	Severity  string     `json:"severity"`
	Category  string     `json:"category"`
	Text      string     `json:"text"`
	RaisedAt  time.Time  `json:"raised_at"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
}

// Categories of alerts.
const (
	Infrastructure = "infrastructure"
	Application    = "application"
	Security       = "security"
)

// Conditions the fleet raises itself, from its own checks.
const (
	ConditionPending     = "queue.pending_high"
	ConditionOldest      = "queue.oldest_pending"
	ConditionDisk        = "disk.free_low"
	ConditionCert        = "security.cert_expiring"
	ConditionProbeFailed = "probe.failed"
	ConditionProbeSlow   = "probe.slow"
)

// classify gives a condition its alert category and how long it must last
// before it is an alert.
func (f *Fleet) classify(key string) (category string, after time.Duration) {
	th := f.opts.Thresholds
	switch {
	case key == uplink.ConditionDisconnected:
		return Infrastructure, th.BrokerUnreachable
	case key == uplink.ConditionUnsubscribed:
		return Infrastructure, 0
	case strings.HasPrefix(key, "device.") && (strings.HasSuffix(key, ".disconnected") || strings.HasSuffix(key, ".not_answering")):
		return Infrastructure, th.DeviceDisconnected
	case strings.HasPrefix(key, "device."):
		return Application, 0 // printer out of paper, head open, …
	case strings.HasPrefix(key, "security."):
		return Security, 0
	case strings.HasPrefix(key, "disk.") || strings.HasPrefix(key, "probe.") || strings.HasPrefix(key, "clock."):
		return Infrastructure, 0
	}
	return Application, 0
}

// evaluate runs the built-in checks, turns lasting conditions into alerts,
// and publishes every alert raised or cleared since the last evaluation.
func (f *Fleet) evaluate(ctx context.Context) {
	if f.frozen.Load() {
		return
	}
	now := f.opts.Clock.Now()
	h, th := f.opts.Health, f.opts.Thresholds
	if st, err := f.opts.Store.Stats(ctx); err == nil {
		toggle(h, ConditionPending, th.PendingAbove > 0 && st.Pending > th.PendingAbove, health.Warning,
			fmt.Sprintf("%d events wait for the cloud (threshold %d)", st.Pending, th.PendingAbove))
		age := time.Duration(0)
		if !st.OldestPending.IsZero() {
			age = now.Sub(st.OldestPending)
		}
		toggle(h, ConditionOldest, th.OldestPending > 0 && age > th.OldestPending, health.Warning,
			fmt.Sprintf("the oldest unsent event is %s old (threshold %s)", age.Round(time.Second), th.OldestPending))
	}
	if du, err := disk.UsageWithContext(ctx, f.opts.BufferDir); f.opts.BufferDir != "" && err == nil {
		free := int64(du.Free >> 20)
		toggle(h, ConditionDisk, th.DiskFreeBelowMB > 0 && free < th.DiskFreeBelowMB, health.Critical,
			fmt.Sprintf("%d MB free on the buffer's volume (threshold %d MB)", free, th.DiskFreeBelowMB))
	}
	if exp := certExpiry(f.opts.CertFile); !exp.IsZero() {
		left := exp.Sub(now)
		toggle(h, ConditionCert, th.CertExpiresWithin > 0 && left < th.CertExpiresWithin, health.Warning,
			fmt.Sprintf("the client certificate expires on %s (in %s)", exp.Format(time.DateOnly), left.Round(time.Hour)))
	}
	f.checkProbe(now)
	f.checkClock(now)
	f.mu.Lock()
	if !f.rejected.IsZero() && now.Sub(f.rejected) > 15*time.Minute {
		f.rejected = time.Time{}
		h.Clear(ConditionRejected)
	}
	f.mu.Unlock()

	f.updateAlerts(ctx, now)
	f.flushAlerts(ctx)
}

// updateAlerts turns the health model's conditions into alert changes and
// records each in the store before it counts: an alert is raised when its
// condition has lasted its threshold, stays raised while the condition is
// active, and is cleared once the condition is gone (but not within the
// settle time after a start or a config switch). A change the store does
// not take is tried again at the next evaluation.
func (f *Fleet) updateAlerts(ctx context.Context, now time.Time) {
	active := map[string]health.Condition{}
	for _, c := range f.opts.Health.Active() {
		active[c.Key] = c
	}
	f.mu.Lock()
	var changes []Alert
	for key, c := range active {
		if a, ok := f.alerts[key]; ok {
			a.Text, a.Severity = c.Message, c.Severity.String() // updated quietly, not raised again
			continue
		}
		cat, after := f.classify(key)
		if now.Sub(c.Since) < after {
			continue
		}
		changes = append(changes, Alert{V: 1, Key: key, Severity: c.Severity.String(), Category: cat, Text: c.Message, RaisedAt: now.UTC()})
	}
	for key, a := range f.alerts {
		if _, ok := active[key]; ok || now.Before(f.held[key]) {
			continue
		}
		cleared := now.UTC()
		done := *a
		done.ClearedAt = &cleared
		changes = append(changes, done)
	}
	f.mu.Unlock()

	sort.Slice(changes, func(i, j int) bool { return changes[i].Key < changes[j].Key })
	for _, a := range changes {
		b, _ := json.Marshal(a)
		if _, err := f.opts.Store.SetAlert(ctx, a.Key, b, a.ClearedAt == nil); err != nil {
			f.log.Error("alert change not recorded; tried again", "key", a.Key, "err", err)
			continue
		}
		f.mu.Lock()
		if a.ClearedAt == nil {
			f.alerts[a.Key] = &a
		} else {
			delete(f.alerts, a.Key)
		}
		f.mu.Unlock()
		if a.ClearedAt == nil {
			f.log.Warn("alert raised", "key", a.Key, "severity", a.Severity, "category", a.Category, "text", a.Text)
		} else {
			f.log.Info("alert cleared", "key", a.Key)
		}
	}
}

func toggle(h *health.Tracker, key string, on bool, sev health.Severity, msg string) {
	if on {
		h.Set(key, sev, msg)
	} else {
		h.Clear(key)
	}
}

// restoreAlerts reads the alerts active when the box last stopped.
func (f *Fleet) restoreAlerts(ctx context.Context) error {
	states, err := f.opts.Store.Alerts(ctx)
	if err != nil {
		return fmt.Errorf("restore alerts: %w", err)
	}
	for _, st := range states {
		if !st.Active {
			continue
		}
		var a Alert
		if err := json.Unmarshal(st.Body, &a); err != nil {
			f.log.Warn("stored alert unreadable; it is raised again if its condition holds", "key", st.Key, "err", err)
			continue
		}
		f.alerts[st.Key] = &a
	}
	return nil
}

// Settle keeps the alerts active now for the settle time even when their
// conditions are gone: New calls it for the alerts restored from the
// store, and the daemon after a config switch, which drops and re-adds the
// devices whose conditions raised them. Alerts raised later clear as soon
// as their condition does.
func (f *Fleet) Settle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.opts.Clock.Now()
	f.held = map[string]time.Time{}
	for key := range f.alerts {
		f.held[key] = now.Add(f.settleFor(key))
	}
}

// settleFor is how long an alert restored or carried over is kept without
// its condition: long enough for the check that raises it to run again. A
// probe alert waits for the next probe and its timeout.
func (f *Fleet) settleFor(key string) time.Duration {
	d := f.opts.Settle
	if strings.HasPrefix(key, "probe.") && f.opts.ProbeInterval > 0 {
		d += f.opts.ProbeInterval + f.opts.ProbeTimeout
	}
	return d
}

// Freeze stops alert evaluation for good: called when the daemon stops or
// replaces this fleet link, before the devices are stopped, so that their
// conditions going away with them is not taken for their causes going
// away.
func (f *Fleet) Freeze() { f.frozen.Store(true) }

// flushAlerts publishes the alert changes that wait for the link, oldest
// first, each key in its latest state only, and records each as published.
// It holds no lock the rest of the fleet needs while it publishes; when a
// flush is already under way it returns at once.
func (f *Fleet) flushAlerts(ctx context.Context) {
	if !f.flushing.TryLock() {
		return
	}
	defer f.flushing.Unlock()
	states, err := f.opts.Store.Alerts(ctx)
	if err != nil {
		f.log.Warn("alert outbox unreadable", "err", err)
		return
	}
	for _, st := range states {
		if !st.Unsent {
			continue
		}
		if err := f.opts.Link.Publish(ctx, TopicAlerts, st.Body, false); err != nil {
			return // the rest waits for the next connection
		}
		if err := f.opts.Store.AlertSent(ctx, st.Key, st.Version); err != nil {
			f.log.Warn("alert published but not recorded as such; it may be published again", "key", st.Key, "err", err)
		}
	}
}

// Active returns the active alerts, by key.
func (f *Fleet) Active() []Alert {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Alert, 0, len(f.alerts))
	for _, a := range f.alerts {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

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

	want := map[string]health.Condition{}
	for _, c := range h.Active() {
		if _, after := f.classify(c.Key); now.Sub(c.Since) >= after {
			want[c.Key] = c
		}
	}
	f.mu.Lock()
	var changes []Alert
	for key, c := range want {
		if a, ok := f.alerts[key]; ok {
			a.Text, a.Severity = c.Message, c.Severity.String() // updated quietly, not raised again
			continue
		}
		cat, _ := f.classify(key)
		a := &Alert{V: 1, Key: key, Severity: c.Severity.String(), Category: cat, Text: c.Message, RaisedAt: now.UTC()}
		f.alerts[key] = a
		changes = append(changes, *a)
	}
	for key, a := range f.alerts {
		if _, ok := want[key]; ok {
			continue
		}
		cleared := now.UTC()
		done := *a
		done.ClearedAt = &cleared
		delete(f.alerts, key)
		changes = append(changes, done)
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Key < changes[j].Key })
	for _, a := range changes {
		b, _ := json.Marshal(a)
		f.outbox = append(f.outbox, b)
		if a.ClearedAt == nil {
			f.log.Warn("alert raised", "key", a.Key, "severity", a.Severity, "category", a.Category, "text", a.Text)
		} else {
			f.log.Info("alert cleared", "key", a.Key)
		}
	}
	f.mu.Unlock()
	f.flushAlerts(ctx)
}

func toggle(h *health.Tracker, key string, on bool, sev health.Severity, msg string) {
	if on {
		h.Set(key, sev, msg)
	} else {
		h.Clear(key)
	}
}

// flushAlerts publishes queued alert changes in order; what the link
// refuses stays queued for the next connection.
func (f *Fleet) flushAlerts(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.outbox) > 0 {
		if err := f.opts.Link.Publish(ctx, TopicAlerts, f.outbox[0], false); err != nil {
			return
		}
		f.outbox = f.outbox[1:]
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

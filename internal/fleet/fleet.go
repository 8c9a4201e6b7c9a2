// Package fleet connects a box to central IT over the uplink's MQTT
// connection: it publishes telemetry and alerts, runs a synthetic round
// trip through the broker, and runs remote commands, each authenticated as
// a signed envelope (package envelope), refused when replayed, answered on
// a result topic and recorded as an audit event.
package fleet

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// Link is the uplink as the fleet uses it.
type Link interface {
	Publish(ctx context.Context, suffix string, payload []byte, retain bool) error
	// Republish publishes events again as the uplink sends them (single,
	// or batched), and returns how many were acknowledged.
	Republish(ctx context.Context, payloads [][]byte) (int, error)
	State() uplink.LinkState
}

var _ Link = (*uplink.Publisher)(nil)

// Store is the event buffer as the fleet uses it.
type Store interface {
	Append(ctx context.Context, ev event.Event) (event.Event, error)
	UseNonce(ctx context.Context, nonce string, expires time.Time) (bool, error)
	BySeq(ctx context.Context, from, to int64) ([]store.Record, error)
	Stats(ctx context.Context) (store.Stats, error)
	SetAlert(ctx context.Context, key string, body []byte, active bool) (int64, error)
	AlertSent(ctx context.Context, key string, version int64) error
	Alerts(ctx context.Context) ([]store.AlertState, error)
}

var _ Store = (*store.Outbox)(nil)

// Command runs one remote command and returns its result.
type Command func(ctx context.Context, args json.RawMessage) (any, error)

// Thresholds of the built-in alert rules.
type Thresholds struct {
	BrokerUnreachable  time.Duration
	PendingAbove       int64
	OldestPending      time.Duration
	DiskFreeBelowMB    int64
	DeviceDisconnected time.Duration
	CertExpiresWithin  time.Duration
	ProbeSlowerThan    time.Duration
}

// Options configure the fleet link of one box.
type Options struct {
	Appliance, Site, Version string
	// Keys verify remote instructions; empty refuses them all.
	Keys   map[string]ed25519.PublicKey
	Link   Link
	Store  Store
	Health *health.Tracker
	// Commands beyond the built-in ping and resend.
	Commands map[string]Command
	// OnConfig is given a verified desired config and returns the outcome.
	OnConfig func(ctx context.Context, p envelope.Payload, keyID string) ConfigOutcome
	// Reported returns the last config report, published retained on every
	// connection.
	Reported func() ([]byte, bool)
	// ConfigTried reports whether a desired config version was considered
	// before (nil: none was). A retained config of such a version that has
	// expired since is passed over like any retained config seen again.
	ConfigTried func(version int64) bool
	// ConfigInUse is the remote config version in use (0: the local file),
	// for the report of a config refused before it was read.
	ConfigInUse func() int64
	// ConfigRefused records a signed config refused as expired: its version
	// counts as tried from then on. It returns the report to publish.
	ConfigRefused func(version int64, reason string) []byte
	// Directories keeps pushed recipient directories; nil refuses none
	// and applies none (the parts are passed over).
	Directories Directories

	TelemetryInterval time.Duration
	ProbeInterval     time.Duration
	ProbeTimeout      time.Duration
	Thresholds        Thresholds
	// BufferDir is the directory whose volume's free space is watched.
	BufferDir string
	// CertFile is the client certificate whose expiry is watched.
	CertFile string
	// Ingested counts committed scans, for events per minute.
	Ingested func() int64
	// Latency returns the last publish-to-PUBACK latency.
	Latency func() time.Duration
	// Parcels counts the open parcels and the overdue ones among them.
	Parcels func(ctx context.Context) (open, overdue int64, err error)
	// Started is when the daemon started (uptime); zero means now.
	Started time.Time
	// Settle is how long after New and after Settle an active alert whose
	// condition is absent is kept before it is cleared: the subsystems that
	// raise conditions need a moment after a start or a config switch to
	// raise them again. Zero means DefaultSettle.
	Settle time.Duration
	Clock  clock.Clock
	Log    *slog.Logger
}

// DefaultSettle is the default of Options.Settle.
const DefaultSettle = 15 * time.Second

// Fleet is the box's side of fleet management.
type Fleet struct {
	opts     Options
	log      *slog.Logger
	verifier *envelope.Verifier
	started  time.Time
	inbox    chan message
	parts    chan message // directory push parts

	// flushing is held by the one flush of the alert outbox under way.
	flushing sync.Mutex
	frozen   atomic.Bool // Freeze: no more alert evaluations

	mu           sync.Mutex
	alerts       map[string]*Alert    // active, by key
	held         map[string]time.Time // alerts kept without their condition until then (Settle)
	probe        probeState
	rejected     time.Time
	clockWatch   clockWatch
	lastIngested int64
	lastIngestAt time.Time
	rate         float64

	// collecting is the directory push whose parts are arriving;
	// outOfWindow the last version refused for its validity window (Run's
	// goroutine only).
	collecting  *dirPush
	outOfWindow int64
	// connected tells Run that the uplink connected: it publishes the last
	// directory report, in order with the reports it makes itself.
	connected chan struct{}
}

type message struct {
	topic   string
	payload []byte
	// retained: delivered because it was retained, not published just now.
	retained bool
	// tooLarge is the size of a command or config over envelope.MaxSize,
	// whose bytes are not kept: it is refused as such.
	tooLarge int
}

// errTooLarge is the refusal of an envelope of n bytes.
func errTooLarge(n int) error {
	return fmt.Errorf("%w: %d bytes (at most %d)", envelope.ErrTooLarge, n, envelope.MaxSize)
}

// Topic suffixes below {prefix}/{id}/.
const (
	TopicTelemetry = "telemetry"
	TopicAlerts    = "alerts"
	TopicProbe     = "probe"
	TopicCommand   = "cmd"
)

// TopicConfigDesired and TopicConfigReported carry remote configuration.
const (
	TopicConfigDesired  = "config/desired"
	TopicConfigReported = "config/reported"
)

// ConfigOutcome is what became of a desired config.
type ConfigOutcome struct {
	Status string
	Errors []string
	// Report is the message for config/reported.
	Report []byte
}

// ConditionRejected is raised when a remote instruction was refused.
const ConditionRejected = "security.rejected_instruction"

// New returns the fleet link with the alerts that were active when the
// last one stopped; Subscriptions go into the uplink's options and Run
// must run.
func New(ctx context.Context, opts Options) (*Fleet, error) {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 10 * time.Second
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Started.IsZero() {
		opts.Started = opts.Clock.Now()
	}
	f := &Fleet{opts: opts, log: opts.Log, started: opts.Started, inbox: make(chan message, 64),
		parts: make(chan message, envelope.MaxDirectoryParts), connected: make(chan struct{}, 1),
		alerts: map[string]*Alert{}}
	f.verifier = &envelope.Verifier{Keys: opts.Keys, Appliance: opts.Appliance, Site: opts.Site,
		Now: opts.Clock.Now, Skew: 5 * time.Minute}
	if err := f.restoreAlerts(ctx); err != nil {
		return nil, err
	}
	f.Settle()
	return f, nil
}

// Subscriptions are the topics the fleet receives.
func (f *Fleet) Subscriptions() []uplink.Subscription {
	take := func(topic string, payload []byte, retained bool) {
		m := message{topic: topic, retained: retained}
		inbox := f.inbox
		switch {
		case len(payload) <= envelope.MaxSize:
			m.payload = append([]byte(nil), payload...)
		case strings.Contains(topic, "/"+TopicCommand+"/") || strings.HasSuffix(topic, "/"+TopicConfigDesired) && !retained:
			// Refused, with an answer. A retained one would be refused
			// again at every connection: it is only logged.
			m.tooLarge = len(payload)
		default:
			f.log.Warn("remote instruction dropped: too large", "topic", topic, "bytes", len(payload))
			return
		}
		if strings.Contains(topic, "/"+TopicDirectoryDesired+"/") {
			inbox = f.parts // a push's parts come in a burst
		}
		select {
		case inbox <- m:
		default:
			f.log.Warn("remote instruction dropped: too many queued", "topic", topic)
		}
	}
	subs := []uplink.Subscription{{Filter: TopicCommand + "/+", Handler: take}, {Filter: TopicProbe, Handler: take},
		{Filter: TopicConfigDesired, Handler: take}}
	if f.opts.Directories != nil {
		subs = append(subs, uplink.Subscription{Filter: TopicDirectoryDesired + "/+", Handler: take})
	}
	return subs
}

// OnConnect publishes what waited for the link: alert changes made while
// offline, in order.
func (f *Fleet) OnConnect() {
	f.flushAlerts(context.Background())
	if f.opts.Reported != nil {
		if b, ok := f.opts.Reported(); ok {
			f.PublishReport(context.Background(), b)
		}
	}
	select {
	case f.connected <- struct{}{}:
	default: // one is pending already
	}
}

// PublishReport publishes a config report, retained.
func (f *Fleet) PublishReport(ctx context.Context, b []byte) {
	if err := f.opts.Link.Publish(ctx, TopicConfigReported, b, true); err != nil {
		f.log.Debug("config report not published", "err", err)
	}
}

// Run handles remote instructions and publishes telemetry and alerts until
// ctx is cancelled.
func (f *Fleet) Run(ctx context.Context) error {
	tick := func(d time.Duration) <-chan time.Time {
		if d <= 0 {
			return nil
		}
		t := time.NewTicker(d)
		go func() { <-ctx.Done(); t.Stop() }()
		return t.C
	}
	telemetry := tick(f.opts.TelemetryInterval)
	probe := tick(f.opts.ProbeInterval)
	evaluate := tick(2 * time.Second)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-f.inbox:
			f.handle(ctx, m)
		case m := <-f.parts:
			f.handle(ctx, m)
		case <-f.connected:
			f.publishLastDirectoryReport(ctx)
		case <-telemetry:
			f.publishTelemetry(ctx)
		case <-probe:
			f.sendProbe(ctx)
		case <-evaluate:
			f.evaluate(ctx)
			f.dropStaleParts()
		}
	}
}

func (f *Fleet) handle(ctx context.Context, m message) {
	i := strings.Index(m.topic, "/"+TopicCommand+"/")
	switch {
	case strings.HasSuffix(m.topic, "/"+TopicProbe):
		f.probeReturned(m.payload)
	case strings.HasSuffix(m.topic, "/"+TopicConfigDesired):
		f.desiredConfig(ctx, m.payload, m.retained, m.tooLarge)
	case strings.Contains(m.topic, "/"+TopicDirectoryDesired+"/"):
		f.directoryPart(ctx, m.topic, m.payload, m.retained)
	case i >= 0:
		f.command(ctx, m.topic[i+len(TopicCommand)+2:], m.payload, m.tooLarge)
	}
}

// Result is published on cmd/{name}/result.
type Result struct {
	V      int       `json:"v"`
	ID     string    `json:"id,omitempty"`
	Name   string    `json:"name"`
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	Result any       `json:"result,omitempty"`
	TS     time.Time `json:"ts"`
}

type requestIDKey struct{}

// RequestID is the id of the signed command a Command runs for ("" outside
// one). A command whose outcome is published later (update) reports it
// with the same id.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// command verifies and runs one command.
func (f *Fleet) command(ctx context.Context, name string, msg []byte, tooLarge int) {
	res := Result{V: 1, Name: name}
	audit := &event.Audit{Action: "command", Name: name}
	p, keyID, err := envelope.Payload{}, "", errTooLarge(tooLarge)
	if tooLarge == 0 {
		p, keyID, err = f.open(ctx, name, msg)
	}
	res.ID, audit.RequestID, audit.KeyID = p.ID, p.ID, keyID
	if err != nil {
		res.Error, audit.Outcome, audit.Reason = err.Error(), "rejected", err.Error()
		f.log.Warn("remote command rejected", "name", name, "key_id", keyID, "reason", err)
		f.mu.Lock()
		f.rejected = f.opts.Clock.Now()
		f.mu.Unlock()
		f.opts.Health.Set(ConditionRejected, health.Warning, fmt.Sprintf("rejected remote command %q: %v", name, err))
	} else {
		out, err := f.run(context.WithValue(ctx, requestIDKey{}, p.ID), name, p.Args)
		if err != nil {
			res.Error, audit.Outcome, audit.Reason = err.Error(), "failed", err.Error()
			f.log.Warn("remote command failed", "name", name, "id", p.ID, "key_id", keyID, "err", err)
		} else {
			res.OK, res.Result, audit.Outcome = true, out, "applied"
			f.log.Info("remote command done", "name", name, "id", p.ID, "key_id", keyID)
		}
	}
	f.audit(ctx, audit)
	res.TS = f.opts.Clock.Now().UTC()
	b, _ := json.Marshal(res)
	if err := f.opts.Link.Publish(ctx, TopicCommand+"/"+name+"/result", b, false); err != nil {
		f.log.Warn("command result not published", "name", name, "err", err)
	}
}

// open checks an envelope, its topic and its nonce.
func (f *Fleet) open(ctx context.Context, name string, msg []byte) (envelope.Payload, string, error) {
	if len(f.opts.Keys) == 0 {
		return envelope.Payload{}, "", errors.New("remote instructions are disabled: no fleet.public_keys configured")
	}
	p, keyID, err := f.verifier.Open(msg, envelope.KindCommand)
	if err != nil {
		return p, keyID, err
	}
	if p.Name != name {
		return p, keyID, fmt.Errorf("signed for command %q but sent to %q", p.Name, name)
	}
	fresh, err := f.opts.Store.UseNonce(ctx, p.Nonce, p.Expires)
	if err != nil {
		return p, keyID, err
	}
	if !fresh {
		return p, keyID, fmt.Errorf("replayed: nonce %q was already used", p.Nonce)
	}
	return p, keyID, nil
}

func (f *Fleet) run(ctx context.Context, name string, args json.RawMessage) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	switch name {
	case "ping":
		return map[string]any{"pong": true, "version": f.opts.Version,
			"uptime_s": int64(f.opts.Clock.Now().Sub(f.started).Seconds())}, nil
	case "resend":
		return f.resend(ctx, args)
	}
	cmd, ok := f.opts.Commands[name]
	if !ok {
		return nil, fmt.Errorf("unknown command %q", name)
	}
	return cmd(ctx, args)
}

// resend publishes the events of a seq range again, byte for byte, so the
// cloud can fill a gap it detected.
func (f *Fleet) resend(ctx context.Context, args json.RawMessage) (any, error) {
	var a struct {
		From int64 `json:"from"`
		To   int64 `json:"to"`
	}
	if err := json.Unmarshal(args, &a); err != nil || a.From < 1 || a.To < a.From || a.To-a.From >= 100000 {
		return nil, errors.New(`resend needs {"from": N, "to": M} with 1 <= N <= M and at most 100000 events`)
	}
	recs, err := f.opts.Store.BySeq(ctx, a.From, a.To)
	if err != nil {
		return nil, err
	}
	payloads := make([][]byte, len(recs))
	for i, r := range recs {
		payloads[i] = r.Payload
	}
	if n, err := f.opts.Link.Republish(ctx, payloads); err != nil {
		return nil, fmt.Errorf("resend seq %d: %w", recs[n].Seq, err)
	}
	missing := a.To - a.From + 1 - int64(len(recs))
	return map[string]int64{"resent": int64(len(recs)), "missing": missing}, nil
}

// desiredConfig verifies a desired config and hands it on. A config that
// changes nothing (the one in use, or not newer than the last tried) is
// reported and audited when it was just published; seen again as the
// retained message of every connection, it is passed over in silence.
func (f *Fleet) desiredConfig(ctx context.Context, msg []byte, retained bool, tooLarge int) {
	if len(msg) == 0 && tooLarge == 0 {
		return // the retained config was deleted
	}
	audit := &event.Audit{Action: "config"}
	var out ConfigOutcome
	p, keyID, err := envelope.Payload{}, "", error(nil)
	if tooLarge > 0 {
		err = errTooLarge(tooLarge)
	} else if len(f.opts.Keys) == 0 {
		err = errors.New("remote instructions are disabled: no fleet.public_keys configured")
	} else {
		p, keyID, err = f.verifier.Open(msg, envelope.KindConfig)
	}
	audit.KeyID, audit.Version = keyID, p.Version
	if err != nil && retained && errors.Is(err, envelope.ErrExpired) && p.Version > 0 && f.opts.ConfigTried != nil && f.opts.ConfigTried(p.Version) {
		// Signed, and seen before it expired (it was applied, or refused
		// then): the retained message of every connection since.
		return
	}
	if err != nil {
		f.log.Warn("remote config rejected", "key_id", keyID, "reason", err)
		f.mu.Lock()
		f.rejected = f.opts.Clock.Now()
		f.mu.Unlock()
		f.opts.Health.Set(ConditionRejected, health.Warning, fmt.Sprintf("rejected remote config: %v", err))
		out.Status, out.Errors = "rejected", []string{err.Error()}
		var inUse int64
		if f.opts.ConfigInUse != nil {
			inUse = f.opts.ConfigInUse()
		}
		out.Report, _ = json.Marshal(map[string]any{"v": 1, "version": p.Version, "status": "rejected",
			"errors": out.Errors, "applied_version": inUse, "ts": f.opts.Clock.Now().UTC()})
		if errors.Is(err, envelope.ErrExpired) && p.Version > 0 && f.opts.ConfigRefused != nil {
			out.Report = f.opts.ConfigRefused(p.Version, err.Error())
		}
	} else if f.opts.OnConfig == nil {
		out.Status, out.Errors = "rejected", []string{"remote configuration is not available in this mode"}
	} else {
		out = f.opts.OnConfig(ctx, p, keyID)
		f.log.Info("remote config", "version", p.Version, "key_id", keyID, "status", out.Status, "errors", strings.Join(out.Errors, "; "))
	}
	audit.Outcome = out.Status
	audit.Reason = strings.Join(out.Errors, "; ")
	if retained && (out.Status == "current" || out.Status == "ignored") {
		return // a retained config seen again: nothing happened, nothing to audit
	}
	f.audit(ctx, audit)
	if out.Report != nil {
		f.PublishReport(ctx, out.Report)
	}
}

// Audit records an audit event.
func (f *Fleet) Audit(ctx context.Context, a *event.Audit) { f.audit(ctx, a) }

func (f *Fleet) audit(ctx context.Context, a *event.Audit) {
	if _, err := f.opts.Store.Append(ctx, event.Event{Appliance: f.opts.Appliance, Site: f.opts.Site,
		Type: event.TypeAudit, Time: f.opts.Clock.Now(), Audit: a}); err != nil {
		f.log.Error("audit event not recorded", "err", err)
	}
}

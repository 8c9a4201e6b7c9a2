// Package uplink forwards committed events to the cloud over MQTT with
// mutual TLS, in order and at least once.
//
// The store is the only source of what to send: the Publisher reads unsent
// events in publish order, keeps up to Window QoS 1 publishes in flight, and
// marks an event sent only when its PUBACK arrives. After any connection
// loss it reconnects with jittered, capped backoff and resends from the
// first unacknowledged event, so the first delivery of each seq is in rising
// order and a duplicate is only ever a resend after a reconnect. paho's own
// in-memory resend and reconnect logic are deliberately not used.
package uplink

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Source is where the Publisher reads events from and records deliveries.
// *store.Outbox implements it.
type Source interface {
	Pending(ctx context.Context, after int64, limit int) ([]store.Record, error)
	MarkSent(ctx context.Context, pos []int64) error
	Notify() <-chan struct{}
	Stats(ctx context.Context) (store.Stats, error)
	// LastPos is the position of the newest event committed.
	LastPos() int64
}

var _ Source = (*store.Outbox)(nil)

// Options configure a Publisher.
type Options struct {
	// Brokers are endpoints of one broker cluster, tried in order.
	Brokers []string
	// TLS is the client TLS configuration; nil only for insecure mqtt:// brokers.
	TLS *tls.Config
	// ClientID is the appliance id.
	ClientID string
	// Site is reported in the status message.
	Site string
	// TopicPrefix is prepended to every topic, e.g. "mailroom/v1".
	TopicPrefix string
	// Version is the software version reported in the status message.
	Version string
	// ConfigVersion is the remote config version in use, reported in the
	// status message; 0 (the box's own config file) is not reported.
	// SetConfigVersion changes it.
	ConfigVersion int64
	// Started is when the daemon started, reported in the status message;
	// zero means when New was called. A config switch that replaces the
	// Publisher keeps the daemon's start.
	Started time.Time
	// Window is how many QoS 1 publishes may await their PUBACK at once.
	Window          int
	KeepAlive       time.Duration
	ConnectTimeout  time.Duration
	WriteTimeout    time.Duration
	ReconnectMin    time.Duration
	ReconnectMax    time.Duration
	ShutdownTimeout time.Duration

	Clock  clock.Clock
	Logger *slog.Logger
	Health health.Reporter
	// BatchMax > 1 packs up to that many events into one message on
	// {prefix}/{id}/events/batch (a JSON array), for brokers that limit
	// publishes per second per connection. 0 or 1: one event per message.
	BatchMax int
	// Subscriptions are (re)made on every connection.
	Subscriptions []Subscription
	// OnConnect, if set, is called after each connection is up and
	// subscribed.
	OnConnect func()
	// OnAck, if set, is called when the PUBACK for the event at pos arrives,
	// with the time from handing the publish to the client to its PUBACK.
	OnAck func(pos int64, latency time.Duration)
	// PersonWaiting, if set, returns nil when no person waits for an
	// event to be committed, and otherwise a channel closed once none
	// does (a scan or a manual entry, a custody action from the page).
	// While one does, the uplink starts no new publish of events (see
	// holdMax): the cores go to that commit first. It is called before
	// every publish, from one goroutine: it must be cheap.
	PersonWaiting func() <-chan struct{}
}

// While Options.PersonWaiting reports a commit a person waits for, the
// uplink holds new publishes of events back until that commit is answered,
// for holdMax at most, and then holds none for holdGapFactor times as long
// as it held: a steady stream of scans slows a drain by a fifth at most.
// The publishes already in flight go on meanwhile. Under a full drain on
// two cores this took the scans' commit p99 from a median of 7.5 ms to
// one of 5 ms (docs/benchmarks.md, Full load).
const (
	holdMax       = time.Millisecond
	holdGapFactor = 4
)

// Subscription is a topic filter below {prefix}/{id}/ and the function
// that receives its messages. Handlers run on the MQTT client's goroutines
// and must return quickly.
type Subscription struct {
	Filter string
	// Handler is called with each message; retained is true for a
	// retained message the broker delivers because of the subscription
	// (not one published while subscribed).
	Handler func(topic string, payload []byte, retained bool)
}

// ErrOffline is returned by Publish while no broker is connected.
var ErrOffline = errors.New("not connected to a broker")

// LinkState describes the connection to the cloud.
type LinkState struct {
	Connected bool
	Broker    string
	// Since is when the link last changed state.
	Since     time.Time
	LastError string
}

// ConditionDisconnected is raised while no broker can be reached.
const ConditionDisconnected = "uplink.disconnected"

// ConditionUnsubscribed is raised while the broker refuses the box's
// subscriptions to its remote instructions (commands, probe, config):
// events still flow, but central IT cannot reach the box.
const ConditionUnsubscribed = "uplink.unsubscribed"

// resubscribeMax caps the wait between two tries of a refused subscription.
const resubscribeMax = 30 * time.Second

// Publisher owns the MQTT connection.
type Publisher struct {
	opts Options
	src  Source
	// holdMax replaces the package's holdMax when set (tests).
	holdMax time.Duration
	log     *slog.Logger
	health  health.Reporter
	started time.Time
	// handoff is set when the next stop hands the link over to another
	// Publisher of the same box (a config switch): no offline status.
	handoff atomic.Bool
	// configVersion is the remote config version in use (status message).
	configVersion atomic.Int64
	// caughtUp is true while the publisher found no event left to publish;
	// onConn is the position up to which every committed event is on this
	// connection (published, or sent on an earlier one).
	caughtUp atomic.Bool
	onConn   atomic.Int64

	// statusMu orders the online status of a connection before the
	// offline status of its end, without holding mu (which State and
	// CaughtUp take) while a publish may block on a dying connection.
	statusMu sync.Mutex
	// connectedAt is when the current or last connection was made (unix
	// ns), to tell a connection that was up from one dropped at once.
	connectedAt atomic.Int64

	mu    sync.Mutex
	state LinkState
	// connects counts successful connections; all but the first are
	// reconnects.
	connects int64
	client   mqtt.Client // the connected client, nil while offline
	// first is the index in Brokers of the endpoint the next connect
	// tries first: the one after the endpoint whose connection was lost.
	first int
}

// SetConfigVersion records the remote config version now in use and, when
// connected, publishes the online status again with it.
func (p *Publisher) SetConfigVersion(v int64) {
	if p.configVersion.Swap(v) == v {
		return
	}
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	if c == nil {
		return
	}
	var pending *int64
	if st, err := p.src.Stats(context.Background()); err == nil {
		pending = &st.Pending
	}
	c.Publish(p.Topic(TopicStatus), 1, true, p.status("online", "", pending))
}

// Connected reports whether the Publisher has ever been connected.
func (p *Publisher) Connected() bool { return p.Connects() > 0 }

// SayOffline connects once, publishes the retained offline status with
// reason, and disconnects cleanly: for a box that stops after a Publisher
// handed its session over (Handoff) and no other one has connected since,
// so that the retained status does not say online for a box that is gone.
func (p *Publisher) SayOffline(ctx context.Context, reason string) error {
	lost := make(chan error, 1)
	c, _, err := p.connect(ctx, lost)
	if err != nil {
		return fmt.Errorf("publish offline status: %w", err)
	}
	defer c.Disconnect(250)
	tok := c.Publish(p.Topic(TopicStatus), 1, true, p.status("offline", reason, nil))
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return fmt.Errorf("publish offline status: %v", tok.Error())
	}
	return nil
}

// Handoff makes the coming stop a hand-over to another Publisher of the
// same box, as on a config switch: the connection closes cleanly without
// an offline status (and without the will), so the retained status stays
// online until the next Publisher says online again. Call it before
// cancelling Run's context.
func (p *Publisher) Handoff() { p.handoff.Store(true) }

// Publish sends a message (not an event) to {prefix}/{id}/{suffix} with
// QoS 1 and waits for its PUBACK. It fails with ErrOffline while no broker
// is connected: telemetry, alerts and command results are not buffered.
func (p *Publisher) Publish(ctx context.Context, suffix string, payload []byte, retain bool) error {
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	if c == nil {
		return ErrOffline
	}
	tok := c.Publish(p.Topic(suffix), 1, retain, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(p.opts.WriteTimeout + p.opts.KeepAlive):
		return fmt.Errorf("publish %s: no PUBACK", suffix)
	}
}

// publishAsync publishes at QoS 1 and returns the token to wait on.
func (p *Publisher) publishAsync(suffix string, payload []byte, retain bool) (mqtt.Token, error) {
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	if c == nil {
		return nil, ErrOffline
	}
	return c.Publish(p.Topic(suffix), 1, retain, payload), nil
}

// wait waits for a publish's PUBACK.
func (p *Publisher) wait(ctx context.Context, tok mqtt.Token, what string) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(p.opts.WriteTimeout + p.opts.KeepAlive):
		return fmt.Errorf("publish %s: no PUBACK", what)
	}
}

// CaughtUp reports whether every committed event is on the connection
// (published, perhaps not acknowledged yet), one committed a moment ago
// included: what else shares the connection may go now without delaying
// an event.
func (p *Publisher) CaughtUp() bool {
	return p.caughtUp.Load() && p.onConn.Load() >= p.src.LastPos() && p.State().Connected
}

// subscribe makes every subscription on a new connection, in one
// SUBSCRIBE packet, at QoS 0. The session is clean, so a QoS 1
// subscription would keep nothing across a lost connection either; on
// NATS it costs a replicated JetStream consumer per filter, made on every
// connect and deleted on the next one, and those calls wait for the
// cluster's leaders after a node loss (measured in TestClusterNodeLoss).
// A broker processes one client's packets in order, so each of those
// calls delays the events behind it.
func (p *Publisher) subscribe(c mqtt.Client) error {
	filters := make(map[string]byte, len(p.opts.Subscriptions))
	names := make(map[string]string, len(p.opts.Subscriptions))
	for _, sub := range p.opts.Subscriptions {
		h := sub.Handler
		topic := p.Topic(sub.Filter)
		c.AddRoute(topic, func(_ mqtt.Client, m mqtt.Message) { h(m.Topic(), m.Payload(), m.Retained()) })
		filters[topic] = 0
		names[topic] = sub.Filter
	}
	tok := c.SubscribeMultiple(filters, nil)
	what := strings.Join(slices.Sorted(maps.Values(names)), ", ")
	wait := p.opts.WriteTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if !tok.WaitTimeout(wait) {
		return fmt.Errorf("subscribe %s: no SUBACK within %s", what, wait)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", what, err)
	}
	// A broker refuses a subscription in the SUBACK's return code
	// (0x80), not as an error of the token.
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for _, sub := range p.opts.Subscriptions {
			if code, ok := st.Result()[p.Topic(sub.Filter)]; !ok || code == 0x80 {
				return fmt.Errorf("subscribe %s: the broker refused it (SUBACK return code 0x%02x): check its access list", sub.Filter, code)
			}
		}
	}
	return nil
}

// subscribeUntilReady subscribes to the remote instructions on a new
// connection, retrying with capped backoff while the broker refuses them,
// until it succeeds or the connection ends. first runs after the first try.
func (p *Publisher) subscribeUntilReady(c mqtt.Client, ended <-chan struct{}, first func()) {
	wait := p.opts.ReconnectMin
	for try := 0; ; try++ {
		err := p.subscribe(c)
		select {
		case <-ended:
			if try == 0 {
				first()
			}
			return // the connection is gone: its outcome no longer matters
		default:
		}
		if err == nil {
			p.health.Clear(ConditionUnsubscribed)
			p.log.Info("remote instructions ready", "topics", len(p.opts.Subscriptions))
		} else {
			p.health.Set(ConditionUnsubscribed, health.Warning, "remote instructions unavailable: "+err.Error())
			p.log.Warn("remote instructions unavailable on this connection; retrying", "err", err, "retry_in", wait)
		}
		if try == 0 {
			first()
		}
		if err == nil {
			return
		}
		select {
		case <-ended:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, resubscribeMax)
	}
}

// waitCaughtUp waits until every event waiting in the buffer is on the
// connection (CaughtUp), or at most limit; false if the connection ended
// first.
func (p *Publisher) waitCaughtUp(ended <-chan struct{}, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for !p.caughtUp.Load() {
		select {
		case <-ended:
			return false
		case <-deadline.C:
			return true
		case <-poll.C:
		}
	}
	return true
}

// Connects returns how many times the uplink has connected since start.
func (p *Publisher) Connects() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connects
}

// Topics of the public MQTT API, relative to {prefix}/{appliance id}.
const (
	TopicEvents = "events"
	TopicStatus = "status"
)

// New returns a Publisher reading from src.
func New(src Source, opts Options) (*Publisher, error) {
	if len(opts.Brokers) == 0 {
		return nil, errors.New("new uplink: no broker")
	}
	if opts.Window <= 0 || opts.Window > 65535 {
		return nil, fmt.Errorf("new uplink: window %d out of range 1..65535", opts.Window)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Health == nil {
		opts.Health = health.Discard{}
	}
	if opts.ReconnectMin <= 0 {
		opts.ReconnectMin = time.Second
	}
	if opts.ReconnectMax < opts.ReconnectMin {
		opts.ReconnectMax = opts.ReconnectMin
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	brokers := make([]string, len(opts.Brokers))
	for i, b := range opts.Brokers {
		brokers[i] = WithDefaultPort(b)
	}
	opts.Brokers = brokers
	if opts.ShutdownTimeout < 0 {
		opts.ShutdownTimeout = 0 // do not wait for in-flight publishes
	} else if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	p := &Publisher{opts: opts, src: src, log: opts.Logger, health: opts.Health, started: opts.Started}
	if p.started.IsZero() {
		p.started = opts.Clock.Now()
	}
	p.configVersion.Store(opts.ConfigVersion)
	p.state.Since = p.started
	return p, nil
}

// Topic returns the full topic for a suffix such as TopicEvents.
func (p *Publisher) Topic(suffix string) string {
	return p.opts.TopicPrefix + "/" + p.opts.ClientID + "/" + suffix
}

// State returns the current link state.
func (p *Publisher) State() LinkState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

func (p *Publisher) setState(connected bool, broker string, err error) {
	p.mu.Lock()
	if p.state.Connected != connected {
		p.state.Since = p.opts.Clock.Now()
		if connected {
			p.connects++
		}
	}
	p.state.Connected, p.state.Broker = connected, broker
	if err != nil {
		p.state.LastError = Explain(err)
	}
	p.mu.Unlock()
	if connected {
		p.health.Clear(ConditionDisconnected)
	} else if err != nil {
		p.health.Set(ConditionDisconnected, health.Critical, "cloud link down: "+Explain(err))
	}
}

// statusMessage is the retained payload on the status topic.
type statusMessage struct {
	V         int    `json:"v"`
	State     string `json:"state"`
	Appliance string `json:"appliance"`
	Site      string `json:"site,omitempty"`
	Version   string `json:"version,omitempty"`
	Config    int64  `json:"config_version,omitempty"`
	Started   string `json:"started,omitempty"`
	Pending   *int64 `json:"pending,omitempty"`
	Reason    string `json:"reason,omitempty"`
	TS        string `json:"ts"`
}

const tsFormat = "2006-01-02T15:04:05.000Z07:00"

func (p *Publisher) status(state, reason string, pending *int64) []byte {
	b, _ := json.Marshal(statusMessage{V: 1, State: state, Appliance: p.opts.ClientID, Site: p.opts.Site,
		Version: p.opts.Version, Config: p.configVersion.Load(), Started: p.started.UTC().Format(tsFormat), Pending: pending, Reason: reason,
		TS: p.opts.Clock.Now().UTC().Format(tsFormat)})
	return b
}

// Run keeps the link up and forwards events until ctx is cancelled. It
// returns nil on cancellation, after in-flight publishes have settled (up to
// ShutdownTimeout) and the offline status has been published.
func (p *Publisher) Run(ctx context.Context) error {
	backoff := p.opts.ReconnectMin
	short := 0 // connections in a row lost within stableConnection
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return nil
		}
		connected, err := p.connectAndServe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// A connection lost within stableConnection of its CONNACK is
		// short. A few in a row are retried at once like any lost
		// connection (a cluster electing leaders drops a few); after that
		// they count as connects that failed, with the growing backoff, so
		// that a broker that accepts and drops the box at once (another
		// connection taking its client id over, a kick by its access list)
		// is not tried several times a second.
		if connected {
			if p.opts.Clock.Now().Sub(time.Unix(0, p.connectedAt.Load())) >= stableConnection {
				short = 0
			} else if short++; short > shortConnections {
				connected = false
			}
		}
		if connected {
			backoff = p.opts.ReconnectMin
		}
		wait := jitter(backoff)
		if connected {
			// A connection that was up is gone (a broker node failed, or
			// the network): try again at once, give or take a spread of
			// reconnect_min so that the boxes of a failed node do not all
			// come back to the others in the same instant.
			wait = time.Duration(rand.Int64N(int64(p.opts.ReconnectMin)))
		}
		p.log.Warn("uplink down, retrying", "err", Explain(err), "retry_in", wait.Round(time.Millisecond))
		backoff = min(backoff*2, p.opts.ReconnectMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// stableConnection is how long after its CONNACK a connection must last
// to count as one that was up; shortConnections lost sooner in a row are
// still retried at once, the next ones with the growing backoff.
const (
	stableConnection = 10 * time.Second
	shortConnections = 3
)

// jitter spreads d over [0.8d, 1.2d) so that a fleet does not reconnect in
// lockstep after a cloud outage.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (p *Publisher) clientOptions(broker string, lost chan<- error) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(p.opts.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(p.opts.KeepAlive).
		SetPingTimeout(max(p.opts.KeepAlive/2, time.Second)).
		SetConnectTimeout(p.opts.ConnectTimeout).
		SetWriteTimeout(p.opts.WriteTimeout).
		SetCustomOpenConnectionFn(dialer(p.opts.ConnectTimeout, p.opts.WriteTimeout)).
		SetOrderMatters(false).
		SetProtocolVersion(4). // MQTT 3.1.1 only: no fallback to 3.1, which brokers refuse
		SetWill(p.Topic(TopicStatus), string(p.status("offline", "connection lost", nil)), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if p.opts.TLS != nil {
		// Verify the broker's certificate against the host we dial, on every
		// dial path (paho's proxy path would not infer it).
		t := p.opts.TLS.Clone()
		if u, err := url.Parse(broker); err == nil && t.ServerName == "" {
			t.ServerName = u.Hostname()
		}
		o.SetTLSConfig(t)
	}
	return o
}

// connect tries each broker in order, from the one after the endpoint
// whose connection was lost last (a cluster node that failed is not the
// first to try again), and returns the first connected client.
func (p *Publisher) connect(ctx context.Context, lost chan error) (mqtt.Client, string, error) {
	var errs []error
	p.mu.Lock()
	first := p.first
	p.mu.Unlock()
	for k := range p.opts.Brokers {
		i := (first + k) % len(p.opts.Brokers)
		b := p.opts.Brokers[i]
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		c := mqtt.NewClient(p.clientOptions(b, lost))
		tok := c.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			p.closeCancelled(c, tok)
			return nil, "", ctx.Err()
		case <-time.After(p.opts.ConnectTimeout + time.Second):
			go func() { <-tok.Done(); c.Disconnect(0) }()
			errs = append(errs, fmt.Errorf("connect %s: the broker did not answer within %s", redact(b), p.opts.ConnectTimeout))
			continue
		}
		if err := tok.Error(); err != nil {
			errs = append(errs, fmt.Errorf("connect %s: %w", redact(b), err))
			continue
		}
		return c, b, nil
	}
	return nil, "", endpointErrors(errs)
}

// lostEndpoint makes the endpoint after broker the first one the next
// connect tries.
func (p *Publisher) lostEndpoint(broker string) {
	i := slices.Index(p.opts.Brokers, broker)
	p.mu.Lock()
	p.first = (i + 1) % len(p.opts.Brokers)
	p.mu.Unlock()
}

// endpointErrors are the failed connects of one round, one per broker,
// each explained on its own: one endpoint refusing says nothing of the
// others.
type endpointErrors []error

func (e endpointErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = Explain(err)
	}
	return strings.Join(msgs, "; ")
}

func (e endpointErrors) Unwrap() []error { return e }

// closeCancelled ends a connect that was under way when Run was stopped:
// it waits (up to the connect timeout) for its outcome and, if it
// connected, leaves cleanly as a stop does (offline status unless handed
// over, then DISCONNECT), so that the broker does not publish the will.
func (p *Publisher) closeCancelled(c mqtt.Client, tok mqtt.Token) {
	if !tok.WaitTimeout(p.opts.ConnectTimeout+time.Second) || tok.Error() != nil {
		go func() { tok.Wait(); c.Disconnect(0) }()
		return
	}
	if !p.handoff.Load() {
		c.Publish(p.Topic(TopicStatus), 1, true, p.status("offline", "shutdown", nil)).WaitTimeout(time.Second)
	}
	c.Disconnect(250)
}

// redact drops any user info from a broker URL before it is logged.
func redact(broker string) string {
	u, err := url.Parse(broker)
	if err != nil {
		return "(invalid broker URL)"
	}
	u.User = nil
	return u.String()
}

// connectAndServe runs one connection from dial to loss or shutdown.
func (p *Publisher) connectAndServe(ctx context.Context) (connected bool, err error) {
	lost := make(chan error, 1)
	client, broker, err := p.connect(ctx, lost)
	if err != nil {
		p.setState(false, "", err)
		return false, err
	}
	p.setState(true, redact(broker), nil)

	var pending *int64
	if st, err := p.src.Stats(ctx); err == nil {
		pending = &st.Pending
	}
	p.log.Info("uplink connected", "broker", redact(broker), "client_id", p.opts.ClientID)
	p.connectedAt.Store(p.opts.Clock.Now().UnixNano())
	p.mu.Lock()
	p.client = client
	p.mu.Unlock()
	// The online status and the subscriptions must not hold up the
	// events: a broker handles one client's packets in order, and on a
	// clustered broker a retained message or a subscription can wait for
	// the cluster (NATS: a JetStream call of up to 4 s each while leaders
	// are elected after a node loss). They go once the events waiting
	// in the buffer are on the connection, or after the connect timeout
	// at the latest. A broker slow to SUBACK, or refusing, delays remote
	// instructions only.
	ended := make(chan struct{})
	onConnect := func() {
		if p.opts.OnConnect != nil {
			p.opts.OnConnect()
		}
	}
	go func() {
		if !p.waitCaughtUp(ended, p.opts.ConnectTimeout) {
			return // the connection is gone
		}
		// Not after a stop's offline status: the client must still be
		// the connected one (a stop clears it before saying offline).
		p.statusMu.Lock()
		p.mu.Lock()
		current := p.client == client
		p.mu.Unlock()
		if current {
			client.Publish(p.Topic(TopicStatus), 1, true, p.status("online", "", pending))
		}
		p.statusMu.Unlock()
		if len(p.opts.Subscriptions) == 0 {
			onConnect()
			return
		}
		p.subscribeUntilReady(client, ended, onConnect)
	}()

	err = p.serve(ctx, client, lost)
	close(ended)
	if ctx.Err() == nil {
		p.lostEndpoint(broker)
	}
	p.statusMu.Lock() // an online status being published goes first
	p.mu.Lock()
	p.client = nil
	p.mu.Unlock()
	p.statusMu.Unlock()
	if ctx.Err() != nil {
		reason := "shutdown"
		if p.handoff.Load() {
			// A config switch: the next Publisher says online at once. A
			// clean DISCONNECT discards the will, so nobody sees offline.
			reason = "config switch"
		} else {
			// Clean shutdown: say so ourselves, a will only fires on an unclean drop.
			tok := client.Publish(p.Topic(TopicStatus), 1, true, p.status("offline", "shutdown", nil))
			tok.WaitTimeout(time.Second)
		}
		client.Disconnect(250)
		p.setState(false, "", nil)
		p.log.Info("uplink disconnected", "reason", reason)
		return true, nil
	}
	client.Disconnect(0)
	p.setState(false, "", err)
	return true, err
}

// serve publishes pending events with a bounded in-flight window until the
// connection fails or ctx is cancelled, then waits for in-flight publishes to
// settle and records their acknowledgements before returning.
func (p *Publisher) serve(ctx context.Context, client mqtt.Client, lost <-chan error) error {
	topic := p.Topic(TopicEvents)
	window := make(chan struct{}, p.opts.Window)
	// Acknowledgements wait here while the buffer records the ones before
	// them: a write that waits behind the synced commits of scans must not
	// hold back the window (a drain of 25,000 events/s fills 64 places in
	// under 3 ms).
	acks := make(chan int64, max(p.opts.Window, ackBacklog))
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		p.recordAcks(acks)
	}()
	// One goroutine waits for the publishes in the order they were sent
	// (PUBACKs come back in that order) and frees their window slots.
	tokens := make(chan published, p.opts.Window)
	waiterDone := make(chan struct{})
	go func() {
		defer close(waiterDone)
		for pt := range tokens {
			<-pt.tok.Done()
			<-window
			if err := pt.tok.Error(); err != nil {
				fail(fmt.Errorf("publish: %w", err))
				continue
			}
			for _, pos := range pt.pos {
				if p.opts.OnAck != nil {
					p.opts.OnAck(pos, time.Since(pt.at))
				}
				acks <- pos
			}
		}
	}()
	settle := func() {
		close(tokens)
		select {
		case <-waiterDone:
		case <-time.After(p.opts.ShutdownTimeout):
			p.log.Warn("in-flight publishes did not settle; they stay pending and are resent next time", "timeout", p.opts.ShutdownTimeout)
			client.Disconnect(0) // completes the remaining tokens with an error
			<-waiterDone
		}
		close(acks)
		<-ackDone
	}

	// A lost connection and a failed publish end the session alike.
	go func() {
		select {
		case err := <-lost:
			fail(fmt.Errorf("connection lost: %w", err))
		case <-waiterDone:
		}
	}()
	defer settle()

	// Until the first read of this connection, events that piled up
	// offline may wait: nothing else goes first.
	p.caughtUp.Store(false)
	defer p.caughtUp.Store(false)
	p.onConn.Store(0)
	var cursor int64
	var nextHold time.Time // no hold before this
	// A page of 256 events, or the window if larger: pages of 1,024 kept
	// the peak RSS of a drain about 1.5 MiB higher (the collector's goal
	// follows the live heap) and drained no faster. With batching on, a
	// page holds whole batches (batch_max 100: 300), and a batch the end
	// of a full page would cut short (the size limit cut the one before
	// it) is read again with the next page instead.
	batch := max(p.opts.Window, 256)
	if n := p.opts.BatchMax; n > 1 {
		batch = (batch + n - 1) / n * n
	}
	for {
		// Every event committed up to last is in what the read finds, or
		// on this connection, or sent before it.
		last := p.src.LastPos()
		recs, err := p.src.Pending(ctx, cursor, batch)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read buffer: %w", err)
		}
		if len(recs) == 0 {
			p.onConn.Store(max(last, cursor))
		}
		p.caughtUp.Store(len(recs) == 0)
		if len(recs) == 0 {
			select {
			case <-p.src.Notify():
			case <-time.After(time.Second):
			case err := <-failed:
				return err
			case <-ctx.Done():
				return nil
			}
			continue
		}
		for i := 0; i < len(recs); {
			nextHold = p.holdForPerson(ctx, nextHold)
			select {
			case window <- struct{}{}:
			case err := <-failed:
				return err
			case <-ctx.Done():
				return nil
			}
			if p.opts.BatchMax <= 1 {
				r := recs[i]
				tokens <- published{tok: client.Publish(topic, 1, false, r.Payload), pos: []int64{r.Pos}, at: time.Now()}
				cursor = r.Pos
				i++
				continue
			}
			// One message of as many events as fit, in order.
			first := i
			body := append(make([]byte, 0, 4096), '[')
			var pos []int64
			for i < len(recs) && len(pos) < p.opts.BatchMax && (len(pos) == 0 || fitsBatch(len(body), len(recs[i].Payload))) {
				if len(pos) > 0 {
					body = append(body, ',')
				}
				body = append(body, recs[i].Payload...)
				pos = append(pos, recs[i].Pos)
				i++
			}
			// A batch cut short by the end of a full page (more events
			// wait behind it) goes out with them: it is read again.
			if i == len(recs) && len(pos) < p.opts.BatchMax && first > 0 && len(recs) == batch {
				<-window
				break
			}
			cursor = recs[i-1].Pos
			body = append(body, ']')
			tokens <- published{tok: client.Publish(p.Topic(TopicEventBatch), 1, false, body), pos: pos, at: time.Now()}
		}
	}
}

// holdForPerson waits while a person waits for a commit, for holdMax at
// most, or until ctx ends; it does not hold before notBefore. It returns
// when the next hold may begin. It waits in real time whatever the
// Publisher's clock: it gives the cores away, it measures nothing.
func (p *Publisher) holdForPerson(ctx context.Context, notBefore time.Time) time.Time {
	if p.opts.PersonWaiting == nil {
		return notBefore
	}
	answered := p.opts.PersonWaiting()
	if answered == nil {
		return notBefore
	}
	began := time.Now()
	if began.Before(notBefore) {
		return notBefore
	}
	limit := holdMax
	if p.holdMax > 0 {
		limit = p.holdMax
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-answered:
	case <-t.C:
	case <-ctx.Done():
	}
	now := time.Now()
	return now.Add(holdGapFactor * now.Sub(began))
}

// fitsBatch reports whether an event of n bytes still fits a batch whose
// body has size bytes so far ("[" and the events before it): with its comma
// and the closing "]" the message stays under maxBatchBytes.
func fitsBatch(size, n int) bool { return size+1+n+1 < maxBatchBytes }

// Republish publishes events again, in order, as the drain sends them:
// one message each, or batches on events/batch when batching is on. It
// returns once the broker acknowledged all of them, or the first error
// with how many were acknowledged before it.
func (p *Publisher) Republish(ctx context.Context, payloads [][]byte) (int, error) {
	done := 0
	for len(payloads) > 0 {
		if p.opts.BatchMax <= 1 {
			if err := p.Publish(ctx, TopicEvents, payloads[0], false); err != nil {
				return done, err
			}
			payloads, done = payloads[1:], done+1
			continue
		}
		body := append(make([]byte, 0, 4096), '[')
		n := 0
		for n < len(payloads) && n < p.opts.BatchMax && (n == 0 || fitsBatch(len(body), len(payloads[n]))) {
			if n > 0 {
				body = append(body, ',')
			}
			body = append(body, payloads[n]...)
			n++
		}
		body = append(body, ']')
		if err := p.Publish(ctx, TopicEventBatch, body, false); err != nil {
			return done, err
		}
		payloads, done = payloads[n:], done+n
	}
	return done, nil
}

// ackBacklog is how many acknowledgements may wait to be recorded before
// the publishes awaiting theirs stop freeing their window places: a third
// of a second of a fast drain, 64 KiB.
const ackBacklog = 8192

// published is a publish awaiting its PUBACK: one event, or a batch.
type published struct {
	tok mqtt.Token
	pos []int64
	at  time.Time
}

// TopicEventBatch carries batches of events when batching is on.
const TopicEventBatch = "events/batch"

// maxBatchBytes keeps a batch under the 128 KiB message limit of common
// cloud brokers.
const maxBatchBytes = 120 << 10

// recordAcks marks acknowledged events sent. It gathers acknowledgements
// for up to ackFlush before each write, so that a fast drain costs one small
// transaction per few hundred events instead of one per event. A write that
// fails (a full disk) is tried again, with the acknowledgements that came
// since, until it succeeds: the pending count must not stay wrong for as
// long as the connection lasts. When the connection ends, what is still
// unrecorded is tried for a few seconds more; the rest is resent on the
// next connection (at least once, never lost).
func (p *Publisher) recordAcks(acks <-chan int64) {
	const (
		ackFlush     = 5 * time.Millisecond
		retryMin     = 250 * time.Millisecond
		retryMax     = 5 * time.Second
		finalAttempt = 5 * time.Second
	)
	buf := make([]int64, 0, 4096)
	var unrecorded []int64
	var retryAt time.Time // no write before this while unrecorded waits
	backoff := retryMin
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	record := func(pos []int64) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := p.src.MarkSent(ctx, pos)
		switch {
		case err != nil && len(unrecorded) == 0:
			p.log.Error("record acknowledged events; trying again", "err", err, "count", len(pos))
		case err != nil:
			p.log.Debug("record acknowledged events: still failing", "err", err, "count", len(pos))
		case len(unrecorded) > 0:
			p.log.Info("acknowledged events recorded after a failure", "count", len(pos))
		}
		return err == nil
	}
	for {
		buf = buf[:0]
		select {
		case pos, ok := <-acks:
			if !ok {
				deadline := time.Now().Add(finalAttempt)
				for len(unrecorded) > 0 && !record(unrecorded) && time.Now().Before(deadline) {
					time.Sleep(retryMin)
				}
				return
			}
			buf = append(buf, pos)
			timer.Reset(ackFlush)
		gather:
			for len(buf) < cap(buf) {
				select {
				case pos, ok := <-acks:
					if !ok {
						break gather
					}
					buf = append(buf, pos)
				case <-timer.C:
					break gather
				}
			}
			timer.Stop()
		case <-retry.C:
		}
		if len(unrecorded) > 0 && time.Now().Before(retryAt) {
			// Still backing off: new acknowledgements join the ones waiting.
			unrecorded = append(unrecorded, buf...)
			continue
		}
		batch := buf
		if len(unrecorded) > 0 {
			batch = append(unrecorded, buf...)
		}
		if record(batch) {
			unrecorded, backoff = unrecorded[:0], retryMin
			retry.Stop()
			continue
		}
		unrecorded = append(unrecorded[:0:0], batch...)
		retry.Reset(backoff)
		retryAt = time.Now().Add(backoff)
		backoff = min(2*backoff, retryMax)
	}
}

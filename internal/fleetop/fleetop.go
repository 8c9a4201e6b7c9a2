// Package fleetop is the operator's side of fleet management: the MQTT
// client IT's `mailroomd fleet` commands use to sign and send
// instructions, read status, telemetry and alerts, and follow events while
// checking the delivery contract (gaps and duplicates per appliance and
// epoch).
package fleetop

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/envelope"
	"github.com/mailroomd/mailroomd/internal/fleet"
	"github.com/mailroomd/mailroomd/internal/remoteconfig"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// Options say how the operator connects and signs.
type Options struct {
	Broker   string
	TLS      *tls.Config
	ClientID string
	Prefix   string
	// Key and KeyID sign instructions.
	Key   ed25519.PrivateKey
	KeyID string
	Now   func() time.Time
}

// Client is a connected operator.
type Client struct {
	opts Options
	c    mqtt.Client
	// lost is closed when the connection to the broker is lost; lostErr
	// says why. The client does not reconnect.
	lost    chan struct{}
	lostErr error
}

// ErrConnectionLost is Follow's error when the connection to the broker
// was lost: what the broker had for the subscription after it was not
// seen.
var ErrConnectionLost = errors.New("the connection to the broker was lost")

// Dial connects to the broker.
func Dial(opts Options) (*Client, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Prefix == "" {
		opts.Prefix = "mailroom/v1"
	}
	opts.Broker = uplink.WithDefaultPort(opts.Broker)
	o := mqtt.NewClientOptions().AddBroker(opts.Broker).SetClientID(opts.ClientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetOrderMatters(true)
	if opts.TLS != nil {
		t := opts.TLS.Clone()
		if u, err := url.Parse(opts.Broker); err == nil && t.ServerName == "" {
			t.ServerName = u.Hostname()
		}
		o.SetTLSConfig(t)
	}
	cl := &Client{opts: opts, lost: make(chan struct{})}
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		cl.lostErr = err
		close(cl.lost)
	})
	c := mqtt.NewClient(o)
	cl.c = c
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect %s: timed out", opts.Broker)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", opts.Broker, err)
	}
	return cl, nil
}

// Close disconnects.
func (c *Client) Close() { c.c.Disconnect(250) }

// Topic returns {prefix}/{appliance}/{suffix}.
func (c *Client) Topic(appliance, suffix string) string {
	return c.opts.Prefix + "/" + appliance + "/" + suffix
}

func nonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Command signs and sends a command to one appliance and waits for its
// result.
func (c *Client) Command(ctx context.Context, appliance, name string, args any, ttl time.Duration) (fleet.Result, error) {
	id, env, err := c.signCommand(appliance, name, args, ttl)
	if err != nil {
		return fleet.Result{}, err
	}
	return c.Send(ctx, appliance, name, id, env)
}

// Update sends the command update and waits for its outcome: the result
// that the version running after it publishes, with the command's id,
// once the new version became healthy or was rolled back. A refusal (the
// artifact does not verify) is the outcome at once. accepted, if not nil,
// is called with the box's first answer, that it hands over to the
// updater.
func (c *Client) Update(ctx context.Context, appliance string, args any, ttl time.Duration, accepted func(fleet.Result)) (fleet.Result, error) {
	id, env, err := c.signCommand(appliance, "update", args, ttl)
	if err != nil {
		return fleet.Result{}, err
	}
	return c.sendUntil(ctx, appliance, "update", id, env, func(r fleet.Result) bool {
		switch {
		case IsUpdateOutcome(r):
			// Builds before this one report the outcome without the id.
			return r.ID == id || r.ID == ""
		case r.ID != id:
			return false
		case r.OK:
			if accepted != nil {
				accepted(r)
			}
			return false
		}
		return true
	})
}

// signCommand signs a command envelope and returns it with its id.
func (c *Client) signCommand(appliance, name string, args any, ttl time.Duration) (string, []byte, error) {
	if c.opts.Key == nil {
		return "", nil, errors.New("no signing key")
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return "", nil, err
	}
	if args == nil {
		raw = nil
	}
	now := c.opts.Now()
	p := envelope.Payload{V: 1, Kind: envelope.KindCommand, Target: appliance, Name: name, ID: nonce()[:12],
		Nonce: nonce(), Issued: now.UTC(), Expires: now.Add(ttl).UTC(), Args: raw}
	env, err := envelope.Sign(c.opts.Key, c.opts.KeyID, p)
	if err != nil {
		return "", nil, err
	}
	if len(env) > envelope.MaxSize {
		return "", nil, fmt.Errorf("the signed command is %d bytes, over the %d a box accepts", len(env), envelope.MaxSize)
	}
	return p.ID, env, nil
}

// IsUpdateOutcome reports whether r is the outcome of an update (applied,
// rolled_back or failed), published by the version that runs after it,
// rather than the box's first answer that it hands over to the updater.
func IsUpdateOutcome(r fleet.Result) bool {
	m, ok := r.Result.(map[string]any)
	if !ok {
		return false
	}
	_, ok = m["status"].(string)
	return ok
}

// Send publishes a ready envelope and waits for the result naming id (any
// result when id is empty).
func (c *Client) Send(ctx context.Context, appliance, name, id string, env []byte) (fleet.Result, error) {
	return c.sendUntil(ctx, appliance, name, id, env, func(r fleet.Result) bool { return id == "" || r.ID == id })
}

// sendUntil publishes a ready envelope and returns the first result that
// done accepts.
func (c *Client) sendUntil(ctx context.Context, appliance, name, id string, env []byte, done func(fleet.Result) bool) (fleet.Result, error) {
	var res fleet.Result
	results := make(chan fleet.Result, 16)
	topic := c.Topic(appliance, fleet.TopicCommand+"/"+name+"/result")
	st := c.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var r fleet.Result
		if json.Unmarshal(m.Payload(), &r) == nil {
			select {
			case results <- r:
			default:
			}
		}
	})
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return res, fmt.Errorf("subscribe %s: %v", topic, st.Error())
	}
	defer c.c.Unsubscribe(topic)
	pt := c.c.Publish(c.Topic(appliance, fleet.TopicCommand+"/"+name), 1, false, env)
	if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		return res, fmt.Errorf("publish: %v", pt.Error())
	}
	for {
		select {
		case r := <-results:
			if done(r) {
				return r, nil
			}
		case <-c.lost:
			return res, fmt.Errorf("waiting for the result from %s: %w: %v", appliance, ErrConnectionLost, c.lostErr)
		case <-ctx.Done():
			return res, fmt.Errorf("no result from %s: %w", appliance, ctx.Err())
		}
	}
}

// Message is one received message.
type Message struct {
	Topic   string
	Payload []byte
}

// Collect subscribes to filter below the prefix for d and returns what
// arrived (retained messages first).
func (c *Client) Collect(filter string, d time.Duration) ([]Message, error) {
	var mu sync.Mutex
	var out []Message
	topic := c.opts.Prefix + "/" + filter
	st := c.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		out = append(out, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...)})
		mu.Unlock()
	})
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return nil, fmt.Errorf("subscribe %s: %v", topic, st.Error())
	}
	time.Sleep(d)
	c.c.Unsubscribe(topic)
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// Follow calls fn for every message on filter until ctx ends.
func (c *Client) Follow(ctx context.Context, filter string, fn func(Message)) error {
	ch := make(chan Message, 1024)
	topic := c.opts.Prefix + "/" + filter
	st := c.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		ch <- Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...)}
	})
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", topic, st.Error())
	}
	defer c.c.Unsubscribe(topic)
	for {
		select {
		case m := <-ch:
			fn(m)
		case <-c.lost:
			return fmt.Errorf("follow %s: %w: %v", topic, ErrConnectionLost, c.lostErr)
		case <-ctx.Done():
			return nil
		}
	}
}

// Appliance returns the appliance segment of a topic below the prefix.
func (c *Client) Appliance(topic string) string {
	rest := strings.TrimPrefix(topic, c.opts.Prefix+"/")
	return strings.SplitN(rest, "/", 2)[0]
}

// PushConfig signs a desired config for target (an appliance id,
// site:NAME or *) and publishes it, retained, on the config/desired topic
// of each appliance it addresses. Appliances of a site or of the whole
// fleet are found from their retained telemetry; it returns their ids.
func (c *Client) PushConfig(target string, version int64, yaml string, ttl time.Duration) ([]string, error) {
	ids, _, err := c.pushConfig(target, version, yaml, ttl, 0)
	return ids, err
}

// Appliances are the appliances a target addresses: an appliance id
// alone, or those of a site (site:NAME) or of the whole fleet (*), found
// from their retained telemetry.
func (c *Client) Appliances(target string) ([]string, error) {
	ids := []string{target}
	if target == "*" || strings.HasPrefix(target, "site:") {
		msgs, err := c.Collect("+/"+fleet.TopicTelemetry, 2*time.Second)
		if err != nil {
			return nil, err
		}
		ids = nil
		for _, m := range msgs {
			var t fleet.Telemetry
			if json.Unmarshal(m.Payload, &t) != nil {
				continue
			}
			if (target == "*" || "site:"+t.Site == target) && !slices.Contains(ids, t.Appliance) {
				ids = append(ids, t.Appliance) // once, however many telemetry messages it sent
			}
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("no appliance of %s has published telemetry", target)
		}
	}
	return ids, nil
}

// ConfigOutcome is what one appliance reported for a pushed config.
type ConfigOutcome struct {
	Appliance string
	// Report is the appliance's config/reported message; zero when none
	// came within the wait.
	Report remoteconfig.Report
	// Reported is false when no final report came within the wait.
	Reported bool
}

// PushConfigAndWait publishes a desired config like PushConfig and waits up
// to wait for each appliance's final report of it (applied, current,
// rejected, rolled_back or ignored: not applying).
func (c *Client) PushConfigAndWait(target string, version int64, yaml string, ttl, wait time.Duration) ([]ConfigOutcome, error) {
	_, out, err := c.pushConfig(target, version, yaml, ttl, wait)
	return out, err
}

func (c *Client) pushConfig(target string, version int64, yaml string, ttl, wait time.Duration) ([]string, []ConfigOutcome, error) {
	if c.opts.Key == nil {
		return nil, nil, errors.New("no signing key")
	}
	ids, err := c.Appliances(target)
	if err != nil {
		return nil, nil, err
	}
	now := c.opts.Now()
	env, err := envelope.Sign(c.opts.Key, c.opts.KeyID, envelope.Payload{V: 1, Kind: envelope.KindConfig, Target: target,
		Version: version, Issued: now.UTC(), Expires: now.Add(ttl).UTC(), Config: yaml})
	if err != nil {
		return nil, nil, err
	}
	if len(env) > envelope.MaxSize {
		return nil, nil, fmt.Errorf("the signed config is %d bytes, over the %d a box accepts", len(env), envelope.MaxSize)
	}
	// Subscribe to the reports before publishing, so that no report is
	// missed; only reports published from now on (not retained ones) of
	// this version and these exact bytes count.
	hash := remoteconfig.Hash([]byte(yaml))
	// Reports are taken as they come, in the broker's callback, by box:
	// nothing is dropped however many boxes answer at once.
	var mu sync.Mutex
	outcomes := map[string]*ConfigOutcome{}
	for _, id := range ids {
		outcomes[id] = &ConfigOutcome{Appliance: id}
	}
	left := len(ids)
	allIn := make(chan struct{})
	if wait > 0 {
		topic := c.opts.Prefix + "/+/" + fleet.TopicConfigReported
		st := c.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
			if m.Retained() {
				return
			}
			var r remoteconfig.Report
			if json.Unmarshal(m.Payload(), &r) != nil || r.Status == remoteconfig.StatusApplying {
				return
			}
			// A report of this version and these bytes; or a refusal of an
			// envelope the box could not open, which names neither.
			if !(r.Version == version && r.Hash == hash) && !(r.Status == remoteconfig.StatusRejected && r.Hash == "" && (r.Version == version || r.Version == 0)) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			o := outcomes[c.Appliance(m.Topic())]
			if o == nil || o.Reported {
				return
			}
			o.Report, o.Reported = r, true
			if left--; left == 0 {
				close(allIn)
			}
		})
		if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
			return nil, nil, fmt.Errorf("subscribe %s: %v", topic, st.Error())
		}
		defer c.c.Unsubscribe(topic)
	}
	for _, id := range ids {
		pt := c.c.Publish(c.Topic(id, fleet.TopicConfigDesired), 1, true, env)
		if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
			return ids, nil, fmt.Errorf("publish config to %s: %v", id, pt.Error())
		}
	}
	if wait <= 0 {
		return ids, nil, nil
	}
	select {
	case <-allIn:
	case <-time.After(wait):
	}
	mu.Lock()
	defer mu.Unlock()
	out := make([]ConfigOutcome, 0, len(ids))
	for _, id := range ids {
		out = append(out, *outcomes[id])
	}
	return ids, out, nil
}

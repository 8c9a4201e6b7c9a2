package uplink_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestRefusedSubscriptionIsNotReady: a broker that refuses the box's
// subscriptions in the SUBACK (return code 0x80, which paho reports as a
// result, not an error) leaves the box's remote instructions unavailable,
// which it says (a health condition) while events still flow; it tries
// again until the broker allows them, and then says ready.
func TestRefusedSubscriptionIsNotReady(t *testing.T) {
	b := mqtttest.StartFake(t)
	b.Refuse.Store(true)
	h := health.NewTracker(clock.Real{}, nil)
	o := newOutbox(t)
	start(t, o, uplink.Options{Brokers: []string{b.URL()}, Health: h,
		Subscriptions: []uplink.Subscription{
			{Filter: "cmd/+", Handler: func(string, []byte, bool) {}},
			{Filter: "config/desired", Handler: func(string, []byte, bool) {}},
		}})
	condition := func() string {
		for _, c := range h.Active() {
			if c.Key == uplink.ConditionUnsubscribed {
				return c.Message
			}
		}
		return ""
	}
	msg := waitfor.Value(t, 10*time.Second, "the refused subscription reported", condition, func(m string) bool { return m != "" })
	if !strings.Contains(msg, "0x80") || !strings.Contains(msg, "cmd/+") {
		t.Fatalf("condition %q does not name the refused subscription", msg)
	}
	appendScans(t, o, 0, 10)
	waitfor.True(t, 10*time.Second, "events published despite the refusal", func() bool {
		n := 0
		for _, topic := range b.Published() {
			if strings.HasSuffix(topic, "/events") {
				n++
			}
		}
		return n >= 10
	})
	b.Refuse.Store(false)
	waitfor.True(t, 20*time.Second, "subscribed once the broker allows it", func() bool { return condition() == "" })
	// Every connect asked for MQTT 3.1.1, none fell back to 3.1.
	for _, l := range b.Levels() {
		if l != 4 {
			t.Fatalf("protocol levels %v: want 4 (MQTT 3.1.1) only", b.Levels())
		}
	}
}

// TestRefusedConnectStaysOnMQTT311AndExplainsEachEndpoint: a broker that
// refuses the connection is not tried again with MQTT 3.1, and each
// endpoint's own outcome is reported, not the first one's for all.
func TestRefusedConnectStaysOnMQTT311AndExplainsEachEndpoint(t *testing.T) {
	refusing := mqtttest.StartFake(t)
	refusing.RefuseConnect.Store(true)
	dead := "mqtt://127.0.0.1:" + fmt.Sprint(mqtttest.FreePort(t))
	r := start(t, newOutbox(t), uplink.Options{Brokers: []string{dead, refusing.URL()}})
	waitfor.True(t, 10*time.Second, "three connects to the refusing broker", func() bool { return len(refusing.Levels()) >= 3 })
	for _, l := range refusing.Levels() {
		if l != 4 {
			t.Fatalf("protocol levels %v: want 4 (MQTT 3.1.1) only, no fallback to 3.1", refusing.Levels())
		}
	}
	last := waitfor.Value(t, 10*time.Second, "an explained error", func() string { return r.p.State().LastError },
		func(s string) bool { return strings.Contains(s, "; ") })
	first, second, _ := strings.Cut(last, "; ")
	if !strings.HasPrefix(first, "nothing is listening at the broker address") || !strings.Contains(first, dead) {
		t.Errorf("first endpoint explained as %q", first)
	}
	if strings.Contains(second, "nothing is listening") || !strings.Contains(second, "refused this client id") {
		t.Errorf("second endpoint explained as %q; want its own outcome (not authorised)", second)
	}
}

// eventPublishes is how many events the fake broker has been sent, one
// publish each.
func eventPublishes(b *mqtttest.FakeBroker) int {
	n := 0
	for _, topic := range b.Published() {
		if strings.HasSuffix(topic, "/events") {
			n++
		}
	}
	return n
}

// failingMarks is a buffer whose MarkSent fails while fail is set, as on a
// full disk.
type failingMarks struct {
	*store.Outbox
	fail atomic.Bool
}

func (f *failingMarks) MarkSent(ctx context.Context, pos []int64) error {
	if f.fail.Load() {
		return errors.New("database or disk is full")
	}
	return f.Outbox.MarkSent(ctx, pos)
}

// TestAcknowledgementsAreRecordedOnceTheDiskTakesThem: PUBACKs that could
// not be recorded are recorded later on the same connection, without a
// reconnect or a resend.
func TestAcknowledgementsAreRecordedOnceTheDiskTakesThem(t *testing.T) {
	b := mqtttest.StartFake(t)
	o := newOutbox(t)
	src := &failingMarks{Outbox: o}
	src.fail.Store(true)
	start(t, src, uplink.Options{Brokers: []string{b.URL()}})
	appendScans(t, o, 0, 10)
	published := func() int { return eventPublishes(b) }
	waitfor.True(t, 10*time.Second, "ten events acknowledged by the broker", func() bool { return published() >= 10 })
	pending := func() int64 { st, _ := o.Stats(context.Background()); return st.Pending }
	if n := pending(); n != 10 {
		t.Fatalf("%d pending while the marks fail, want 10", n)
	}
	src.fail.Store(false)
	waitfor.True(t, 10*time.Second, "the acknowledgements recorded", func() bool { return pending() == 0 })
	if n, c := published(), len(b.Levels()); n != 10 || c != 1 {
		t.Fatalf("%d publishes over %d connections; want 10 over 1 (recorded without a resend)", n, c)
	}
}

// slowMarks is a buffer whose MarkSent waits until release is closed, as
// behind the synced commits of scans arriving during a drain.
type slowMarks struct {
	*store.Outbox
	release chan struct{}
	calls   atomic.Int64
}

func (s *slowMarks) MarkSent(ctx context.Context, pos []int64) error {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Outbox.MarkSent(ctx, pos)
}

// TestSlowRecordingDoesNotHoldBackTheDrain: while recording what the
// broker acknowledged waits for the buffer's writer, the backlog keeps
// going out; the acknowledgements are recorded once it is free, without a
// resend.
func TestSlowRecordingDoesNotHoldBackTheDrain(t *testing.T) {
	const n = 3000
	b := mqtttest.StartFake(t)
	o := newOutbox(t)
	src := &slowMarks{Outbox: o, release: make(chan struct{})}
	appendScans(t, o, 0, n)
	start(t, src, uplink.Options{Brokers: []string{b.URL()}, Window: 16})
	release := sync.OnceFunc(func() { close(src.release) })
	t.Cleanup(release) // runs before the publisher is stopped
	published := func() int { return eventPublishes(b) }
	waitfor.True(t, 20*time.Second, "the whole backlog published while its first acknowledgements wait to be recorded", func() bool {
		return published() >= n
	})
	if c := src.calls.Load(); c != 1 {
		t.Fatalf("%d recordings began; want the first one still waiting", c)
	}
	release()
	waitfor.True(t, 10*time.Second, "every acknowledgement recorded", func() bool {
		st, _ := o.Stats(context.Background())
		return st.Pending == 0
	})
	if c := published(); c != n {
		t.Fatalf("%d publishes for %d events: some were sent again", c, n)
	}
}

// TestImpostorCannotTakeOverABox runs mosquitto as configs/mosquitto.conf
// and configs/mosquitto-acl.conf set it up: another box's certificate
// connecting with this box's client id neither kicks the box off nor
// publishes a false last will for it.
func TestImpostorCannotTakeOverABox(t *testing.T) {
	conf, err := os.ReadFile("../../configs/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"use_identity_as_username true", "use_username_as_clientid true", "require_certificate true"} {
		if !strings.Contains(string(conf), want) {
			t.Fatalf("configs/mosquitto.conf lacks %q, which the test broker runs with", want)
		}
	}
	// Retained photo chunks survive a restart of the broker (docs/photos.md).
	if !strings.Contains(string(conf), "\npersistence true\n") {
		t.Fatal("configs/mosquitto.conf does not keep retained messages on disk (persistence true)")
	}
	acl, err := os.ReadFile("../../configs/mosquitto-acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartWithACL(t, string(acl))
	watch := b.Subscribe(t, "fleet-operator", "mailroom/v1/"+appliance+"/#")
	o := newOutbox(t)
	r := start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b)})
	appendScans(t, o, 0, 1)
	watch.WaitFor(t, 10*time.Second, "the box online and its first event", func(ms []mqtttest.Message) bool {
		return strings.Contains(joinedPayloads(ms), `"state":"online"`) && mqtttest.DistinctEvents(1)(ms)
	})

	// Box b's certificate, this box's client id, a will saying it is
	// offline; then its connection drops without a DISCONNECT, so that
	// the broker publishes the will.
	var conn net.Conn
	impTLS := b.TLSConfig(t, "mr-impostor")
	imp := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(appliance).
		SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := tls.Dial("tcp", u.Host, impTLS)
			conn = c
			return c, err
		}).
		SetWill("mailroom/v1/"+appliance+"/status", `{"v":1,"state":"offline","reason":"forged"}`, 1, true))
	if tok := imp.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("impostor connect: %v", tok.Error())
	}
	conn.Close()
	defer imp.Disconnect(0)

	// The box keeps its one connection: a new event arrives over it.
	appendScans(t, o, 1, 1)
	ms := watch.WaitFor(t, 10*time.Second, "the next event", mqtttest.DistinctEvents(2))
	if n := r.p.Connects(); n != 1 {
		t.Fatalf("the box connected %d times: the impostor took its session over", n)
	}
	if strings.Contains(joinedPayloads(ms), "forged") {
		t.Fatal("the impostor published a status for the box")
	}
}

func joinedPayloads(ms []mqtttest.Message) string {
	var b strings.Builder
	for _, m := range ms {
		b.Write(m.Payload)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestAcceptThenDropBacksOff: a broker that accepts the connection and
// drops it at once (another connection took the client id over, or its
// access list kicks the client) is retried at once a few times, then with
// the growing backoff of a refusal, not at once after every CONNACK: two
// boxes configured with the same id would otherwise take the id from each
// other several times a second. A connection that was up long enough is
// retried at once however often it is lost (striding clock: every
// connection looks 11 s long).
func TestAcceptThenDropBacksOff(t *testing.T) {
	for _, c := range []struct {
		name     string
		clock    clock.Clock
		min, max int
	}{
		// 3 at once (within 50 ms), then 100, 200, 200, … ms: about 13 in 2 s.
		{"dropped at once", clock.Real{}, 3, 25},
		// one every 25 ms on average: about 80 in 2 s.
		{"dropped after a long connection", &striding{t: time.Now(), step: 11 * time.Second}, 40, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := mqtttest.StartFake(t)
			b.DropAfterConnack.Store(true)
			start(t, newOutbox(t), uplink.Options{Brokers: []string{b.URL()}, Clock: c.clock}) // reconnect 50ms to 200ms
			time.Sleep(2 * time.Second)                                                        // what is counted: connects over a time
			if n := len(b.Levels()); n < c.min || n > c.max {
				t.Fatalf("%d connects in 2s to a broker that drops every connection: want %d to %d", n, c.min, c.max)
			}
		})
	}
}

// striding is a clock that moves step forward at every reading.
type striding struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (s *striding) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t = s.t.Add(s.step)
	return s.t
}

// TestThreeShortConnectionsAreRetriedAtOnce pins the numbers of
// docs/mqtt-api.md: up to three connections in a row lost right after
// their CONNACK are retried at once (within reconnect_min), the fourth waits
// the backoff of a connect that failed (2 × reconnect_min, ±20 %).
func TestThreeShortConnectionsAreRetriedAtOnce(t *testing.T) {
	b := mqtttest.StartFake(t)
	b.DropAfterConnack.Store(true)
	logs := &syncBuffer{}
	const min = 400 * time.Millisecond
	p, err := uplink.New(newOutbox(t), uplink.Options{Brokers: []string{b.URL()}, ClientID: appliance, TopicPrefix: "mailroom/v1",
		Window: 64, ReconnectMin: min, ReconnectMax: 10 * min, KeepAlive: 2 * time.Second, ConnectTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	retry := regexp.MustCompile(`msg="uplink down, retrying" .* retry_in=(\S+)`)
	var waits []time.Duration
	waitfor.True(t, 10*time.Second, "four reconnects logged", func() bool {
		waits = waits[:0]
		for _, m := range retry.FindAllStringSubmatch(string(logs.Bytes()), -1) {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatalf("retry_in %q: %v", m[1], err)
			}
			waits = append(waits, d)
		}
		return len(waits) >= 4
	})
	// retry_in is logged rounded to the millisecond: 1 ms of slack.
	for i, d := range waits[:3] {
		if d > min {
			t.Errorf("short connection %d retried in %v, want at once (< %v); all: %v", i+1, d, min, waits)
		}
	}
	if d := waits[3]; d < 2*min*8/10-time.Millisecond || d > 2*min*12/10 {
		t.Errorf("fourth short connection retried in %v, want the backoff of 2 × %v ± 20 %%; all: %v", d, min, waits)
	}
}

package uplink_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/internal/devcert"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const appliance = "mr-test-01"

func newOutbox(t *testing.T) *store.Outbox {
	t.Helper()
	o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func clientTLS(t *testing.T, b *mqtttest.Broker) *tls.Config {
	cert, key := b.ClientFiles(t, appliance)
	cfg, err := uplink.LoadTLS(b.Files.CA, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type run struct {
	p      *uplink.Publisher
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (r *run) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("publisher returned %v", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("publisher did not stop")
	}
}

func start(t *testing.T, src uplink.Source, opts uplink.Options) *run {
	t.Helper()
	opts.ClientID = appliance
	opts.TopicPrefix = "mailroom/v1"
	if opts.Window == 0 {
		opts.Window = 64
	}
	opts.ReconnectMin, opts.ReconnectMax = 50*time.Millisecond, 200*time.Millisecond
	opts.KeepAlive, opts.ConnectTimeout = 2*time.Second, 2*time.Second
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := uplink.New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{p: p, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = p.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func appendScans(t *testing.T, o *store.Outbox, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		_, err := o.Append(context.Background(), event.Event{Appliance: appliance, Type: event.TypeScan,
			Time: time.Now(), Device: "dock", Barcode: []byte(fmt.Sprintf("1Z%016d", i))})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkDelivery asserts the delivery contract (mqtttest.Delivered) and
// that every seq 1..n arrived with a unique id; it returns the number of
// duplicate deliveries.
func checkDelivery(t *testing.T, msgs []mqtttest.Message, n int) (dups int) {
	t.Helper()
	evs, dups := mqtttest.Delivered(t, msgs)
	uniq := map[string]bool{}
	for s := int64(1); s <= int64(n); s++ {
		ev, ok := evs[s]
		if !ok {
			t.Fatalf("seq %d never arrived (%d distinct of %d)", s, len(evs), n)
		}
		uniq[ev.ID] = true
	}
	if len(evs) != n {
		t.Fatalf("%d distinct events arrived, want %d", len(evs), n)
	}
	if len(uniq) != n {
		t.Fatalf("ids not unique: %d ids for %d events", len(uniq), n)
	}
	return dups
}

func TestThousandScansArriveInOrder(t *testing.T) {
	b := mqtttest.Start(t)
	sub := b.Subscribe(t, "cloud", "mailroom/v1/+/#")
	o := newOutbox(t)
	appendScans(t, o, 0, 500) // a backlog before the link is up
	r := start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b), Version: "test"})
	appendScans(t, o, 500, 500) // and more while online
	msgs := sub.WaitFor(t, 30*time.Second, "1000 events", mqtttest.DistinctEvents(1000))
	if dups := checkDelivery(t, msgs, 1000); dups != 0 {
		t.Fatalf("%d duplicates without any reconnect", dups)
	}
	// Every event is marked sent once acknowledged.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := o.Stats(context.Background())
		if st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still pending after delivery", st.Pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !r.p.State().Connected {
		t.Fatal("link state not connected")
	}
	r.stop(t)
	// Retained status: online while running, offline after a clean stop.
	msgs = sub.WaitFor(t, 5*time.Second, "offline status", func(ms []mqtttest.Message) bool {
		return len(ms) > 0 && strings.Contains(string(ms[len(ms)-1].Payload), `"state":"offline"`)
	})
	var sawOnline bool
	for _, m := range msgs {
		if m.Topic == "mailroom/v1/"+appliance+"/status" && strings.Contains(string(m.Payload), `"state":"online"`) {
			sawOnline = true
		}
	}
	if !sawOnline {
		t.Fatal("no online status published")
	}
}

func TestBrokerOutageLosesNothing(t *testing.T) {
	b := mqtttest.Start(t)
	sub := b.Subscribe(t, "cloud", "mailroom/v1/+/events")
	o := newOutbox(t)
	start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b)})
	appendScans(t, o, 0, 300)
	sub.WaitFor(t, 20*time.Second, "first 300", mqtttest.DistinctEvents(300))
	// Stop the broker mid-stream, keep scanning, bring it back.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); appendScans(t, o, 300, 700) }()
	time.Sleep(5 * time.Millisecond)
	b.Stop()
	wg.Wait()
	time.Sleep(300 * time.Millisecond)
	b.Start()
	msgs := sub.WaitFor(t, 30*time.Second, "all 1000 after the outage", mqtttest.DistinctEvents(1000))
	dups := checkDelivery(t, msgs, 1000)
	t.Logf("1000 events through an outage, %d resent duplicates", dups)
}

func TestRefusedCertificatesAreExplained(t *testing.T) {
	b := mqtttest.Start(t)
	otherCA, err := devcert.NewCA("other CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey := mqtttest.WriteClient(t, otherCA, appliance)
	foreignTLS, err := uplink.LoadTLS(b.Files.CA, foreignCert, foreignKey)
	if err != nil {
		t.Fatal(err)
	}
	noCert := clientTLS(t, b)
	noCert.Certificates, noCert.GetClientCertificate = nil, nil
	otherCAFile := filepath.Join(t.TempDir(), "other-ca.pem")
	os.WriteFile(otherCAFile, otherCA.CertPEM, 0o644)
	goodCert, goodKey := b.ClientFiles(t, appliance)
	wrongTrust, err := uplink.LoadTLS(otherCAFile, goodCert, goodKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		want string
	}{
		{"client cert from another CA", foreignTLS, "the broker refused our client certificate"},
		{"no client cert", noCert, "the broker refused our client certificate"},
		{"broker not signed by our CA", wrongTrust, "not signed by uplink.ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOutbox(t)
			appendScans(t, o, 0, 3)
			r := start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: tc.tls})
			deadline := time.Now().Add(10 * time.Second)
			for {
				st := r.p.State()
				if st.Connected {
					t.Fatal("connected with a certificate the broker must refuse")
				}
				if strings.Contains(st.LastError, tc.want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("last error %q does not say %q", st.LastError, tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Still buffering: nothing lost, nothing marked sent.
			if st, _ := o.Stats(context.Background()); st.Pending != 3 {
				t.Fatalf("pending = %d, want 3", st.Pending)
			}
			r.stop(t)
		})
	}
}

func TestFailoverToSecondBroker(t *testing.T) {
	b := mqtttest.Start(t)
	sub := b.Subscribe(t, "cloud", "mailroom/v1/+/events")
	dead := fmt.Sprintf("mqtts://127.0.0.1:%d", mqtttest.FreePort(t))
	o := newOutbox(t)
	appendScans(t, o, 0, 10)
	r := start(t, o, uplink.Options{Brokers: []string{dead, b.URL()}, TLS: clientTLS(t, b)})
	checkDelivery(t, sub.WaitFor(t, 20*time.Second, "10 events", mqtttest.DistinctEvents(10)), 10)
	if st := r.p.State(); st.Broker != b.URL() {
		t.Fatalf("connected broker = %q, want %q", st.Broker, b.URL())
	}
}

// TestBatchesAreFull checks that a backlog drains in full messages: each
// but the last holds batch_max events, or as many as fit under the
// 120 KiB a message may take (docs/mqtt-api.md); a batch is never cut
// short where the uplink's reads of the buffer end.
func TestBatchesAreFull(t *testing.T) {
	for _, tc := range []struct{ batchMax, codeLen, n int }{
		{100, 0, 1000},
		{300, 0, 1000},
		{500, 400, 2000}, // about 300 events fit a message
	} {
		t.Run(fmt.Sprint(tc.batchMax), func(t *testing.T) {
			b := mqtttest.Start(t)
			sub := b.Subscribe(t, "cloud", "mailroom/v1/"+appliance+"/events/batch")
			o := newOutbox(t)
			for i := range tc.n {
				code := fmt.Sprintf("1Z%016d", i)
				code += strings.Repeat("9", max(0, tc.codeLen-len(code)))
				if _, err := o.Append(context.Background(), event.Event{Appliance: appliance, Type: event.TypeScan,
					Time: time.Now(), Device: "dock", Barcode: []byte(code)}); err != nil {
					t.Fatal(err)
				}
			}
			start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b), BatchMax: tc.batchMax, Window: 4})
			msgs := sub.WaitFor(t, 30*time.Second, fmt.Sprint(tc.n, " events in batches"), func(ms []mqtttest.Message) bool {
				n := 0
				for _, m := range ms {
					var arr []json.RawMessage
					json.Unmarshal(m.Payload, &arr)
					n += len(arr)
				}
				return n >= tc.n
			})
			total, cut := 0, 0
			for k, m := range msgs {
				var arr []json.RawMessage
				if err := json.Unmarshal(m.Payload, &arr); err != nil {
					t.Fatalf("batch is not a JSON array: %v", err)
				}
				total += len(arr)
				if k == len(msgs)-1 || len(arr) == tc.batchMax {
					continue
				}
				var next []json.RawMessage
				json.Unmarshal(msgs[k+1].Payload, &next)
				if len(m.Payload)+1+len(next[0]) < 120<<10 {
					t.Errorf("message %d of %d holds %d events (%d bytes): the next one (%d bytes) would have fit", k+1, len(msgs), len(arr), len(m.Payload), len(next[0]))
				}
				cut++
			}
			if total != tc.n {
				t.Fatalf("%d events in %d messages, want %d", total, len(msgs), tc.n)
			}
			if tc.codeLen > 0 && cut == 0 {
				t.Fatal("no message was cut by its size: the case does not test it")
			}
		})
	}
}

func TestBatchesDrainInOrder(t *testing.T) {
	b := mqtttest.Start(t)
	sub := b.Subscribe(t, "cloud", "mailroom/v1/"+appliance+"/events/batch")
	o := newOutbox(t)
	appendScans(t, o, 0, 1000)
	r := start(t, o, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b), BatchMax: 50, Window: 4})
	count := func(ms []mqtttest.Message) int {
		n := 0
		for _, m := range ms {
			var arr []json.RawMessage
			json.Unmarshal(m.Payload, &arr)
			n += len(arr)
		}
		return n
	}
	msgs := sub.WaitFor(t, 30*time.Second, "1000 events in batches", func(ms []mqtttest.Message) bool { return count(ms) >= 1000 })
	var last int64
	seen := map[int64]bool{}
	for _, m := range msgs {
		var arr []json.RawMessage
		if err := json.Unmarshal(m.Payload, &arr); err != nil {
			t.Fatalf("batch is not a JSON array: %v", err)
		}
		if len(arr) > 50 {
			t.Fatalf("batch of %d events, max 50", len(arr))
		}
		for _, raw := range arr {
			ev, err := event.Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !seen[ev.Seq] && ev.Seq < last {
				t.Fatalf("seq %d after %d", ev.Seq, last)
			}
			seen[ev.Seq] = true
			last = max(last, ev.Seq)
		}
	}
	if len(seen) != 1000 || len(msgs) > 40 {
		t.Fatalf("%d distinct events in %d messages", len(seen), len(msgs))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, _ := o.Stats(context.Background()); st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events not marked sent after their batch's PUBACK")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
}

// gatedSource is a buffer whose reads of pending events wait while the
// gate is shut.
type gatedSource struct {
	*store.Outbox
	mu   sync.Mutex
	gate chan struct{} // closed: open
}

func (g *gatedSource) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedSource) open() {
	g.mu.Lock()
	close(g.gate)
	g.mu.Unlock()
}

func (g *gatedSource) Pending(ctx context.Context, after int64, limit int) ([]store.Record, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	select {
	case <-gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Outbox.Pending(ctx, after, limit)
}

// CaughtUp is false from the moment an event is committed until it is on
// the connection, not only once the publisher has read it: what shares
// the connection (photos) must not slip in before it.
func TestCaughtUpIncludesAnEventJustCommitted(t *testing.T) {
	b := mqtttest.Start(t)
	sub := b.Subscribe(t, "cloud", "mailroom/v1/+/events")
	src := &gatedSource{Outbox: newOutbox(t), gate: make(chan struct{})}
	close(src.gate)
	r := start(t, src, uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b), Version: "test"})
	waitfor.True(t, 10*time.Second, "caught up on an empty buffer", r.p.CaughtUp)
	src.shut() // the publisher's next read waits
	appendScans(t, src.Outbox, 0, 1)
	if r.p.CaughtUp() {
		t.Fatal("caught up with an event committed and not read, let alone published")
	}
	src.open()
	sub.WaitFor(t, 10*time.Second, "the event", mqtttest.DistinctEvents(1))
	waitfor.True(t, 10*time.Second, "caught up once the event is on the connection", r.p.CaughtUp)
}

// TestRepublishSendsAsTheDrainDoes: events published again (the fleet's
// resend) go as batches on events/batch when batching is on, never on
// events, in order, each message under 120 KiB with its commas and
// brackets.
func TestRepublishSendsAsTheDrainDoes(t *testing.T) {
	b := mqtttest.Start(t)
	batches := b.Subscribe(t, "cloud-batches", "mailroom/v1/"+appliance+"/events/batch")
	singles := b.Subscribe(t, "cloud-singles", "mailroom/v1/"+appliance+"/events")
	r := start(t, newOutbox(t), uplink.Options{Brokers: []string{b.URL()}, TLS: clientTLS(t, b), BatchMax: 50})
	waitfor.True(t, 10*time.Second, "connected", func() bool { return r.p.State().Connected })
	var small, large [][]byte
	for i := range 120 {
		small = append(small, []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	pad := func(n, size int) []byte {
		return []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, n, strings.Repeat("x", size-len(fmt.Sprintf(`{"n":%d,"pad":""}`, n)))))
	}
	// Two events of 61,438 and 61,439 bytes make a message of exactly
	// 120 KiB with "[", "," and "]": one too many, so they go apart.
	large = [][]byte{pad(1000, 61438), pad(1001, 61439), pad(1002, 40960), pad(1003, 40960)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, set := range [][][]byte{small, large} {
		if n, err := r.p.Republish(ctx, set); err != nil || n != len(set) {
			t.Fatalf("republish %d events: %d acknowledged, %v", len(set), n, err)
		}
	}
	batches.WaitFor(t, 10*time.Second, "6 batches", func(ms []mqtttest.Message) bool { return len(ms) >= 6 })
	time.Sleep(200 * time.Millisecond) // nothing more comes
	msgs := batches.Messages()
	var sizes []int
	var got []string
	for _, m := range msgs {
		var arr []json.RawMessage
		if err := json.Unmarshal(m.Payload, &arr); err != nil {
			t.Fatalf("batch is not a JSON array: %v", err)
		}
		if len(m.Payload) >= 120*1024 {
			t.Errorf("a batch of %d bytes, not under 120 KiB", len(m.Payload))
		}
		sizes = append(sizes, len(arr))
		for _, e := range arr {
			got = append(got, string(e))
		}
	}
	if want := []int{50, 50, 20, 1, 2, 1}; !slices.Equal(sizes, want) {
		t.Errorf("batch sizes %v, want %v", sizes, want)
	}
	var want []string
	for _, p := range append(small, large...) {
		want = append(want, string(p))
	}
	if !slices.Equal(got, want) {
		t.Error("events republished out of order or changed")
	}
	if n := len(singles.Messages()); n != 0 {
		t.Errorf("%d messages on events while batching", n)
	}
}

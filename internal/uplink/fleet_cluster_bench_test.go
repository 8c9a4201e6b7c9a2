package uplink_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// BenchmarkFleetCluster runs many appliances' uplinks (each its own SQLite
// buffer, certificate and mutual-TLS connection, with the three
// remote-instruction subscriptions a box makes) in one process against a
// 3-node nats-server cluster (JetStream, MQTT streams and consumers with 3
// replicas): MAILROOMD_FLEET_CLUSTER boxes (default 1000), each listing
// the three nodes (starting with a different one, so that a third of the
// fleet is on each node) and committing one scan a second, for
// MAILROOMD_FLEET_SECONDS (default 60). A third of the way in, node n0 is
// killed; two thirds in, it is restarted. Two durable subscribers (clean
// session off, QoS 1) on n1 and n2 must together hold every committed
// event of every box; what one of them missed alone is reported as the
// engine's skip. It reports the memory one box's uplink and open buffer
// cost, the rate the cluster acknowledged (mean, and the lowest second
// after the kill), how long the boxes on n0 took to be connected again
// (to any node, p50 and p99), and the nodes' resident memory.
func BenchmarkFleetCluster(b *testing.B) {
	boxes, seconds := 1000, 60
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_FLEET_CLUSTER")); err == nil && n > 0 {
		boxes = n
	}
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_FLEET_SECONDS")); err == nil && n >= 15 {
		seconds = n
	}
	for i := 0; i < b.N; i++ {
		runFleetCluster(b, boxes, time.Duration(seconds)*time.Second)
	}
}

// clusterBox is one simulated appliance of BenchmarkFleetCluster.
type clusterBox struct {
	id     string
	o      *store.Outbox
	p      *uplink.Publisher
	cancel context.CancelFunc
	done   chan struct{}
}

func runFleetCluster(b *testing.B, boxes int, run time.Duration) {
	cl := mqtttest.StartNATSCluster(b)
	quiet := slog.New(slog.DiscardHandler)
	subs := []*fleetSubscriber{startFleetSubscriber(b, cl, "cloud-a", 1), startFleetSubscriber(b, cl, "cloud-b", 2)}

	var acked atomic.Int64
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	all := make([]*clusterBox, boxes)
	urls := cl.URLs()
	noop := func(string, []byte, bool) {}
	for n := range all {
		id := fmt.Sprintf("mr-fleet-%04d", n)
		o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(b.TempDir(), "buffer.db")})
		if err != nil {
			b.Fatal(err)
		}
		// A third of the fleet starts on each node.
		brokers := append(slices.Clone(urls[n%len(urls):]), urls[:n%len(urls)]...)
		p, err := uplink.New(o, uplink.Options{Brokers: brokers, TLS: cl.TLSConfig(b, id), ClientID: id,
			TopicPrefix: "mailroom/v1", Window: 64, KeepAlive: 30 * time.Second, ConnectTimeout: 10 * time.Second,
			ReconnectMin: time.Second, ReconnectMax: 60 * time.Second, Logger: quiet,
			Subscriptions: []uplink.Subscription{{Filter: "cmd/+", Handler: noop}, {Filter: "probe", Handler: noop}, {Filter: "config/desired", Handler: noop}},
			OnAck:         func(int64, time.Duration) { acked.Add(1) }})
		if err != nil {
			b.Fatal(err)
		}
		all[n] = &clusterBox{id: id, o: o, p: p, done: make(chan struct{})}
	}
	start := time.Now()
	for _, bx := range all {
		ctx, cancel := context.WithCancel(context.Background())
		bx.cancel = cancel
		go func() { bx.p.Run(ctx); close(bx.done) }()
	}
	defer func() {
		for _, bx := range all {
			bx.cancel()
		}
		for _, bx := range all {
			<-bx.done
			bx.o.Close()
		}
	}()
	waitfor.True(b, 5*time.Minute, fmt.Sprintf("all %d boxes connected", boxes), func() bool {
		for _, bx := range all {
			if !bx.p.State().Connected {
				return false
			}
		}
		return true
	})
	connected := time.Since(start)

	// One scan a second per box, spread over the second.
	gen, stopGen := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for n, bx := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(n) * time.Second / time.Duration(boxes)):
			case <-gen.Done():
				return
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				bx.o.Append(context.Background(), event.Event{Appliance: bx.id, Type: event.TypeScan,
					Time: time.Now(), Device: "dock", Barcode: []byte("1Z999AA10123456784")})
				select {
				case <-tick.C:
				case <-gen.Done():
					return
				}
			}
		}()
	}
	// The rate the cluster acknowledges, sampled about every second (on a
	// loaded machine the sampler may run late: each rate is over the time
	// that actually passed).
	type sample struct {
		at    time.Time
		acked int64
	}
	samples := []sample{{time.Now(), acked.Load()}}
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				samples = append(samples, sample{time.Now(), acked.Load()})
			case <-gen.Done():
				samples = append(samples, sample{time.Now(), acked.Load()})
				return
			}
		}
	}()
	runStart := time.Now()
	time.Sleep(run / 3)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	perBox := float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse)) / float64(boxes)
	var rss int64
	for i := range urls {
		rss += cl.RSS(i)
	}

	// Kill n0: the boxes on it must find another node.
	var onKilled []*clusterBox
	for _, bx := range all {
		if st := bx.p.State(); st.Connected && st.Broker == urls[0] {
			onKilled = append(onKilled, bx)
		}
	}
	killed := time.Now()
	cl.Kill(0)
	// How long each box of the killed node takes to be connected again,
	// watched while the run goes on.
	reconnected := make(chan []time.Duration, 1)
	go func() {
		at := make(map[*clusterBox]time.Duration, len(onKilled))
		deadline := killed.Add(5 * time.Minute)
		for len(at) < len(onKilled) && time.Now().Before(deadline) {
			for _, bx := range onKilled {
				if _, ok := at[bx]; ok {
					continue
				}
				if st := bx.p.State(); st.Connected && st.Since.After(killed) {
					at[bx] = st.Since.Sub(killed)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		var d []time.Duration
		for _, v := range at {
			d = append(d, v)
		}
		reconnected <- d
	}()
	time.Sleep(time.Until(killed.Add(run / 3)))
	cl.Restart(0)
	time.Sleep(time.Until(runStart.Add(run)))
	stopGen()
	wg.Wait()
	<-sampleDone
	generated := time.Since(runStart)
	reconnect := <-reconnected
	if len(reconnect) < len(onKilled) {
		b.Fatalf("%d of the %d boxes on the killed node reconnected within 5 minutes", len(reconnect), len(onKilled))
	}

	// Every box drains; every committed event reaches the cloud side.
	var committed int64
	last := map[string]int64{}
	waitfor.True(b, 5*time.Minute, "every box drained", func() bool {
		for _, bx := range all {
			if st, _ := bx.o.Stats(context.Background()); st.Pending > 0 {
				return false
			}
		}
		return true
	})
	for _, bx := range all {
		st, _ := bx.o.Stats(context.Background())
		last[bx.id] = st.LastSeq
		committed += st.LastSeq
	}
	if err := waitfor.Until(2*time.Minute, func() bool { return fleetHeld(subs, last) == 0 }); err != nil {
		b.Fatalf("%d of %d committed events reached neither durable subscriber (%v)", fleetHeld(subs, last), committed, err)
	}
	// Each subscriber alone: what it still lacks a minute after the two
	// together held everything, the engine skipped for its session.
	waitfor.Until(time.Minute, func() bool { return subs[0].missing(last) == 0 && subs[1].missing(last) == 0 })
	skipped := int64(0)
	for _, s := range subs {
		if missed := s.missing(last); missed > 0 {
			skipped += missed
			b.Logf("%s: %d events the other subscriber received did not arrive for this session within a minute", s.id, missed)
		}
	}

	slices.Sort(reconnect)
	rank := func(q float64) time.Duration {
		return reconnect[min(len(reconnect)-1, int(q*float64(len(reconnect)-1)+0.5))]
	}
	var rates []string
	lowest := -1.0
	for k := 1; k < len(samples); k++ {
		r := float64(samples[k].acked-samples[k-1].acked) / samples[k].at.Sub(samples[k-1].at).Seconds()
		rates = append(rates, strconv.Itoa(int(r)))
		if !samples[k-1].at.Before(killed) && samples[k-1].at.Before(killed.Add(run/3)) && (lowest < 0 || r < lowest) {
			lowest = r
		}
	}
	first, final := samples[0], samples[len(samples)-1]
	ackRate := float64(final.acked-first.acked) / final.at.Sub(first.at).Seconds()
	b.Logf("%d boxes connected in %s; %d events committed in %s, all delivered; %d boxes on the killed node connected again: p50 %s, p99 %s, max %s; acknowledged per second: %s",
		boxes, connected.Round(time.Millisecond), committed, generated.Round(time.Second), len(onKilled),
		rank(0.5).Round(time.Millisecond), rank(0.99).Round(time.Millisecond), reconnect[len(reconnect)-1].Round(time.Millisecond), strings.Join(rates, " "))
	b.ReportMetric(float64(boxes), "appliances")
	b.ReportMetric(float64(committed), "events")
	b.ReportMetric(0, "lost")
	b.ReportMetric(float64(skipped), "skipped-for-one-subscriber")
	b.ReportMetric(float64(committed)/generated.Seconds(), "committed-ev/s")
	b.ReportMetric(ackRate, "acked-ev/s")
	b.ReportMetric(lowest, "lowest-ev/s-after-kill")
	b.ReportMetric(perBox/1024, "KiB/appliance")
	b.ReportMetric(float64(rss)/float64(boxes)/1024, "nats-KiB/appliance")
	b.ReportMetric(rank(0.5).Seconds(), "reconnect-p50-s")
	b.ReportMetric(rank(0.99).Seconds(), "reconnect-p99-s")
}

// fleetHeld is how many committed events (seqs 1..last per box) neither
// subscriber holds.
func fleetHeld(subs []*fleetSubscriber, last map[string]int64) int64 {
	var missing int64
	for id, n := range last {
		for seq := int64(1); seq <= n; seq++ {
			held := false
			for _, s := range subs {
				if s.has(id, seq) {
					held = true
					break
				}
			}
			if !held {
				missing++
			}
		}
	}
	return missing
}

// fleetSubscriber is a durable cloud subscriber (clean session off, QoS 1)
// to every box's events on one node, recording the seqs per box.
type fleetSubscriber struct {
	id   string
	mu   sync.Mutex
	seqs map[string]map[int64]bool
}

func startFleetSubscriber(b *testing.B, cl *mqtttest.NATSCluster, id string, node int) *fleetSubscriber {
	s := &fleetSubscriber{id: id, seqs: map[string]map[int64]bool{}}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		if !strings.HasSuffix(m.Topic(), "/events") {
			return
		}
		ev, err := event.Decode(m.Payload())
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.seqs[ev.Appliance] == nil {
			s.seqs[ev.Appliance] = map[int64]bool{}
		}
		s.seqs[ev.Appliance][ev.Seq] = true
		s.mu.Unlock()
	}
	o := mqtt.NewClientOptions().AddBroker(cl.URL(node)).SetClientID(id).SetTLSConfig(cl.TLSConfig(b, id)).
		SetCleanSession(false).SetAutoReconnect(true).SetProtocolVersion(4).SetOrderMatters(false).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(30 * time.Second).SetDefaultPublishHandler(handler)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		b.Fatalf("subscriber %s connect: %v", id, tok.Error())
	}
	if tok := c.Subscribe("mailroom/v1/+/events", 1, handler); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		b.Fatalf("subscriber %s subscribe: %v", id, tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	return s
}

func (s *fleetSubscriber) has(id string, seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqs[id][seq]
}

// missing is how many committed events this subscriber does not hold.
func (s *fleetSubscriber) missing(last map[string]int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for id, l := range last {
		for seq := int64(1); seq <= l; seq++ {
			if !s.seqs[id][seq] {
				n++
			}
		}
	}
	return n
}

package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// clusterConnectTimeout is the box's default uplink.connect_timeout, which
// the bare client beside it uses too.
const clusterConnectTimeout = 10 * time.Second

// TestClusterNodeLoss runs the real binary against a 3-node nats-server
// cluster (JetStream, MQTT over mutual TLS, streams and consumers with 3
// replicas), `uplink.brokers` listing all three nodes and the uplink's
// default timings, while a simulated scanner commits 100 scans a second.
// It kills the node the box is connected to (MAILROOMD_CLUSTER_KILLS
// times, default 1: a kill and its failover take up to a minute here),
// restarts it after the failover, and before the next kill waits until
// every replica is current again, so that each kill is a single failure.
// Beside the box, a bare paho QoS 1 publisher with no subscriptions, no
// will and no retained status, on the same node, with the same endpoint
// list and connect timeout and the same message rate, does the same, so
// that the box's share of each failover can be told from the engine's.
// Each failover is measured from the kill to the CONNACK of the next node,
// to the PUBACK of the first message made after the kill, and to that
// message's arrival at a subscriber. Two durable subscribers (clean
// session off, QoS 1), always on the two nodes the box is not on, must
// together hold every committed event: seqs gapless, ids unique, resends
// identical. What one of them misses while the other has it, the engine
// skipped for that session; the test logs it (docs/mqtt-api.md).
func TestClusterNodeLoss(t *testing.T) {
	kills := 1
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_CLUSTER_KILLS")); err == nil && n > 0 {
		kills = n
	}
	const id, interval = "mr-cluster-01", 10 * time.Millisecond
	cl := mqtttest.StartNATSCluster(t)
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("MAILROOMD_CLUSTER_LOGS") == "" {
			return
		}
		for i := 0; i < mqtttest.ClusterSize; i++ {
			for _, line := range strings.Split(cl.Log(i), "\n") {
				if strings.Contains(line, "[WRN]") || strings.Contains(line, "[ERR]") || strings.Contains(line, "leader") {
					t.Logf("n%d: %s", i, line)
				}
			}
		}
	})
	dir := t.TempDir()
	cert, key := mqtttest.WriteClient(t, cl.CA, id)
	dbPath := filepath.Join(dir, "buffer.db")
	// The uplink's defaults otherwise: connect timeout 10 s, reconnect
	// backoff from 1 s, keepalive 30 s.
	cfgText := fmt.Sprintf(`version: 1
appliance: {id: %s, site: test-site}
storage: {path: %s, retain_sent: 720h}
uplink:
  brokers: [%s]
  ca_file: %s
  cert_file: %s
  key_file: %s
devices:
  - {name: sim, kind: scanner, driver: sim, interval: %s, seed: 5}
log: {level: info}
`, id, dbPath, strings.Join(cl.URLs(), ", "), cl.CAFile, cert, key, interval)
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}

	filters := []string{"mailroom/v1/" + id + "/events", "bare/" + bareID + "/events"}
	subs := []*durableSubscriber{newDurableSubscriber(t, cl, "cloud-01", filters), newDurableSubscriber(t, cl, "cloud-02", filters)}
	subs[0].moveTo(t, 1)
	subs[1].moveTo(t, 2)
	var timeline []string
	note := func(format string, args ...any) {
		timeline = append(timeline, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
	// firstAfter is when the first message from who with a seq above mark
	// reached either subscriber.
	firstAfter := func(who string, mark int64) (time.Time, bool) {
		var first time.Time
		for _, s := range subs {
			if at, ok := s.firstAfter(who, mark); ok && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		return first, !first.IsZero()
	}
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 30*time.Second)
	bare := startBarePublisher(t, cl, interval)

	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	committed := func() int64 {
		var seq sql.NullInt64
		db.QueryRow("SELECT max(seq) FROM events").Scan(&seq)
		return seq.Int64
	}
	// ackedAfter: an event committed after mark is marked sent (the box
	// marks an event sent within 5 ms of its PUBACK).
	ackedAfter := func(mark int64) bool {
		var n int
		db.QueryRow("SELECT count(*) FROM events WHERE seq > ? AND pos <= (SELECT coalesce(max(pos), 0) FROM sent_marks)", mark).Scan(&n)
		return n > 0
	}

	var rounds []failover
	for r := 0; r < kills; r++ {
		// Both publishers are on one node and delivering; the two
		// subscribers are on the other two.
		node := waitfor.Value(t, 60*time.Second, "the box connected to a node", func() int { return cl.Node(connectedBroker(p.log.String())) },
			func(n int) bool { return n >= 0 })
		// The bare publisher beside the box; if the engine does not take
		// it on the box's node, this kill measures the box alone.
		bareHere := bare.moveTo(node)
		for _, s := range subs {
			if s.node() == node {
				other := subs[0].node() + subs[1].node() - node
				free := 3 - node - other // the third node's index
				note("%s moves from n%d to n%d", s.id, node, free)
				s.moveTo(t, free)
			}
		}
		sub := subs[0]
		boxSeen, bareSeen := sub.latest(id), sub.latest(bareID)
		waitfor.True(t, 60*time.Second, "both publishers delivering before the kill", func() bool {
			return sub.latest(id) > boxSeen+10 && (!bareHere || sub.latest(bareID) > bareSeen+10)
		})
		// A single failure: every replica is current before the kill.
		cl.WaitHealthy(3 * time.Minute)
		connects := strings.Count(p.log.String(), `msg="uplink connected"`)
		killed := time.Now()
		cl.Kill(node)
		boxMark, bareMark := committed(), bare.made()
		note("kill n%d (box events up to seq %d committed)", node, boxMark)
		f := failover{node: node}
		err := waitfor.Until(2*time.Minute, func() bool {
			since := time.Since(killed)
			if f.boxConnect == 0 && strings.Count(p.log.String(), `msg="uplink connected"`) > connects {
				f.boxConnect = since
			}
			if f.boxAcked == 0 && ackedAfter(boxMark) {
				f.boxAcked = since
			}
			if f.bareAcked == 0 && bare.acked.Load() > bareMark {
				f.bareAcked = since
			}
			if f.boxDelivered == 0 {
				if at, ok := firstAfter(id, boxMark); ok {
					f.boxDelivered = at.Sub(killed)
				}
			}
			if f.bareDelivered == 0 {
				if at, ok := firstAfter(bareID, bareMark); ok {
					f.bareDelivered = at.Sub(killed)
				}
			}
			return f.boxConnect > 0 && f.boxAcked > 0 && f.boxDelivered > 0 && (!bareHere || f.bareAcked > 0 && f.bareDelivered > 0)
		})
		f.bareConnect = bare.connectedSince(killed)
		f.bare = bareHere
		if err != nil {
			t.Fatalf("kill %d of node n%d: %v: failover not complete (%+v)", r+1, node, err, f)
		}
		if !bareHere {
			t.Logf("kill %d: the bare publisher could not be moved to n%d; its figures are left out", r+1, node)
		}
		t.Logf("kill %d of node n%d: box on n%d: CONNACK %s, first PUBACK %s, at the subscriber %s; bare client: CONNACK %s, first PUBACK %s, at the subscriber %s",
			r+1, node, cl.Node(connectedBroker(p.log.String())), f.boxConnect.Round(time.Millisecond), f.boxAcked.Round(time.Millisecond), f.boxDelivered.Round(time.Millisecond),
			f.bareConnect.Round(time.Millisecond), f.bareAcked.Round(time.Millisecond), f.bareDelivered.Round(time.Millisecond))
		rounds = append(rounds, f)
		cl.Restart(node)
		note("n%d restarted", node)
	}
	bare.stop()

	// Stop scanning, then let a daemon without devices drain the backlog.
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(cfgText, fmt.Sprintf("  - {name: sim, kind: scanner, driver: sim, interval: %s, seed: 5}\n", interval), "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p = startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 60*time.Second)
	waitDrained(t, dbPath)
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	last := committed()
	if last < 100 {
		t.Fatalf("only %d events committed: the scanner did not run", last)
	}
	// Every committed event reached the cloud side: the two durable
	// subscribers together hold every seq. What one of them missed while
	// the other got it, the engine skipped for that session (see
	// docs/mqtt-api.md, broker compatibility).
	waitfor.True(t, 60*time.Second, fmt.Sprintf("the durable subscribers together received all %d committed events", last), func() bool {
		return heldTogether(subs, id, last) >= int(last)
	})
	// A session's late redelivery comes after NATS's ack wait (30 s); one
	// the engine skipped for good never comes (checked below).
	waitfor.Until(35*time.Second, func() bool { return subs[0].distinct(id) >= int(last) && subs[1].distinct(id) >= int(last) })
	all := map[int64]event.Event{}
	dups := 0
	for _, s := range subs {
		evs, d, late := mqtttest.DeliveredAnyOrder(t, s.messages(id))
		dups += d
		if late > 0 {
			t.Logf("%s: %d events first arrived after a higher seq (the engine redelivered them to this session late)", s.id, late)
		}
		for seq, ev := range evs {
			if prev, ok := all[seq]; ok && (prev.ID != ev.ID || string(prev.Barcode) != string(ev.Barcode)) {
				t.Fatalf("seq %d reached the two subscribers as two events: %s and %s", seq, prev.ID, ev.ID)
			}
			all[seq] = ev
		}
		if missing := s.gaps(id, last); len(missing) > 0 {
			t.Logf("%s: the engine skipped box events %v for this session (the other subscriber got them)", s.id, missing)
		}
	}
	t.Logf("timeline:\n%s", strings.Join(timeline, "\n"))
	gapless(t, all)
	if int64(len(all)) != last {
		t.Fatalf("the subscribers hold %d distinct events of %d committed", len(all), last)
	}
	ids := map[string]bool{}
	for _, ev := range all {
		if ids[ev.ID] {
			t.Fatalf("two seqs carried id %s", ev.ID)
		}
		ids[ev.ID] = true
	}
	t.Logf("%d kills: %d events committed, every one at the durable subscribers together (%d resends); %d bare messages made",
		kills, last, dups, bare.made())
	t.Log(failoverTable(rounds))
}

// failover is what one kill of the box's node cost.
type failover struct {
	node int
	// boxConnect and bareConnect run from the kill to the CONNACK of
	// the next node; boxAcked and bareAcked to the PUBACK of the first
	// message made after the kill; boxDelivered and bareDelivered to its
	// arrival at	// the subscriber of the first message made after the kill.
	boxConnect, boxAcked, boxDelivered, bareConnect, bareAcked, bareDelivered time.Duration
	// bare: the bare publisher was on the killed node (its figures count).
	bare bool
}

// failoverTable summarises the rounds: p50 and p99 (nearest rank) of each
// figure.
func failoverTable(rounds []failover) string {
	pick := func(bare bool, get func(failover) time.Duration) string {
		var d []time.Duration
		for _, r := range rounds {
			if !bare || r.bare {
				d = append(d, get(r))
			}
		}
		if len(d) == 0 {
			return "not measured"
		}
		slices.Sort(d)
		rank := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d)-1)+0.5))] }
		return fmt.Sprintf("p50 %6.2f s  p99 %6.2f s  max %6.2f s", rank(0.5).Seconds(), rank(0.99).Seconds(), d[len(d)-1].Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "failover over %d kills of the connected node (p99: nearest rank):\n", len(rounds))
	for _, row := range []struct {
		what string
		get  func(failover) time.Duration
	}{
		{"box,  kill to CONNACK", func(f failover) time.Duration { return f.boxConnect }},
		{"bare, kill to CONNACK", func(f failover) time.Duration { return f.bareConnect }},
		{"box,  kill to first new PUBACK", func(f failover) time.Duration { return f.boxAcked }},
		{"bare, kill to first new PUBACK", func(f failover) time.Duration { return f.bareAcked }},
		{"box,  kill to first new at subscriber", func(f failover) time.Duration { return f.boxDelivered }},
		{"bare, kill to first new at subscriber", func(f failover) time.Duration { return f.bareDelivered }},
	} {
		fmt.Fprintf(&b, "  %-38s %s\n", row.what+":", pick(strings.HasPrefix(row.what, "bare"), row.get))
	}
	return b.String()
}

var connectedRE = regexp.MustCompile(`msg="uplink connected".*? broker=(\S+)`)

// connectedBroker is the broker of the daemon's last "uplink connected".
func connectedBroker(log string) string {
	m := connectedRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// bareID is the client id (and certificate CN) of the bare publisher.
const bareID = "bare-01"

// barePublisher is a paho QoS 1 publisher with nothing else on its
// connection: no subscriptions, no will, no retained status. Every
// interval it makes the next message (a counter), and it publishes them in
// order with up to 64 in flight, resending from the first unacknowledged
// one after a reconnect, as the box does from its buffer. After a lost
// connection it tries the next node at once, then the others.
type barePublisher struct {
	cl     *mqtttest.NATSCluster
	tls    *tls.Config
	cancel context.CancelFunc
	done   chan struct{}

	due   atomic.Int64 // messages made
	acked atomic.Int64 // highest message acknowledged, all below too
	want  atomic.Int64 // node to connect to next

	mu       sync.Mutex
	client   mqtt.Client
	nodeIdx  int
	connects []time.Time
}

func startBarePublisher(t *testing.T, cl *mqtttest.NATSCluster, interval time.Duration) *barePublisher {
	ctx, cancel := context.WithCancel(context.Background())
	b := &barePublisher{cl: cl, tls: cl.TLSConfig(t, bareID), cancel: cancel, done: make(chan struct{}), nodeIdx: -1}
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				b.due.Add(1)
			case <-ctx.Done():
				return
			}
		}
	}()
	go b.run(ctx)
	t.Cleanup(b.stop)
	return b
}

func (b *barePublisher) stop() {
	b.cancel()
	<-b.done
}

// made is how many messages the publisher has made.
func (b *barePublisher) made() int64 { return b.due.Load() }

// connectedSince is the time from since to the first CONNACK after it (0:
// none yet).
func (b *barePublisher) connectedSince(since time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, at := range b.connects {
		if at.After(since) {
			return at.Sub(since)
		}
	}
	return 0
}

// moveTo has the publisher connected to node i, reconnecting as often as
// needed within a minute; false if the engine did not take it there.
func (b *barePublisher) moveTo(i int) bool {
	return waitfor.Until(time.Minute, func() bool {
		b.mu.Lock()
		c, on := b.client, b.nodeIdx
		b.want.Store(int64(i))
		b.mu.Unlock()
		if on == i && c != nil && c.IsConnectionOpen() {
			return true
		}
		if c != nil && on != i {
			c.Disconnect(0)
		}
		return false
	}) == nil
}

// run connects, publishes until the connection fails, and reconnects,
// until ctx ends.
func (b *barePublisher) run(ctx context.Context) {
	defer close(b.done)
	for ctx.Err() == nil {
		start := int(b.want.Load())
		var c mqtt.Client
		var node int
		for k := 0; k < mqtttest.ClusterSize && c == nil && ctx.Err() == nil; k++ {
			node = (start + k) % mqtttest.ClusterSize
			c = b.connect(node)
		}
		if c == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		b.mu.Lock()
		b.client, b.nodeIdx = c, node
		b.connects = append(b.connects, time.Now())
		b.mu.Unlock()
		b.serve(ctx, c)
		c.Disconnect(0)
		b.mu.Lock()
		b.client, b.nodeIdx = nil, -1
		b.mu.Unlock()
		if int(b.want.Load()) == node {
			b.want.Store(int64((node + 1) % mqtttest.ClusterSize))
		}
	}
}

// connect dials node i with the box's default connect timeout.
func (b *barePublisher) connect(i int) mqtt.Client {
	o := mqtt.NewClientOptions().AddBroker(b.cl.URL(i)).SetClientID(bareID).SetTLSConfig(b.tls).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(clusterConnectTimeout).SetOrderMatters(false)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(clusterConnectTimeout+time.Second) || tok.Error() != nil {
		go func() { tok.Wait(); c.Disconnect(0) }()
		return nil
	}
	return c
}

// serve publishes made messages in order, up to 64 unacknowledged, until
// a publish fails, the connection drops or ctx ends.
func (b *barePublisher) serve(ctx context.Context, c mqtt.Client) {
	type inflight struct {
		n   int64
		tok mqtt.Token
	}
	window := make(chan inflight, 64)
	failed := make(chan struct{})
	go func() {
		defer close(failed)
		for f := range window {
			if !f.tok.WaitTimeout(clusterConnectTimeout) || f.tok.Error() != nil {
				return
			}
			b.acked.Store(f.n)
		}
	}()
	defer func() {
		close(window)
		<-failed
	}()
	next := b.acked.Load() + 1
	for {
		for next <= b.due.Load() {
			select {
			case window <- inflight{n: next, tok: c.Publish("bare/"+bareID+"/events", 1, false, strconv.FormatInt(next, 10))}:
				next++
			case <-failed:
				return
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-failed:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
		if !c.IsConnectionOpen() {
			return
		}
	}
}

// durableSubscriber is the cloud side: a persistent session (clean
// session off) with QoS 1 subscriptions, recording when each message
// arrived. It stays on one node until moved.
type durableSubscriber struct {
	cl      *mqtttest.NATSCluster
	id      string
	filters []string
	tls     *tls.Config

	mu     sync.Mutex
	client mqtt.Client
	on     int
	msgs   map[string][]arrival // by publisher id
	high   map[string]int64     // highest seq/counter seen per publisher
	seen   map[string]map[int64]bool
}

// arrival is one message and when it arrived.
type arrival struct {
	m   mqtttest.Message
	seq int64
	at  time.Time
}

func newDurableSubscriber(t *testing.T, cl *mqtttest.NATSCluster, id string, filters []string) *durableSubscriber {
	s := &durableSubscriber{cl: cl, id: id, filters: filters, tls: cl.TLSConfig(t, id), on: -1,
		msgs: map[string][]arrival{}, high: map[string]int64{}, seen: map[string]map[int64]bool{}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.client != nil {
			s.client.Disconnect(100)
		}
	})
	return s
}

func (s *durableSubscriber) add(m mqtt.Message) {
	at := time.Now()
	var who string
	var seq int64
	switch {
	case strings.HasPrefix(m.Topic(), "bare/"):
		who = bareID
		seq, _ = strconv.ParseInt(string(m.Payload()), 10, 64)
	case strings.HasPrefix(m.Topic(), "mailroom/v1/"):
		who = strings.SplitN(strings.TrimPrefix(m.Topic(), "mailroom/v1/"), "/", 2)[0]
		if ev, err := event.Decode(m.Payload()); err == nil {
			seq = ev.Seq
		}
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs[who] = append(s.msgs[who], arrival{m: mqtttest.Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained()}, seq: seq, at: at})
	s.high[who] = max(s.high[who], seq)
	if s.seen[who] == nil {
		s.seen[who] = map[int64]bool{}
	}
	s.seen[who][seq] = true
}

// distinct is how many different seqs (or counters) arrived from who.
// heldTogether is how many of the seqs 1..last from who the subscribers
// hold between them.
func heldTogether(subs []*durableSubscriber, who string, last int64) int {
	n := 0
	for seq := int64(1); seq <= last; seq++ {
		for _, s := range subs {
			s.mu.Lock()
			ok := s.seen[who][seq]
			s.mu.Unlock()
			if ok {
				n++
				break
			}
		}
	}
	return n
}

func (s *durableSubscriber) distinct(who string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen[who])
}

// moveTo disconnects cleanly and resumes the session on node i.
func (s *durableSubscriber) moveTo(t *testing.T, i int) {
	t.Helper()
	s.mu.Lock()
	old := s.client
	s.client, s.on = nil, -1
	s.mu.Unlock()
	if old != nil {
		old.Disconnect(250)
	}
	o := mqtt.NewClientOptions().AddBroker(s.cl.URL(i)).SetClientID(s.id).SetTLSConfig(s.tls).
		SetCleanSession(false).SetAutoReconnect(false).SetProtocolVersion(4).SetOrderMatters(true).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(clusterConnectTimeout).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { s.add(m) })
	var c mqtt.Client
	waitfor.True(t, 2*time.Minute, fmt.Sprintf("durable subscriber connected to n%d", i), func() bool {
		c = mqtt.NewClient(o)
		tok := c.Connect()
		return tok.WaitTimeout(clusterConnectTimeout+time.Second) && tok.Error() == nil
	})
	filters := map[string]byte{}
	for _, f := range s.filters {
		filters[f] = 1
	}
	tok := c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) { s.add(m) })
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("durable subscriber on n%d: subscribe: %v", i, tok.Error())
	}
	s.mu.Lock()
	s.client, s.on = c, i
	s.mu.Unlock()
}

// node is the node the subscriber is connected to.
func (s *durableSubscriber) node() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// latest is the highest seq (or counter) received from publisher who.
func (s *durableSubscriber) latest(who string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.high[who]
}

// firstAfter is when the first message from who with a seq above mark
// arrived at this subscriber.
func (s *durableSubscriber) firstAfter(who string, mark int64) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.msgs[who] {
		if a.seq > mark {
			return a.at, true
		}
	}
	return time.Time{}, false
}

// gaps are the ranges of seqs from 1 to last that never arrived from who,
// each with when the message before it arrived (seconds into the run).
func (s *durableSubscriber) gaps(who string, last int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[int64]time.Time{}
	for _, a := range s.msgs[who] {
		if _, ok := seen[a.seq]; !ok {
			seen[a.seq] = a.at
		}
	}
	var out []string
	for seq := int64(1); seq <= last; seq++ {
		if _, ok := seen[seq]; ok {
			continue
		}
		from := seq
		for seq+1 <= last {
			if _, ok := seen[seq+1]; ok {
				break
			}
			seq++
		}
		out = append(out, fmt.Sprintf("%d-%d (after an arrival at %s)", from, seq, seen[from-1].Format("15:04:05.000")))
	}
	return out
}

// messages are the messages received from who, in arrival order.
func (s *durableSubscriber) messages(who string) []mqtttest.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]mqtttest.Message, len(s.msgs[who]))
	for i, a := range s.msgs[who] {
		out[i] = a.m
	}
	return out
}

package uplink_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// fill commits n scan events with many concurrent writers.
func fill(b *testing.B, o *store.Outbox, n int) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := o.Append(context.Background(), event.Event{Appliance: appliance, Site: "bench", Type: event.TypeScan,
					Time: time.Now(), Device: "dock-scanner", Barcode: []byte("1Z999AA10123456784")}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func waitDrained(b *testing.B, o *store.Outbox, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		st, _ := o.Stats(context.Background())
		if st.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d events still pending", st.Pending)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// barePublish publishes n payloads with plain paho QoS 1 and a window of
// the same size, waiting for every PUBACK: the ceiling for the uplink.
func barePublish(b *testing.B, broker *mqtttest.Broker, payload []byte, n, window int) time.Duration {
	opts := mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("bare-publisher").
		SetTLSConfig(broker.TLSConfig(b, "bare-publisher")).SetAutoReconnect(false).SetOrderMatters(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("bare connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		tok := c.Publish("mailroom/v1/bare/events", 1, false, payload)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-tok.Done()
			<-sem
			if tok.Error() != nil {
				b.Error(tok.Error())
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkDrain measures how fast a 100,000-event backlog drains to
// mosquitto over mutual TLS (every event PUBACKed and marked sent), next to
// a bare paho QoS 1 publisher with the same window in the same run. The two
// alternate over two rounds so that a noisy neighbour hits both alike.
func BenchmarkDrain(b *testing.B) {
	// Rounds alternate the bare publisher and the uplink; the ratio
	// reported is the median of the rounds' ratios, so that one burst of
	// the disk's or the host's noise does not decide it.
	const n, rounds = 100000, 4
	const window = 64
	broker := mqtttest.Start(b)
	cert, key := broker.ClientFiles(b, appliance)
	tlsCfg, err := uplink.LoadTLS(broker.Files.CA, cert, key)
	if err != nil {
		b.Fatal(err)
	}
	for it := 0; it < b.N; it++ {
		boxes := make([]*store.Outbox, rounds)
		for r := range boxes {
			if boxes[r], err = store.Open(context.Background(), store.Options{Path: filepath.Join(b.TempDir(), "drain.db")}); err != nil {
				b.Fatal(err)
			}
			fill(b, boxes[r], n)
		}
		recs, _ := boxes[0].Pending(context.Background(), 0, 1)
		payload := recs[0].Payload
		var drainTotal, bareTotal time.Duration
		var ratios []float64
		for r, o := range boxes {
			bare := barePublish(b, broker, payload, n, window)
			bareTotal += bare
			p, err := uplink.New(o, uplink.Options{Brokers: []string{broker.URL()}, TLS: tlsCfg, ClientID: fmt.Sprintf("%s-%d", appliance, r),
				TopicPrefix: "mailroom/v1", Window: window, KeepAlive: 30 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			start := time.Now()
			go func() { p.Run(ctx); close(done) }()
			waitDrained(b, o, 5*time.Minute)
			drain := time.Since(start)
			drainTotal += drain
			ratios = append(ratios, bare.Seconds()/drain.Seconds()*100)
			cancel()
			<-done
			o.Close()
		}
		b.ReportMetric(float64(n*rounds)/drainTotal.Seconds(), "drain-events/s")
		b.ReportMetric(float64(n*rounds)/bareTotal.Seconds(), "bare-paho-msgs/s")
		sort.Float64s(ratios)
		b.ReportMetric((ratios[rounds/2-1]+ratios[rounds/2])/2, "drain-%-of-bare")
		b.ReportMetric(ratios[0], "worst-round-%")
	}
}

// BenchmarkScanToPuback measures, while online, the time from a scan's
// Append call to the PUBACK of its event: commit, wake-up, read, publish
// and broker round trip.
func BenchmarkScanToPuback(b *testing.B) {
	broker := mqtttest.Start(b)
	o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(b.TempDir(), "lat.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	cert, key := broker.ClientFiles(b, appliance)
	tlsCfg, _ := uplink.LoadTLS(broker.Files.CA, cert, key)
	var mu sync.Mutex
	acked := map[int64]chan struct{}{}
	ackCh := func(pos int64) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		c, ok := acked[pos]
		if !ok {
			c = make(chan struct{})
			acked[pos] = c
		}
		return c
	}
	p, _ := uplink.New(o, uplink.Options{Brokers: []string{broker.URL()}, TLS: tlsCfg, ClientID: appliance,
		TopicPrefix: "mailroom/v1", Window: 64, KeepAlive: 30 * time.Second,
		OnAck: func(pos int64, _ time.Duration) { close(ackCh(pos)) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !p.State().Connected {
		time.Sleep(5 * time.Millisecond)
	}
	const scans = 2000
	lat := make([]time.Duration, 0, scans)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		lat = lat[:0]
		var pos int64
		for i := 0; i < scans; i++ {
			t0 := time.Now()
			if _, err := o.Append(ctx, event.Event{Appliance: appliance, Type: event.TypeScan, Time: t0,
				Device: "dock", Barcode: []byte("1Z999AA10123456784")}); err != nil {
				b.Fatal(err)
			}
			pos++ // positions are 1, 2, ... in a fresh buffer
			<-ackCh(pos + int64(it*scans))
			lat = append(lat, time.Since(t0))
			time.Sleep(time.Millisecond) // scans arrive one by one
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

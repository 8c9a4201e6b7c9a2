package uplink_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// BenchmarkFleet runs many appliances' uplinks (their own buffer, their own
// certificate, their own mutual-TLS connection) in one process against one
// mosquitto: every box has a backlog (500 events) as after a cloud outage,
// then all connect and drain at once (MAILROOMD_FLEET boxes, default 100).
// It reports the rate the broker acknowledged (fan-in), and the memory one
// appliance's connected uplink and open buffer cost.
func BenchmarkFleet(b *testing.B) {
	boxes, backlog := 100, 500
	if n, err := strconv.Atoi(os.Getenv("MAILROOMD_FLEET")); err == nil && n > 0 {
		boxes = n
	}
	for i := 0; i < b.N; i++ {
		broker := mqtttest.Start(b)
		quiet := slog.New(slog.DiscardHandler)
		type box struct {
			o      *store.Outbox
			p      *uplink.Publisher
			cancel context.CancelFunc
			done   chan struct{}
		}
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		// Every box has a backlog, as after a cloud outage.
		all := make([]*box, boxes)
		var wg sync.WaitGroup
		for n := range all {
			id := fmt.Sprintf("mr-fleet-%04d", n)
			o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(b.TempDir(), "buffer.db")})
			if err != nil {
				b.Fatal(err)
			}
			p, err := uplink.New(o, uplink.Options{Brokers: []string{broker.URL()}, TLS: broker.TLSConfig(b, id), ClientID: id,
				TopicPrefix: "mailroom/v1", Window: 64, KeepAlive: 30 * time.Second, ConnectTimeout: 30 * time.Second,
				ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			all[n] = &box{o: o, p: p, done: make(chan struct{})}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < backlog; k++ {
					o.Append(context.Background(), event.Event{Appliance: id, Type: event.TypeScan,
						Time: time.Now(), Device: "dock", Barcode: []byte("1Z999AA10123456784")})
				}
			}()
		}
		wg.Wait()
		// The link returns: every box connects and drains at once.
		start := time.Now()
		for _, bx := range all {
			ctx, cancel := context.WithCancel(context.Background())
			bx.cancel = cancel
			go func() { bx.p.Run(ctx); close(bx.done) }()
		}
		deadline := time.Now().Add(5 * time.Minute)
		for _, bx := range all {
			for {
				st, _ := bx.o.Stats(context.Background())
				if st.Pending == 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d events still pending", st.Pending)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		elapsed := time.Since(start)
		total := boxes * backlog
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		perBox := float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse)) / float64(boxes)
		for _, bx := range all {
			bx.cancel()
			<-bx.done
			bx.o.Close()
		}
		b.ReportMetric(float64(boxes), "appliances")
		b.ReportMetric(float64(total)/elapsed.Seconds(), "delivered-ev/s")
		b.ReportMetric(perBox/1024, "KiB/appliance")
	}
}

package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
)

// fillParcels commits n parcel.received events, n/perRecipient
// recipients with perRecipient parcels each, through many writers (group
// commit), and returns their ids.
func fillParcels(b *testing.B, o *Outbox, n, perRecipient int) []string {
	b.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	const writers = 64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				ev, err := o.Append(context.Background(), event.Event{Appliance: "mr-bench", Type: event.TypeParcelReceived,
					Time: t0.Add(time.Duration(i) * time.Second), Station: "dock-1", Device: "dock",
					Parcel:    &event.Parcel{Carrier: "ups", Tracking: fmt.Sprintf("1ZBENCH%010d", i)},
					Recipient: fmt.Sprintf("EMP-%05d", i/perRecipient), Location: fmt.Sprintf("SHELF-%03d", i%400)})
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = ev.ID
			}
		}()
	}
	wg.Wait()
	return ids
}

// BenchmarkParcels measures the parcel states with 100,000 open parcels
// in the store (5,000 recipients with 20 parcels each): the hand-over's
// query of one recipient's open parcels, the waiting-for-pickup summary,
// the telemetry counts, and the commit latency of deliveries against scans
// offered together at the same rate.
func BenchmarkParcels(b *testing.B) {
	const parcels, per = 100_000, 20
	o := open(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
	defer o.Close()
	ctx := context.Background()
	ids := fillParcels(b, o, parcels, per)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		// One recipient's open parcels, as the counter asks for them.
		lat := make([]time.Duration, 0, 2000)
		for range 2000 {
			who := fmt.Sprintf("EMP-%05d", rand.IntN(parcels/per))
			t := time.Now()
			ps, err := o.OpenParcelsOf(ctx, who, 500)
			lat = append(lat, time.Since(t))
			if err != nil || len(ps) != per {
				b.Fatalf("open parcels of %s: %d %v", who, len(ps), err)
			}
		}
		b.ReportMetric(ms(percentile(lat, 0.50)), "by-recipient-p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "by-recipient-p99-ms")

		lat = lat[:0]
		for range 20 {
			t := time.Now()
			if _, err := o.WaitingParcels(ctx, t0.Add(50_000*time.Second), 100); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		b.ReportMetric(ms(percentile(lat, 0.99)), "waiting-summary-p99-ms")
		lat = lat[:0]
		for range 20 {
			t := time.Now()
			if _, _, err := o.OpenCounts(ctx, t0.Add(50_000*time.Second)); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		b.ReportMetric(ms(percentile(lat, 0.99)), "open-counts-p99-ms")

		// Deliveries and scans offered together, 1,000/s each, for 3 s.
		const rate, seconds = 1000, 3
		total := rate * seconds
		scanLat, delLat := make([]time.Duration, total), make([]time.Duration, total)
		var wg sync.WaitGroup
		start := time.Now()
		interval := time.Second / time.Duration(rate)
		for i := range total {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 50*time.Microsecond {
				time.Sleep(d)
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				called := time.Now()
				if _, err := o.Append(ctx, scan("1Z999AA10123456784")); err != nil {
					b.Error(err)
				}
				scanLat[i] = time.Since(called)
			}()
			go func() {
				defer wg.Done()
				called := time.Now()
				ev := event.Event{Appliance: "mr-bench", Type: event.TypeParcelDelivered, Time: t0, ParcelID: ids[it*total+i], By: "clara",
					Recipient: "EMP-00001", Proof: &event.Proof{Method: event.ProofBadge, Badge: "EMP-00001"}}
				rec := ActionRecord{Key: fmt.Sprintf("bench-%d-%d", it, i), Request: "r", Type: ev.Type, ParcelID: ev.ParcelID, Status: 200}
				if _, _, err := o.AppendOnce(ctx, ev, rec); err != nil {
					b.Error(err)
				}
				delLat[i] = time.Since(called)
			}()
		}
		wg.Wait()
		sp, dp := percentile(scanLat, 0.99), percentile(delLat, 0.99)
		b.ReportMetric(ms(percentile(scanLat, 0.50)), "scan-commit-p50-ms")
		b.ReportMetric(ms(sp), "scan-commit-p99-ms")
		b.ReportMetric(ms(percentile(delLat, 0.50)), "delivery-commit-p50-ms")
		b.ReportMetric(ms(dp), "delivery-commit-p99-ms")
		b.ReportMetric(ms(dp-sp), "delivery-minus-scan-p99-ms")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

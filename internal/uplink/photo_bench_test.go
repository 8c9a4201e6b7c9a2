package uplink_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mailroomd/mailroomd/internal/blobstore"
	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

// barePhotos publishes n photos of size bytes in 64 KiB chunks, retained,
// QoS 1, with a sliding window of eight in flight, as plain paho: the
// ceiling for the photo upload.
func barePhotos(b *testing.B, broker *mqtttest.Broker, n, size int) time.Duration {
	run := time.Now().UnixNano() // new topics, as the uplink's photos are: not retained ones replaced
	p := make([]byte, size)
	rand.Read(p)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("bare-photos").
		SetTLSConfig(broker.TLSConfig(b, "bare-photos")).SetAutoReconnect(false).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("bare connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	var inflight []mqtt.Token
	start := time.Now()
	for i := range n {
		for k := 0; k*uplink.ChunkSize < len(p); k++ {
			if len(inflight) == 8 {
				inflight[0].Wait()
				inflight = inflight[1:]
			}
			inflight = append(inflight, c.Publish(fmt.Sprintf("mailroom/v1/bare/blobs/%d-%d/%d", run, i, k), 1, true,
				p[k*uplink.ChunkSize:min((k+1)*uplink.ChunkSize, len(p))]))
		}
	}
	for _, t := range inflight {
		t.Wait()
	}
	return time.Since(start)
}

// BenchmarkPhotoUpload uploads 100 photos of 500 KB through the uplink
// (the blob sender on the publisher's connection) next to a bare paho
// publisher of the same chunks: photo throughput against the bare one
// (photo-%-of-bare, both alone on the link). Then it uploads them again
// while scans are committed at 50 per second: the throughput then
// (photo-with-scans-%-of-bare), the scans' commit-to-PUBACK p99 meanwhile,
// and the Go heap's peak against a backlog twenty times larger: 2,000
// photos, 1 GB (it must not grow with the backlog).
func BenchmarkPhotoUpload(b *testing.B) {
	// Saving 50 MB of retained chunks every second, as the test broker
	// does, would stall it: this one saves as mosquitto does by default.
	broker := mqtttest.StartProduction(b)
	cert, key := broker.ClientFiles(b, appliance)
	tlsCfg, err := uplink.LoadTLS(broker.Files.CA, cert, key)
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, n int, scans bool) (rate float64, lat []time.Duration, heap uint64) {
		dir := b.TempDir()
		o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(dir, "buffer.db")})
		if err != nil {
			b.Fatal(err)
		}
		defer o.Close()
		files := blobstore.New(filepath.Join(dir, "blobs"), nil)
		var total int64
		for i := range n {
			p := make([]byte, 500_000)
			rand.Read(p)
			sha, err := files.Put(p)
			if err != nil {
				b.Fatal(err)
			}
			total += int64(len(p))
			if _, err := o.Append(context.Background(), event.Event{Appliance: appliance, Type: event.TypeParcelUpdated, Time: time.Now(),
				ParcelID: fmt.Sprint("p", i), Photos: []event.Photo{{SHA256: sha, Size: int64(len(p)), ContentType: "image/jpeg", Kind: "label"}}}); err != nil {
				b.Fatal(err)
			}
		}
		var mu sync.Mutex
		committed := map[int64]time.Time{}
		var commits []time.Duration
		pub, err := uplink.New(o, uplink.Options{Brokers: []string{broker.URL()}, TLS: tlsCfg, ClientID: appliance, TopicPrefix: "mailroom/v1",
			Window: 64, KeepAlive: 30 * time.Second,
			OnAck: func(pos int64, _ time.Duration) {
				mu.Lock()
				if t, ok := committed[pos]; ok {
					lat = append(lat, time.Since(t))
				}
				mu.Unlock()
			}})
		if err != nil {
			b.Fatal(err)
		}
		sender := uplink.NewBlobSender(pub, o, files, time.Hour, clock.Real{}, slog.New(slog.DiscardHandler), nil)
		if v := os.Getenv("MAILROOMD_BLOB_WINDOWS"); v != "" { // to compare windows: "8/4"
			w, bw, _ := strings.Cut(v, "/")
			var err1, err2 error
			sender.Window, err1 = strconv.Atoi(w)
			sender.BusyWindow, err2 = strconv.Atoi(bw)
			if err1 != nil || err2 != nil || sender.Window < 1 || sender.BusyWindow < 1 {
				b.Fatalf("MAILROOMD_BLOB_WINDOWS=%q: want two whole numbers of at least 1, as 16/2", v)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); pub.Run(ctx) }()
		for !pub.State().Connected {
			time.Sleep(5 * time.Millisecond)
		}
		waitDrained(b, o, time.Minute) // the photos' events first
		syscall.Sync()                 // the photos just written reach the disk before the clock starts, not during
		if !scans {
			time.Sleep(time.Second) // alone on the link: no event committed for a second
		}
		start := time.Now()
		go func() { defer wg.Done(); sender.Run(ctx) }()
		stop := make(chan struct{})
		if scans {
			wg.Add(1)
			go func() { // 50 scans per second while the photos upload
				defer wg.Done()
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					t := time.Now()
					ev, err := o.Append(context.Background(), event.Event{Appliance: appliance, Type: event.TypeScan, Time: t, Barcode: []byte("1Z999AA10123456784")})
					mu.Lock()
					commits = append(commits, time.Since(t))
					mu.Unlock()
					if err == nil {
						mu.Lock()
						committed[ev.Seq] = t // the first epoch: pos = seq
						mu.Unlock()
					}
				}
			}()
		}
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			heap = max(heap, ms.HeapInuse)
			left, _ := o.BlobsToSend(context.Background(), 1)
			if len(left) == 0 {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatal("photos not uploaded within 10 minutes")
			}
			time.Sleep(5 * time.Millisecond) // finer than the run's length
		}
		elapsed := time.Since(start)
		close(stop)
		cancel()
		wg.Wait()
		sort.Slice(commits, func(i, j int) bool { return commits[i] < commits[j] })
		if len(commits) > 0 {
			b.Logf("%d photos: commit p50 %v p99 %v (%d scans)", n, commits[len(commits)/2], commits[len(commits)*99/100], len(commits))
		}
		return float64(total) / elapsed.Seconds(), lat, heap
	}
	for range b.N {
		// The throughput alone on the link, the uplink's and the bare
		// publisher's in turn, twice: the better of each counts.
		var rate, bareRate float64
		for range 2 {
			runtime.GC()
			r, _, _ := run(b, 100, false)
			rate = max(rate, r)
			bareRate = max(bareRate, float64(100*500_000)/barePhotos(b, broker, 100, 500_000).Seconds())
		}
		// 100 photos upload five times with scans at 50/s: about 150 scans
		// in all, so that the p99 is not merely the slowest of 30.
		var lat []time.Duration
		var busyRate float64
		var heap uint64
		for range 5 {
			runtime.GC()
			r, l, h := run(b, 100, true)
			busyRate += r / 5
			lat = append(lat, l...)
			heap = max(heap, h)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		var p99 time.Duration
		if len(lat) > 0 {
			p99 = lat[len(lat)*99/100]
			b.Logf("100 photos, five times: commit-to-PUBACK p50 %v p99 %v max %v (%d scans)", lat[len(lat)/2], p99, lat[len(lat)-1], len(lat))
		}
		runtime.GC()
		_, bigLat, bigHeap := run(b, 2000, true) // 1 GB waiting
		if len(bigLat) > 0 {
			sort.Slice(bigLat, func(i, j int) bool { return bigLat[i] < bigLat[j] })
			b.Logf("2000 photos: commit-to-PUBACK p50 %v p99 %v (%d scans)", bigLat[len(bigLat)/2], bigLat[len(bigLat)*99/100], len(bigLat))
		}
		b.ReportMetric(rate/1e6, "photo-MB/s")
		b.ReportMetric(bareRate/1e6, "bare-MB/s")
		b.ReportMetric(rate/bareRate*100, "photo-%-of-bare")
		b.ReportMetric(busyRate/bareRate*100, "photo-with-scans-%-of-bare")
		b.ReportMetric(float64(p99.Microseconds())/1000, "scan-to-puback-p99-ms")
		b.ReportMetric(float64(heap)/(1<<20), "heap-peak-MiB-100-photos")
		b.ReportMetric(float64(bigHeap)/(1<<20), "heap-peak-MiB-2000-photos")
	}
}

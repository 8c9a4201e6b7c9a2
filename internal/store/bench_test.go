package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkIngest measures durable ingest (synchronous=FULL) with many
// scans arriving at once: writers goroutines append concurrently and the
// single writer batches them into group commits. It reports events/s and
// the p50/p99 time from Append to durable commit.
func BenchmarkIngest(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			o := open(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
			defer o.Close()
			ctx := context.Background()
			const total = 50000
			per := total / writers
			lat := make([][]time.Duration, writers)
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				var wg sync.WaitGroup
				start := time.Now()
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						l := make([]time.Duration, 0, per)
						for i := 0; i < per; i++ {
							t0 := time.Now()
							if _, err := o.Append(ctx, scan("1Z999AA10123456784")); err != nil {
								b.Error(err)
								return
							}
							l = append(l, time.Since(t0))
						}
						lat[w] = l
					}(w)
				}
				wg.Wait()
				el := time.Since(start)
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				b.ReportMetric(float64(per*writers)/el.Seconds(), "events/s")
				b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "commit-p50-ms")
				b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "commit-p99-ms")
			}
		})
	}
}

// BenchmarkIngestOffered offers scans at a fixed rate, as a burst of
// scanners would, and reports the commit latency each scan sees (from the
// moment it was due, so a late start counts against it) and the rate
// actually committed.
func BenchmarkIngestOffered(b *testing.B) {
	for _, rate := range []int{5000, 20000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			var txMu sync.Mutex
			var tx []time.Duration
			var ops int
			o := open(b, filepath.Join(b.TempDir(), "bench.db"), Options{ObserveCommit: func(n int, d time.Duration) {
				txMu.Lock()
				tx = append(tx, d)
				ops += n
				txMu.Unlock()
			}})
			defer o.Close()
			ctx := context.Background()
			total := rate * 3 // three seconds of load
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				lat := make([]time.Duration, total)
				late := make([]time.Duration, total)
				call := make([]time.Duration, total)
				var wg sync.WaitGroup
				start := time.Now()
				interval := time.Second / time.Duration(rate)
				for i := 0; i < total; i++ {
					due := start.Add(time.Duration(i) * interval)
					if d := time.Until(due); d > 50*time.Microsecond {
						time.Sleep(d)
					}
					wg.Add(1)
					go func(i int, due time.Time) {
						defer wg.Done()
						called := time.Now()
						late[i] = called.Sub(due)
						if _, err := o.Append(ctx, scan("1Z999AA10123456784")); err != nil {
							b.Error(err)
						}
						lat[i] = time.Since(due)
						call[i] = time.Since(called)
					}(i, due)
				}
				wg.Wait()
				el := time.Since(start)
				b.ReportMetric(float64(total)/el.Seconds(), "events/s")
				b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "append-p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "append-p99-ms")
				// How late the load generator itself started scans (timer
				// and scheduler delay on two cores): part of append-p99.
				b.ReportMetric(float64(percentile(late, 0.99).Microseconds())/1000, "start-late-p99-ms")
				// The store's own share: from the Append call to its return.
				b.ReportMetric(float64(percentile(call, 0.50).Microseconds())/1000, "call-p50-ms")
				b.ReportMetric(float64(percentile(call, 0.99).Microseconds())/1000, "call-p99-ms")
				txMu.Lock()
				b.ReportMetric(float64(percentile(tx, 0.50).Microseconds())/1000, "tx-p50-ms")
				b.ReportMetric(float64(percentile(tx, 0.99).Microseconds())/1000, "tx-p99-ms")
				b.ReportMetric(float64(ops)/float64(len(tx)), "events/tx")
				txMu.Unlock()
			}
		})
	}
}

// BenchmarkCommitWhileDraining measures what a drain's record of what was
// sent costs the scans: 100 scans/s are committed while a drain reads a
// backlog of 100,000 events in pages of 1,024 and records them sent, 256
// at a time, as fast as it can (the uplink gathers 5 ms of PUBACKs per
// record). It reports the scans' commit latency and the drain rate, and
// the WAL written per drained event (the bytes the scans' fsyncs wait
// behind).
func BenchmarkCommitWhileDraining(b *testing.B) {
	const backlog = 100000
	b.StopTimer()
	for it := 0; it < b.N; it++ {
		path := filepath.Join(b.TempDir(), "bench.db")
		o := open(b, path, Options{})
		ctx := context.Background()
		for i := 0; i < backlog; i += 1000 {
			var wg sync.WaitGroup
			for range 1000 {
				wg.Go(func() {
					if _, err := o.Append(ctx, scan("1Z999AA10123456784")); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		o.cdb.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		wroteBefore := written(b)
		b.StartTimer()
		stop := make(chan struct{})
		var lat []time.Duration
		scansDone := make(chan struct{})
		go func() {
			defer close(scansDone)
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				began := time.Now()
				if _, err := o.Append(ctx, scan("1Z999AA10123456785")); err != nil {
					b.Error(err)
				}
				lat = append(lat, time.Since(began))
			}
		}()
		began := time.Now()
		var drained int
		for cursor := int64(0); drained < backlog; {
			recs, err := o.Pending(ctx, cursor, 1024)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < len(recs); i += 256 {
				part := recs[i:min(i+256, len(recs))]
				pos := make([]int64, len(part))
				for j, r := range part {
					pos[j] = r.Pos
				}
				if err := o.MarkSent(ctx, pos); err != nil {
					b.Fatal(err)
				}
				cursor = pos[len(pos)-1]
				drained += len(pos)
			}
		}
		el := time.Since(began)
		close(stop)
		<-scansDone
		b.StopTimer()
		b.ReportMetric(float64(drained)/el.Seconds(), "drain-ev/s")
		b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "commit-p50-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "commit-p99-ms")
		b.ReportMetric(float64(written(b)-wroteBefore)/float64(drained), "written-B/event")
		o.Close()
	}
}

// written is the bytes this process has handed to write calls so far
// (wchar of /proc/self/io: the WAL's and the checkpoints' writes).
func written(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// peakRSS reads VmHWM (peak resident set) of a process, in MiB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkBacklogRSS starts the real binary on a buffer holding 1,000,000
// unsent events and lets it drain them to mosquitto, reporting the peak RSS
// of the daemon and the drain rate.
func BenchmarkBacklogRSS(b *testing.B) {
	const backlog = 1_000_000
	for it := 0; it < b.N; it++ {
		s := newSetup(b, "mr-rss-01")
		o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(s.dir, "buffer.db")})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		var next atomic.Int64
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= backlog {
					if _, err := o.Append(context.Background(), event.Event{Appliance: s.id, Site: "bench", Type: event.TypeScan,
						Time: time.Now(), Device: "dock-scanner", Barcode: []byte("1Z999AA10123456784")}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		o.Close()

		p := startDaemon(b, s.config(b, s.broker.URL(), ""))
		start := time.Now()
		var peak float64
		for {
			peak = max(peak, peakRSS(p.cmd.Process.Pid))
			time.Sleep(250 * time.Millisecond)
			if pending(b, filepath.Join(s.dir, "buffer.db")) == 0 || time.Since(start) > 10*time.Minute {
				break
			}
		}
		el := time.Since(start)
		peak = max(peak, peakRSS(p.cmd.Process.Pid))
		p.cmd.Process.Kill()
		<-p.done
		b.ReportMetric(peak, "peak-RSS-MiB")
		b.ReportMetric(backlog/el.Seconds(), "drain-events/s")
	}
}

func pending(b *testing.B, path string) int {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM events WHERE pos > (SELECT coalesce(max(pos), 0) FROM sent_marks)").Scan(&n); err != nil {
		return -1
	}
	return n
}

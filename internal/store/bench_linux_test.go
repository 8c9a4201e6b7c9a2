package store

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDiskSync measures the floor under every durable commit on the
// machine it runs on: appending 4 KiB to a file and fdatasync'ing it, as
// SQLite does for each WAL commit. A group commit cannot be faster than
// one of these, and a scan that arrives during one waits for two.
func BenchmarkDiskSync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.Write(page); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "sync-p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "sync-p99-ms")
}

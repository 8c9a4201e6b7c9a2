package app

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// TestStartDoesNotLoadTheBacklog builds a backlog of 200,000 scans of the
// last day and starts the application on it: the heap it takes must not
// grow with the backlog (the status page's chart once loaded every scan
// time of the last day, ~24 bytes each).
func TestStartDoesNotLoadTheBacklog(t *testing.T) {
	r := newRig(t, 1)
	cfg := r.config(r.yaml(0, "1m", "berlin"))
	path := filepath.Join(r.dir, "buffer.db")
	o, err := store.Open(context.Background(), store.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	var wg sync.WaitGroup
	now := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				if _, err := o.Append(context.Background(), event.Event{Appliance: "mr-app-test", Type: event.TypeScan,
					Time: now.Add(-time.Duration(i) * 300 * time.Millisecond), Device: "dock-scanner", Barcode: []byte(fmt.Sprintf("CODE%07d", i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	o.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a, err := newApp(context.Background(), cfg, Options{Version: "test", Log: slog.New(r.logs)}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	defer a.Stop(false)
	// Allocated while building the App, freed or not: a few MB for SQLite's
	// statements, the web templates and the drivers; not n × 24 bytes.
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("starting on %d scans allocated %d KiB", n, grew>>10)
	if grew > 4<<20 {
		t.Fatalf("starting on a backlog of %d scans allocated %d MiB", n, grew>>20)
	}
}

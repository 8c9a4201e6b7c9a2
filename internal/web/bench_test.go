package web

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// benchRig is a server over a real SQLite buffer.
type benchRig struct {
	*rig
	outbox  *store.Outbox
	changed chan struct{}
	history *History
}

func startBench(b *testing.B) *benchRig {
	b.Helper()
	o, err := store.Open(context.Background(), store.Options{Path: filepath.Join(b.TempDir(), "buffer.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { o.Close() }) // after the server has stopped
	br := &benchRig{outbox: o, changed: make(chan struct{}, 1), history: NewHistory()}
	srv, err := New(Options{Listen: "127.0.0.1:0", Appliance: "mr-bench", Version: "bench",
		Users: []User{{Name: "clara", Role: RoleClerk, PasswordHash: hash(b, "clerk-password")}},
		Store: o, Health: fakeHealth{}, Link: fakeLink{}, Actions: &fakeActions{}, History: br.history,
		Stations: []StationRef{{Name: "dock-1"}}, Changed: br.changed})
	if err != nil {
		b.Fatal(err)
	}
	serve(b, srv)
	br.rig = &rig{srv: srv, base: "http://" + srv.Addr()}
	return br
}

func (br *benchRig) loggedIn(b *testing.B) *http.Client {
	jar := newJar()
	c := &http.Client{Jar: jar, Transport: &http.Transport{MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := br.rig.loginB(b, c, "clara", "clerk-password")
	if resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("login: %d", resp.StatusCode)
	}
	return c
}

// BenchmarkPageTTFB measures the time to the first byte of the status page
// and of one status snapshot, for a logged-in clerk, with 200 events in the
// buffer.
func BenchmarkPageTTFB(b *testing.B) {
	br := startBench(b)
	for i := 0; i < 200; i++ {
		br.outbox.Append(context.Background(), event.Event{Appliance: "mr-bench", Type: event.TypeScan, Time: time.Now(), Barcode: []byte("1Z999AA10123456784")})
	}
	c := br.loggedIn(b)
	for _, path := range []string{"/", "/api/status"} {
		b.Run(map[string]string{"/": "index", "/api/status": "api-status"}[path], func(b *testing.B) {
			var lat []time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				resp, err := c.Get(br.base + path)
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, 1)
				resp.Body.Read(buf)
				lat = append(lat, time.Since(start))
				resp.Body.Close()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ttfb-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ttfb-p99-ms")
		})
	}
}

// BenchmarkStream20 commits 20,000 scans with 8 writers while 20 clients
// hold the event stream open, and compares the ingest rate with the same
// run without clients. It reports the status pushes each client received
// per second and how long a commit took to show in a client's stream.
func BenchmarkStream20(b *testing.B) {
	const events, writers, clients = 20000, 8, 20
	ingest := func(br *benchRig) float64 {
		var wg sync.WaitGroup
		start := time.Now()
		per := events / writers
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					ev, err := br.outbox.Append(context.Background(), event.Event{Appliance: "mr-bench", Type: event.TypeScan,
						Time: time.Now(), Barcode: []byte(fmt.Sprintf("CODE%08d", i))})
					if err != nil {
						b.Error(err)
						return
					}
					br.history.Scan(ev.Time)
					select {
					case br.changed <- struct{}{}:
					default:
					}
				}
			}()
		}
		wg.Wait()
		return float64(events) / time.Since(start).Seconds()
	}
	for i := 0; i < b.N; i++ {
		alone := ingest(startBench(b))

		br := startBench(b)
		var pushes atomic.Int64
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		ready := make(chan struct{}, clients)
		for c := 0; c < clients; c++ {
			cl := br.loggedIn(b)
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, "GET", br.base+"/api/stream", nil)
				resp, err := cl.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				first := true
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "data: ") {
						if first {
							ready <- struct{}{}
							first = false
							continue
						}
						pushes.Add(1)
					}
				}
			}()
		}
		for c := 0; c < clients; c++ {
			<-ready
		}
		start := time.Now()
		with := ingest(br)
		// How long until the last commit shows in the streams.
		last, _ := br.outbox.Stats(context.Background())
		seen := time.Now()
		for {
			st := br.srv.snapshot(context.Background())
			if len(st.Events) > 0 && st.Events[0].Seq == last.LastSeq {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start).Seconds()
		cancel()
		wg.Wait()
		b.ReportMetric(alone, "ingest-alone-ev/s")
		b.ReportMetric(with, "ingest-20-clients-ev/s")
		b.ReportMetric(with/alone*100, "ingest-%")
		b.ReportMetric(float64(pushes.Load())/clients/elapsed, "pushes/s/client")
		b.ReportMetric(float64(events)/elapsed, "events/s-shown")
		b.ReportMetric(float64(time.Since(seen).Milliseconds()), "last-commit-to-snapshot-ms")
	}
}

package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
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

	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl/zpltest"
	"github.com/mailroomd/mailroomd/drivers/scanner/sim"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/config"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
)

// BenchmarkFullLoad is the box on the day the link comes back after an
// outage: the real binary, with a backlog of MAILROOMD_FULLLOAD_BACKLOG
// events (default 1,000,000: half of them scans at a receiving station,
// half the parcel.received of each, so half as many open parcels) built
// while the broker was down (stopped), reconnects once it is started
// again and drains it to mosquitto while two PTY scanners at two
// receiving stations commit 50 scans/s each, a scale answers and a label
// printer prints at the first station, and five status pages follow the
// SSE stream. That load starts busyWarmUp before the reconnect. It
// reports:
//   - commit-p99-ms, commit-max-ms: from a code written to the scanner's
//     tty to the daemon's "scan committed" for it, for the scans of the
//     drain (the first seconds after the reconnect included);
//     commit-max-first-5s-ms and commit-max-after-5s-ms split the longest
//     into the scans written in the first 5 s after the reconnect and the
//     later ones;
//   - ttfb-p99-ms: time to first byte of the status page and of
//     /api/status, asked for every 100 ms during the drain;
//   - drain-ev/s and idle-drain-ev/s: the backlog drained with all that
//     running and with nothing else running, from the daemon's "uplink
//     connected" to the backlog's last event recorded as sent, in events
//     a second; drain-ratio is their quotient. Under load the backlog also
//     holds what the warm-up committed (its scans and what follows from
//     them; the round's log line gives the count);
//   - peak-RSS-MiB: the daemon's peak resident set over the whole run,
//     and peak-heap-MiB: the largest Go heap in use the /metrics endpoint
//     reported while draining.
//
// MAILROOMD_FULLLOAD_ROUNDS (default 1) runs that many pairs of drains,
// one with nothing else running and one under load, one after the other:
// the drain ratio is then the median of the pairs' ratios
// (drain-ratio-min and drain-ratio-max beside it), the commit p99, the
// TTFB p99 and the rates the medians of the rounds, and the maxima and
// the peaks the largest of any round. This machine's CPU varies from
// minute to minute by more than the target's margin.
// MAILROOMD_FULLLOAD_WINDOW sets uplink.inflight_window (default 64) to
// compare others.
func BenchmarkFullLoad(b *testing.B) {
	backlog := 1_000_000
	if v := os.Getenv("MAILROOMD_FULLLOAD_BACKLOG"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("MAILROOMD_FULLLOAD_BACKLOG=%q: want a number of at least 1000", v)
		}
		backlog = n
	}
	rounds := 1
	if v := os.Getenv("MAILROOMD_FULLLOAD_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			b.Fatalf("MAILROOMD_FULLLOAD_ROUNDS=%q: want a number from 1 to 20", v)
		}
		rounds = n
	}
	for range b.N {
		var ratios, p99s, ttfbs, rates, idleRates, rssMedians []float64
		var worst fullLoadResult // the largest of each maximum over the rounds
		for r := range rounds {
			idle := fullLoadRun(b, backlog, false)
			busy := fullLoadRun(b, backlog, true)
			ratios = append(ratios, busy.rate/idle.rate)
			p99s, ttfbs = append(p99s, busy.commitP99), append(ttfbs, busy.ttfbP99)
			rates, idleRates = append(rates, busy.rate), append(idleRates, idle.rate)
			worst.commitMax = max(worst.commitMax, busy.commitMax)
			worst.firstMax, worst.laterMax = max(worst.firstMax, busy.firstMax), max(worst.laterMax, busy.laterMax)
			worst.peakRSS = max(worst.peakRSS, busy.peakRSS, idle.peakRSS)
			worst.peakHeap = max(worst.peakHeap, busy.peakHeap, idle.peakHeap)
			rssMedians = append(rssMedians, busy.rssMedian)
			b.Logf("round %d of %d, backlog %d: idle drain %.0f ev/s (peak RSS %.1f MiB); under load %d events at %.0f ev/s (peak RSS %.1f MiB, median %.1f MiB, heap %.1f MiB), ratio %.3f, %d scans, commit p99 %.1f ms max %.1f ms, TTFB p99 %.1f ms over %d requests",
				r+1, rounds, backlog, idle.rate, idle.peakRSS, busy.drained, busy.rate, busy.peakRSS, busy.rssMedian, busy.peakHeap, busy.rate/idle.rate, busy.scans, busy.commitP99, busy.commitMax, busy.ttfbP99, busy.requests)
		}
		b.ReportMetric(median(p99s), "commit-p99-ms")
		b.ReportMetric(worst.commitMax, "commit-max-ms")
		b.ReportMetric(worst.firstMax, "commit-max-first-5s-ms")
		b.ReportMetric(worst.laterMax, "commit-max-after-5s-ms")
		b.ReportMetric(median(ttfbs), "ttfb-p99-ms")
		b.ReportMetric(median(rates), "drain-ev/s")
		b.ReportMetric(median(idleRates), "idle-drain-ev/s")
		b.ReportMetric(median(ratios), "drain-ratio")
		b.ReportMetric(slices.Min(ratios), "drain-ratio-min")
		b.ReportMetric(slices.Max(ratios), "drain-ratio-max")
		b.ReportMetric(worst.peakRSS, "peak-RSS-MiB")
		b.ReportMetric(worst.peakHeap, "peak-heap-MiB")
		b.ReportMetric(median(rssMedians), "drain-RSS-median-MiB")
	}
}

// busyWarmUp is how long the scanners, the scale, the printer and the
// pages run before the broker comes back: the duplicate window (each
// station remembers the codes of that long; the configuration leaves it at
// its default of 30 s) and 5 s more, so that every run's daemon has
// reached the state that this load keeps it in, and its peak RSS differs
// from another backlog's by the drain alone.
const busyWarmUp = time.Duration(config.DefaultDuplicateWindow) + 5*time.Second

// median is the middle of xs (the mean of the two middle ones for an even
// count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type fullLoadResult struct {
	rate, peakRSS, peakHeap float64
	// rssMedian is the median of the daemon's RSS sampled every 100 ms
	// from its "uplink connected" to the drain's end: what it holds
	// through a drain, where the peak is the highest moment of it.
	rssMedian                     float64
	commitP99, commitMax, ttfbP99 float64
	// firstMax and laterMax are the longest commit of a scan written in
	// the first 5 s after the reconnect, and after them.
	firstMax, laterMax float64
	scans, requests    int
	drained            int64 // events in the backlog drained
}

// prefill writes n unsent events into a new buffer at path as a box's
// receiving stations would have during an outage: half of them scans at
// the station dock-1, each followed by the parcel.received that resolves
// it, so that the buffer also holds n/2 open parcels.
func prefill(b *testing.B, path, appliance string, n int) {
	o, err := store.Open(context.Background(), store.Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := sim.New("scan-1", time.Second, int64(w), nil)
			for next.Add(2) <= int64(n) {
				code := gen.Next()
				scan, err := o.Append(context.Background(), event.Event{Appliance: appliance, Site: "bench", Type: event.TypeScan,
					Time: time.Now(), Device: "scan-1", Station: "dock-1", Barcode: []byte(code)})
				if err != nil {
					b.Error(err)
					return
				}
				res := barcode.Classify([]byte(code))
				if _, err := o.Append(context.Background(), event.Event{Appliance: appliance, Site: "bench", Type: event.TypeParcelReceived,
					Time: time.Now(), Device: "scan-1", Station: "dock-1", ScanID: scan.ID, Resolves: []string{scan.ID},
					Parcel: &event.Parcel{Carrier: string(res.Carrier), Tracking: res.Tracking}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func fullLoadRun(b *testing.B, backlog int, busy bool) fullLoadResult {
	s := newSetup(b, "mr-load-01")
	prefill(b, filepath.Join(s.dir, "buffer.db"), s.id, backlog)
	// The outage: the broker is down. A proxy on these two cores that
	// stops forwarding would do as well, but copying every byte of the
	// drain through it took about a third of a core that a real box's
	// network does not take from it.
	s.broker.Stop()

	scan1 := serialtest.New(b, filepath.Join(s.dir, "ttyScan1"))
	scan2 := serialtest.New(b, filepath.Join(s.dir, "ttyScan2"))
	scale := serialtest.New(b, filepath.Join(s.dir, "ttyScale"))
	printer := zpltest.Start(b)
	stop := make(chan struct{})
	defer close(stop)
	go scale.Answer(stop, func(req []byte) []byte {
		if strings.Contains(string(req), "W\r") {
			return []byte("\n0012.50LB\r\n00\r\x03")
		}
		return nil
	})
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	webPort := mqtttest.FreePort(b)
	devices := fmt.Sprintf(`  - {name: scan-1, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
  - {name: scan-2, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
  - {name: dock-scale, kind: scale, driver: nci, port: %s, poll_interval: 250ms, reconnect_max: 200ms}
  - {name: dock-printer, kind: printer, driver: zpl, address: "tcp://%s", poll_interval: 1s, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: scan-1, scale: dock-scale, printer: dock-printer, weight_window: 1500ms}
  - {name: dock-2, scanner: scan-2}
web:
  listen: 127.0.0.1:%d
  users:
    - {name: clara, role: clerk, password_hash: "%s"}`, scan1.Link, scan2.Link, scale.Link, printer.Addr(), webPort, hash)
	// A box that expects long outages holds more than the default
	// 1,000,000 unsent events.
	cfg := filepath.Join(s.dir, "mailroomd.yaml")
	text := strings.Replace(s.configText(s.broker.URL(), devices), "retain_sent: 720h}", "retain_sent: 720h, max_pending: 5000000}", 1)
	if !strings.Contains(text, "max_pending") {
		b.Fatal("the configuration's storage section changed: max_pending not set")
	}
	if w := os.Getenv("MAILROOMD_FULLLOAD_WINDOW"); w != "" {
		text = strings.Replace(text, "  keepalive: 2s\n", "  keepalive: 2s\n  inflight_window: "+w+"\n", 1)
		if !strings.Contains(text, "inflight_window") {
			b.Fatal("the configuration's uplink section changed: inflight_window not set")
		}
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	p := startDaemon(b, cfg)
	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	for _, l := range []string{"scanner connected", "uplink down"} {
		p.waitLog(b, l, 20*time.Second)
	}

	var res fullLoadResult
	var wg sync.WaitGroup
	done := make(chan struct{})
	var written [2][]time.Time // per scanner, when each code went out
	type ttfbSample struct {
		at time.Time // when the request went out
		d  time.Duration
	}
	var samples []ttfbSample
	var samplesMu sync.Mutex
	if busy {
		p.waitLog(b, "printer connected", 20*time.Second)
		p.waitLog(b, "scale connected", 20*time.Second)
		// Five status pages follow the stream.
		for range 5 {
			c := benchSignIn(b, base)
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				go func() { <-done; cancel() }()
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/stream", nil)
				resp, err := c.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}()
		}
		// Two scanners, 50 scans/s each, from busyWarmUp before the
		// reconnect until the backlog is gone.
		for i, dev := range []*serialtest.Scanner{scan1, scan2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				gen := sim.New("", time.Second, int64(100+i), nil)
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				t := time.NewTicker(20 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-done:
						return
					case <-t.C:
					}
					code := gen.Next()
					if rng.IntN(10) == 0 {
						code = fmt.Sprintf("EMP-%04d", rng.IntN(10000)) // a recipient badge now and then
					}
					written[i] = append(written[i], time.Now())
					if err := dev.Scan(code); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		// The clerk's page asks for the page and the status.
		c := benchSignIn(b, base)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				case <-t.C:
				}
				path := "/"
				if n%2 == 1 {
					path = "/api/status"
				}
				at := time.Now()
				if d, err := ttfb(c, base+path); err == nil {
					samplesMu.Lock()
					samples = append(samples, ttfbSample{at, d})
					samplesMu.Unlock()
				}
			}
		}()
		time.Sleep(busyWarmUp) // scans committed during the outage
	}

	lastSeq := maxSeq(b, filepath.Join(s.dir, "buffer.db"))
	heapDone := make(chan float64)
	go func() { heapDone <- peakHeap(base, done) }()
	before := commitTimes(p.log.String())
	commitsBefore := [2]int{len(before["scan-1"]), len(before["scan-2"])}
	watch := openDrainWatch(b, filepath.Join(s.dir, "buffer.db"))
	s.broker.Start()
	// The drain starts when the box is connected again (it tries every
	// 300 ms at most while the broker is down).
	p.waitLog(b, "uplink connected", 10*time.Second)
	start := connectedAt(b, p.log.String())
	rssDone := make(chan float64)
	go func() { rssDone <- medianRSS(p.cmd.Process.Pid, done) }()
	// The backlog is what was committed before the link came back; scans
	// committed since are published behind it. Polled every 10 ms, so
	// that the drain's end is known to within 1 % of a 1 s drain.
	for watch.pendingUpTo(lastSeq) {
		if time.Since(start) > 20*time.Minute {
			b.Fatal("the backlog did not drain within 20 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(start)
	res.rate = float64(lastSeq) / el.Seconds()
	res.drained = lastSeq
	close(done)
	wg.Wait()
	res.peakHeap = <-heapDone
	res.rssMedian = <-rssDone
	// The codes written last may still wait in the ttys.
	for deadline := time.Now().Add(30 * time.Second); busy && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		c := commitTimes(p.log.String())
		if len(c["scan-1"]) >= len(written[0]) && len(c["scan-2"]) >= len(written[1]) {
			break
		}
	}
	res.peakRSS = peakRSS(p.cmd.Process.Pid)
	p.cmd.Process.Kill()
	<-p.done
	if !busy {
		return res
	}

	// Commit latency: the n-th "scan committed" of a scanner is the n-th
	// code written to it (a scanner's codes are committed in order).
	commits := commitTimes(p.log.String())
	var lat []float64
	for i, dev := range []string{"scan-1", "scan-2"} {
		got := commits[dev]
		if len(got) < len(written[i]) {
			b.Fatalf("%s: %d codes written, %d committed", dev, len(written[i]), len(got))
		}
		from := commitsBefore[i] // the scans of the outage are not the drain's
		for k := from; k < min(len(got), len(written[i])); k++ {
			// Log times have millisecond resolution: round the write
			// time down the same way.
			l := float64(got[k].Sub(written[i][k].Truncate(time.Millisecond))) / 1e6
			lat = append(lat, l)
			if written[i][k].Before(start.Add(5 * time.Second)) {
				res.firstMax = max(res.firstMax, l)
			} else {
				res.laterMax = max(res.laterMax, l)
			}
		}
	}
	slices.Sort(lat)
	res.scans = len(lat)
	if len(lat) > 0 {
		res.commitP99, res.commitMax = lat[len(lat)*99/100], lat[len(lat)-1]
	}
	// The drain's requests: those of the warm-up are not.
	var ttfbs []time.Duration
	for _, s := range samples {
		if !s.at.Before(start) {
			ttfbs = append(ttfbs, s.d)
		}
	}
	slices.Sort(ttfbs)
	res.requests = len(ttfbs)
	if len(ttfbs) > 0 {
		res.ttfbP99 = float64(ttfbs[len(ttfbs)*99/100]) / 1e6
	}
	if labels := printer.Labels(); len(labels) == 0 {
		b.Fatal("the printer printed no label")
	}
	return res
}

// drainWatch reads a buffer's oldest unsent event through one read-only
// connection, kept open so that polling it often costs the drain little.
type drainWatch struct{ db *sql.DB }

func openDrainWatch(b *testing.B, path string) drainWatch {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.Cleanup(func() { db.Close() })
	return drainWatch{db}
}

// pendingUpTo says whether events up to seq last still wait for the
// broker. It looks only at the oldest unsent event (the buffer keeps one
// epoch here, in which seq follows position). A read that fails (the
// buffer busy) counts as still waiting.
func (w drainWatch) pendingUpTo(last int64) bool {
	var seq int64
	switch err := w.db.QueryRow("SELECT seq FROM events WHERE pos > (SELECT coalesce(max(pos), 0) FROM sent_marks) ORDER BY pos LIMIT 1").Scan(&seq); {
	case errors.Is(err, sql.ErrNoRows):
		return false
	case err != nil:
		return true
	}
	return seq <= last
}

// maxSeq is the last seq committed in the buffer at path.
func maxSeq(b *testing.B, path string) int64 {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow("SELECT max(seq) FROM events").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

var committedLine = regexp.MustCompile(`time=(\S+) level=INFO msg="scan committed" subsystem=intake device=(\S+)`)

// commitTimes reads the daemon's log: when each scan of each device was
// committed, in order.
func commitTimes(log string) map[string][]time.Time {
	out := map[string][]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := committedLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		if err == nil {
			out[m[2]] = append(out[m[2]], t)
		}
	}
	return out
}

var connectedLine = regexp.MustCompile(`time=(\S+) level=INFO msg="uplink connected"`)

// connectedAt is when the daemon's log says the uplink connected, the
// first time.
func connectedAt(b *testing.B, log string) time.Time {
	m := connectedLine.FindStringSubmatch(log)
	if m == nil {
		b.Fatal("no \"uplink connected\" in the daemon's log")
	}
	t, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// ttfb is the time from a GET to its response's first byte.
func ttfb(c *http.Client, u string) (time.Duration, error) {
	var first time.Time
	req, _ := http.NewRequest("GET", u, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { first = time.Now() },
	}))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return first.Sub(start), nil
}

// medianRSS samples the resident set of process pid every 100 ms until
// done and returns the median, in MiB.
func medianRSS(pid int, done <-chan struct{}) float64 {
	var xs []float64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			if len(xs) == 0 {
				return 0
			}
			return median(xs)
		case <-t.C:
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				xs = append(xs, float64(kb)/1024)
			}
		}
	}
}

// peakHeap polls the daemon's /metrics for the Go heap in use until done,
// and returns the largest value seen, in MiB.
func peakHeap(base string, done <-chan struct{}) float64 {
	var peak float64
	// Twice a second: a scrape costs the daemon what a status page does,
	// and a monitoring system asks every 15 s or so.
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return peak
		case <-t.C:
		}
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				peak = max(peak, f/(1<<20))
			}
		}
		resp.Body.Close()
	}
}

// benchSignIn signs in as the clerk the full-load configuration has.
func benchSignIn(b *testing.B, base string) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(base + "/login")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		b.Fatalf("login form without CSRF field:\n%s", body)
	}
	if resp, err = c.PostForm(base+"/login", url.Values{"user": {"clara"}, "password": {"clerk-password"}, "csrf": {string(m[1])}}); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	return c
}

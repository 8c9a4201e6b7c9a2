package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

func newTestMetrics() *Metrics {
	return New(Sources{
		Stats:     func(context.Context) (store.Stats, error) { return store.Stats{Pending: 3}, nil },
		Ingested:  func() int64 { return 7 },
		Refused:   func() int64 { return 0 },
		Connected: func() bool { return true },
		Connects:  func() int64 { return 1 },
		Devices: func() []health.DeviceStatus {
			return []health.DeviceStatus{{Name: "scan-1", Kind: "scanner", State: health.DeviceConnected}}
		},
		Now: time.Now,
	})
}

// scrape asks the handler for the metrics the way Prometheus does, offering
// gzip.
func scrape(h http.Handler) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestScrapeIsPlainText: the answer is the text format, uncompressed even
// when the scraper offers gzip.
func TestScrapeIsPlainText(t *testing.T) {
	rec := scrape(newTestMetrics().Handler())
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if ce := rec.Header().Get("Content-Encoding"); ce != "" {
		t.Fatalf("Content-Encoding %q, want none", ce)
	}
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"mailroomd_events_ingested_total 7", "mailroomd_events_pending 3", `mailroomd_device_up{device="scan-1",kind="scanner"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %q in:\n%s", want, body)
		}
	}
}

// scrapeAlloc is what one scrape through h allocates, on average over a
// few, with the pools emptied before each by two collections as on a box
// under load scraped every 15 s.
func scrapeAlloc(h http.Handler) uint64 {
	const n = 5
	var total uint64
	for range n {
		runtime.GC()
		runtime.GC() // a pooled object survives one collection
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		scrape(h)
		runtime.ReadMemStats(&after)
		total += after.TotalAlloc - before.TotalAlloc
	}
	return total / n
}

// TestScrapeAllocatesLittle: a scrape allocates at least 512 KiB less than
// the same registry served gzipped (promhttp's default), whose new gzip
// writer alone takes about 0.8 MiB.
func TestScrapeAllocatesLittle(t *testing.T) {
	m := newTestMetrics()
	plain := m.Handler()
	gzipped := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
	p, g := scrapeAlloc(plain), scrapeAlloc(gzipped)
	t.Logf("a scrape allocates %d KiB; gzipped %d KiB", p>>10, g>>10)
	if p+512<<10 > g {
		t.Fatalf("a scrape allocated %d KiB, gzipped %d KiB: want at least 512 KiB less", p>>10, g>>10)
	}
}

// TestScrapeProtobufWhenAsked: a scraper that asks for protobuf in Accept
// gets it, uncompressed too.
func TestScrapeProtobufWhenAsked(t *testing.T) {
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	newTestMetrics().Handler().ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.google.protobuf") {
		t.Fatalf("Content-Type %q, want protobuf", ct)
	}
	if ce := rec.Header().Get("Content-Encoding"); ce != "" {
		t.Fatalf("Content-Encoding %q, want none", ce)
	}
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "mailroomd_events_ingested_total") {
		t.Fatalf("status %d, body without mailroomd_events_ingested_total: %q", rec.Code, rec.Body.String())
	}
}

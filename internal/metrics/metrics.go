// Package metrics exposes the daemon's figures in the Prometheus format.
// Gauges are read from their sources at scrape time; nothing is sampled in
// between.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
)

// Sources are read at every scrape, never before: they may refer to
// subsystems created after the Metrics.
type Sources struct {
	// Stats returns the buffer's counters.
	Stats func(ctx context.Context) (store.Stats, error)
	// Ingested and Refused count scans committed and refused by the intake.
	Ingested, Refused func() int64
	// Connected and Connects describe the uplink.
	Connected func() bool
	Connects  func() int64
	// Devices lists every device's state.
	Devices func() []health.DeviceStatus
	// Now is the clock.
	Now func() time.Time
}

// Metrics is the registry of one daemon.
type Metrics struct {
	reg          *prometheus.Registry
	sent         prometheus.Counter
	latency      prometheus.Histogram
	commit       prometheus.Histogram
	loginFailure prometheus.Counter
}

// New registers every metric of the daemon.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailroomd_events_sent_total",
			Help: "Events acknowledged by the broker (PUBACK), resends included."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mailroomd_publish_latency_seconds",
			Help:    "Time from handing an event to the MQTT client to its PUBACK.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mailroomd_buffer_commit_seconds",
			Help:    "Duration of each group commit of the buffer: one transaction, synced to disk. A slow or worn disk shows here first.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}),
		loginFailure: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailroomd_login_failures_total",
			Help: "Failed logins to the status page, lockouts included."}),
	}
	stats := func() store.Stats {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, _ := src.Stats(ctx)
		return s
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.sent, m.latency, m.commit, m.loginFailure,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailroomd_events_ingested_total",
			Help: "Scans committed to the buffer."}, func() float64 { return float64(src.Ingested()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailroomd_events_refused_total",
			Help: "Scans refused because the buffer was full or failing."}, func() float64 { return float64(src.Refused()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailroomd_events_pending",
			Help: "Committed events not yet acknowledged by the broker."}, func() float64 { return float64(stats().Pending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailroomd_oldest_pending_age_seconds",
			Help: "Age of the oldest pending event; 0 when none is pending."}, func() float64 {
			s := stats()
			if s.OldestPending.IsZero() {
				return 0
			}
			return src.Now().Sub(s.OldestPending).Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailroomd_uplink_connected",
			Help: "1 while connected to a broker."}, func() float64 { return b2f(src.Connected()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailroomd_uplink_reconnects_total",
			Help: "Connections to a broker after the first."}, func() float64 { return float64(max(src.Connects()-1, 0)) }),
		&deviceCollector{devices: src.Devices},
	)
	return m
}

// Acked records one PUBACK and its latency.
func (m *Metrics) Acked(latency time.Duration) {
	m.sent.Inc()
	m.latency.Observe(latency.Seconds())
}

// Committed records one group commit of the buffer and how long it took;
// it fits store.Options.ObserveCommit.
func (m *Metrics) Committed(_ int, took time.Duration) { m.commit.Observe(took.Seconds()) }

// LoginFailed counts a failed login.
func (m *Metrics) LoginFailed() { m.loginFailure.Inc() }

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	// Uncompressed: the pooled gzip writer is gone after two collections,
	// so on a box under load (many collections a second) and scraped every
	// 15 s each scrape would allocate a new one, about 0.8 MiB, for a
	// response of a few KiB on the local network.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, DisableCompression: true})
}

var deviceUpDesc = prometheus.NewDesc("mailroomd_device_up", "1 while the device is connected and working.",
	[]string{"device", "kind"}, nil)

type deviceCollector struct{ devices func() []health.DeviceStatus }

func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deviceUpDesc }

func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.devices() {
		v := 0.0
		if d.State == health.DeviceConnected {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(deviceUpDesc, prometheus.GaugeValue, v, d.Name, d.Kind)
	}
}

package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"runtime"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"
	psnet "github.com/shirou/gopsutil/v4/net"
	"github.com/shirou/gopsutil/v4/process"
)

// Telemetry is published every telemetry interval.
type Telemetry struct {
	V         int       `json:"v"`
	Appliance string    `json:"appliance"`
	Site      string    `json:"site,omitempty"`
	Version   string    `json:"version"`
	TS        time.Time `json:"ts"`
	UptimeS   int64     `json:"uptime_s"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`

	CPUPercent     float64 `json:"cpu_percent"`
	MemUsedPercent float64 `json:"mem_used_percent"`
	ProcessRSS     uint64  `json:"process_rss_bytes"`
	DiskFreeBytes  uint64  `json:"disk_free_bytes"`
	DiskFreeOK     bool    `json:"-"`

	Pending          int64   `json:"pending"`
	OldestPendingS   float64 `json:"oldest_pending_s"`
	EventsPerMin     float64 `json:"events_per_min"`
	PublishLatencyMS float64 `json:"publish_latency_ms"`
	LinkConnected    bool    `json:"link_connected"`
	Broker           string  `json:"broker,omitempty"`
	// Network is every network interface's counters since boot.
	Network []NetInterface `json:"network"`
	// ParcelsOpen counts the parcels not yet delivered, returned or
	// forwarded; ParcelsOverdue those of them older than delivery.overdue.
	// Both are left out when they cannot be counted.
	ParcelsOpen    *int64 `json:"parcels_open,omitempty"`
	ParcelsOverdue *int64 `json:"parcels_overdue,omitempty"`

	Devices []DeviceState `json:"devices"`
	Alerts  []Alert       `json:"alerts"`

	CertExpires time.Time `json:"cert_expires,omitempty"`
	// ClockSynced is null when the system cannot tell.
	ClockSynced *bool   `json:"clock_synced"`
	ProbeRTTMS  float64 `json:"probe_rtt_ms,omitempty"`
}

// NetInterface is one network interface's counters since boot.
type NetInterface struct {
	Name      string `json:"name"`
	BytesSent uint64 `json:"bytes_sent"`
	BytesRecv uint64 `json:"bytes_recv"`
	ErrIn     uint64 `json:"errors_in"`
	ErrOut    uint64 `json:"errors_out"`
	DropIn    uint64 `json:"drops_in"`
	DropOut   uint64 `json:"drops_out"`
}

// DeviceState is one device in telemetry.
type DeviceState struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Collect gathers the figures of one telemetry message.
func (f *Fleet) Collect(ctx context.Context) Telemetry {
	now := f.opts.Clock.Now()
	t := Telemetry{V: 1, Appliance: f.opts.Appliance, Site: f.opts.Site, Version: f.opts.Version, TS: now.UTC(),
		UptimeS: int64(now.Sub(f.started).Seconds()), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Devices: []DeviceState{}, Alerts: f.Active()}
	if p, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(p) > 0 {
		t.CPUPercent = round1(p[0])
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		t.MemUsedPercent = round1(vm.UsedPercent)
	}
	if pr, err := process.NewProcessWithContext(ctx, int32(os.Getpid())); err == nil {
		if mi, err := pr.MemoryInfoWithContext(ctx); err == nil {
			t.ProcessRSS = mi.RSS
		}
	}
	if f.opts.BufferDir != "" {
		if du, err := disk.UsageWithContext(ctx, f.opts.BufferDir); err == nil {
			t.DiskFreeBytes, t.DiskFreeOK = du.Free, true
		}
	}
	if st, err := f.opts.Store.Stats(ctx); err == nil {
		t.Pending = st.Pending
		if !st.OldestPending.IsZero() {
			t.OldestPendingS = round1(now.Sub(st.OldestPending).Seconds())
		}
	}
	if f.opts.Ingested != nil {
		n := f.opts.Ingested()
		f.mu.Lock()
		if !f.lastIngestAt.IsZero() && now.Sub(f.lastIngestAt) > 0 {
			f.rate = float64(n-f.lastIngested) / now.Sub(f.lastIngestAt).Minutes()
		}
		f.lastIngested, f.lastIngestAt = n, now
		t.EventsPerMin = round1(f.rate)
		f.mu.Unlock()
	}
	if f.opts.Latency != nil {
		t.PublishLatencyMS = round1(float64(f.opts.Latency().Microseconds()) / 1000)
	}
	if f.opts.Parcels != nil {
		if open, overdue, err := f.opts.Parcels(ctx); err == nil {
			t.ParcelsOpen, t.ParcelsOverdue = &open, &overdue
		} else {
			f.log.Warn("parcel counts left out of telemetry", "err", err)
		}
	}
	ls := f.opts.Link.State()
	t.LinkConnected, t.Broker = ls.Connected, ls.Broker
	t.Network = []NetInterface{}
	if counters, err := psnet.IOCountersWithContext(ctx, true); err == nil {
		for _, c := range counters {
			t.Network = append(t.Network, NetInterface{Name: c.Name, BytesSent: c.BytesSent, BytesRecv: c.BytesRecv,
				ErrIn: c.Errin, ErrOut: c.Errout, DropIn: c.Dropin, DropOut: c.Dropout})
		}
	}
	for _, d := range f.opts.Health.Devices() {
		t.Devices = append(t.Devices, DeviceState{Name: d.Name, Kind: d.Kind, State: d.State, Reason: d.Reason})
	}
	t.CertExpires = certExpiry(f.opts.CertFile)
	if synced, known := clockSynchronized(); known {
		t.ClockSynced = &synced
	}
	f.mu.Lock()
	t.ProbeRTTMS = round1(float64(f.probe.lastRTT.Microseconds()) / 1000)
	f.mu.Unlock()
	return t
}

func (f *Fleet) publishTelemetry(ctx context.Context) {
	b, err := json.Marshal(f.Collect(ctx))
	if err != nil {
		return
	}
	if err := f.opts.Link.Publish(ctx, TopicTelemetry, b, true); err != nil {
		f.log.Debug("telemetry not published", "err", err)
	}
}

// certExpiry reads NotAfter of the first certificate in a PEM file.
func certExpiry(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return time.Time{}
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}
	}
	return c.NotAfter.UTC()
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

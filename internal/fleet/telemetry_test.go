package fleet

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/mailroomd/mailroomd/internal/clock"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

type offlineLink struct{}

func (offlineLink) Publish(context.Context, string, []byte, bool) error { return uplink.ErrOffline }
func (offlineLink) Republish(context.Context, [][]byte) (int, error)    { return 0, uplink.ErrOffline }
func (offlineLink) State() uplink.LinkState                             { return uplink.LinkState{} }

// TestTelemetryCountsNetworkTraffic: the telemetry's per-interface counters
// move with real traffic (a megabyte over loopback between two messages).
func TestTelemetryCountsNetworkTraffic(t *testing.T) {
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := New(context.Background(), Options{Appliance: "mr-t", Link: offlineLink{}, Store: st,
		Health: health.NewTracker(clock.Real{}, nil), Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	loopback := func(tm Telemetry) (NetInterface, bool) {
		for _, n := range tm.Network {
			if n.Name == "lo" || n.Name == "lo0" {
				return n, true
			}
		}
		return NetInterface{}, false
	}
	before, ok := loopback(f.Collect(context.Background()))
	if !ok {
		t.Fatalf("no loopback interface in telemetry: %+v", f.Collect(context.Background()).Network)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		received <- n
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(make([]byte, 1<<20))
	c.Close()
	if n := <-received; n != 1<<20 {
		t.Fatalf("received %d bytes", n)
	}
	after, _ := loopback(f.Collect(context.Background()))
	if after.BytesSent < before.BytesSent+1<<20 {
		t.Fatalf("loopback bytes_sent %d → %d after sending 1 MiB", before.BytesSent, after.BytesSent)
	}
}

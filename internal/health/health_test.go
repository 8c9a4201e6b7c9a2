package health

import (
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/clock"
)

func TestTrackerRaisesOnceAndClearsOnce(t *testing.T) {
	fc := clock.NewFake(time.Unix(1000, 0))
	var events []string
	tr := NewTracker(fc, func(c Condition, cleared bool) {
		if cleared {
			events = append(events, "clear "+c.Key)
		} else {
			events = append(events, "set "+c.Key+" "+c.Message)
		}
	})
	tr.Set("uplink.disconnected", Critical, "broker unreachable")
	fc.Advance(time.Minute)
	tr.Set("uplink.disconnected", Critical, "broker unreachable") // unchanged: no event
	tr.Set("device.a.disconnected", Warning, "unplugged")
	tr.Set("uplink.disconnected", Critical, "tls handshake failed")
	act := tr.Active()
	if len(act) != 2 || act[0].Key != "uplink.disconnected" || !act[0].Since.Equal(time.Unix(1000, 0)) {
		t.Fatalf("active = %+v", act)
	}
	tr.Clear("uplink.disconnected")
	tr.Clear("uplink.disconnected")
	want := []string{"set uplink.disconnected broker unreachable", "set device.a.disconnected unplugged",
		"set uplink.disconnected tls handshake failed", "clear uplink.disconnected"}
	if len(events) != len(want) {
		t.Fatalf("events = %q", events)
	}
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("event %d = %q, want %q", i, events[i], want[i])
		}
	}
}

func TestDeviceStates(t *testing.T) {
	fc := clock.NewFake(time.Unix(2000, 0))
	tr := NewTracker(fc, nil)
	tr.AddDevice("dock-scale", "scale", "nci")
	tr.AddDevice("dock-scanner", "scanner", "serial-line")
	tr.Seen("dock-scale", "2.5 lb stable")
	tr.Set("device.dock-scanner.disconnected", Warning, "cannot open /dev/ttyACM0")
	tr.Set("device.dock-scale.not_answering", Warning, "no reply within 1s")
	got := tr.Devices()
	if len(got) != 2 {
		t.Fatalf("devices = %+v", got)
	}
	if s := got[0]; s.Name != "dock-scale" || s.State != DeviceError || s.Reason != "no reply within 1s" || s.LastReading != "2.5 lb stable" || !s.LastSeen.Equal(time.Unix(2000, 0)) {
		t.Fatalf("scale = %+v", s)
	}
	if s := got[1]; s.State != DeviceDisconnected || s.Reason != "cannot open /dev/ttyACM0" {
		t.Fatalf("scanner = %+v", s)
	}
	tr.Clear("device.dock-scanner.disconnected")
	if s := tr.Devices()[1]; s.State != DeviceConnected {
		t.Fatalf("after clear: %+v", s)
	}
}

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

package mqtttest

import (
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/internal/event"
)

// Delivered decodes the events among msgs and checks the delivery contract:
// a seq never carries two different events (a duplicate is a resend of the
// same bytes' id and barcode), and first deliveries come in rising seq
// order. It returns the distinct events by seq and the number of duplicate
// deliveries.
func Delivered(t testing.TB, msgs []Message) (map[int64]event.Event, int) {
	t.Helper()
	bySeq := map[int64]event.Event{}
	var last int64
	dups := 0
	for _, m := range msgs {
		if !strings.HasSuffix(m.Topic, "/events") {
			continue
		}
		ev, err := event.Decode(m.Payload)
		if err != nil {
			t.Fatalf("undecodable event %q: %v", m.Payload, err)
		}
		if prev, ok := bySeq[ev.Seq]; ok {
			if prev.ID != ev.ID || string(prev.Barcode) != string(ev.Barcode) {
				t.Fatalf("seq %d carries two events: %s/%q and %s/%q", ev.Seq, prev.ID, prev.Barcode, ev.ID, ev.Barcode)
			}
			dups++
			continue
		}
		if ev.Seq < last {
			t.Fatalf("first delivery of seq %d came after seq %d", ev.Seq, last)
		}
		last = ev.Seq
		bySeq[ev.Seq] = ev
	}
	return bySeq, dups
}

// DistinctEvents is a WaitFor condition: at least n distinct event payloads
// arrived.
func DistinctEvents(n int) func([]Message) bool {
	return func(msgs []Message) bool {
		seen := map[string]bool{}
		for _, m := range msgs {
			if strings.HasSuffix(m.Topic, "/events") {
				seen[string(m.Payload)] = true
			}
		}
		return len(seen) >= n
	}
}

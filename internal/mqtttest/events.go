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
	bySeq, dups, late := deliveries(t, msgs)
	if late.count > 0 {
		t.Fatalf("first delivery of seq %d came after seq %d", late.first[0], late.first[1])
	}
	return bySeq, dups
}

// DeliveredAnyOrder is Delivered for a subscriber that may get an event
// late, after higher seqs (a persistent session on a cluster that lost a
// node, when the engine redelivers): it also returns how many events
// first arrived after a higher seq instead of failing on them.
func DeliveredAnyOrder(t testing.TB, msgs []Message) (bySeq map[int64]event.Event, dups, late int) {
	t.Helper()
	bySeq, dups, l := deliveries(t, msgs)
	return bySeq, dups, l.count
}

// lateness counts first deliveries after a higher seq; first is the first
// such seq and the higher one before it.
type lateness struct {
	count int
	first [2]int64
}

func deliveries(t testing.TB, msgs []Message) (map[int64]event.Event, int, lateness) {
	t.Helper()
	bySeq := map[int64]event.Event{}
	var high int64
	dups := 0
	var late lateness
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
		if ev.Seq < high {
			if late.count == 0 {
				late.first = [2]int64{ev.Seq, high}
			}
			late.count++
		}
		high = max(high, ev.Seq)
		bySeq[ev.Seq] = ev
	}
	return bySeq, dups, late
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

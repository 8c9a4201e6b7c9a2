package fleetop

import (
	"testing"

	"github.com/mailroomd/mailroomd/internal/event"
)

func TestGapDetector(t *testing.T) {
	g := NewGapDetector()
	ev := func(seq int64, id string) event.Event {
		return event.Event{Appliance: "a", Epoch: "e", Seq: seq, ID: id}
	}
	g.Add(ev(1, "i1"))
	if f := g.Add(ev(4, "i4")); f.NewGap != [2]int64{2, 3} {
		t.Fatalf("gap = %v", f.NewGap)
	}
	if f := g.Add(ev(4, "i4")); !f.Duplicate {
		t.Fatal("duplicate not seen")
	}
	if f := g.Add(ev(4, "other")); !f.Conflict {
		t.Fatal("conflict not seen")
	}
	if gaps := g.Gaps()["a/e"]; len(gaps) != 1 || gaps[0] != [2]int64{2, 3} {
		t.Fatalf("gaps = %v", gaps)
	}
	if f := g.Add(ev(2, "i2")); !f.Filled {
		t.Fatal("fill not seen")
	}
	g.Add(ev(3, "i3"))
	if gaps := g.Gaps(); len(gaps) != 0 {
		t.Fatalf("gaps after fill = %v", gaps)
	}
	late := NewGapDetector()
	late.FromFirstSeen = true
	late.Add(ev(40, "i40"))
	late.Add(ev(41, "i41"))
	if gaps := late.Gaps(); len(gaps) != 0 {
		t.Fatalf("a follower joining at seq 40 sees gaps %v", gaps)
	}
	if f := late.Add(ev(43, "i43")); f.NewGap != [2]int64{42, 42} {
		t.Fatalf("gap after joining = %v", f.NewGap)
	}
	g.Add(event.Event{Appliance: "a", Epoch: "e2", Seq: 2, ID: "x"})
	if gaps := g.Gaps()["a/e2"]; len(gaps) != 1 || gaps[0] != [2]int64{1, 1} {
		t.Fatalf("second epoch gaps = %v", gaps)
	}
}

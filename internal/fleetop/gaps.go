package fleetop

import (
	"fmt"
	"sort"

	"github.com/mailroomd/mailroomd/internal/event"
)

// GapDetector checks the delivery contract the way a cloud consumer does:
// within each (appliance, epoch) seqs must arrive 1, 2, 3, … without gaps;
// a seq seen again with the same id is a duplicate (a resend), with another
// id a violation.
type GapDetector struct {
	// FromFirstSeen starts each stream at the first seq seen instead of 1,
	// for a follower that joins while events flow.
	FromFirstSeen bool
	streams       map[string]*stream
}

type stream struct {
	appliance, epoch string
	ids              map[int64]string
	min, max         int64
	duplicates       int
}

// Finding is what one event told the detector.
type Finding struct {
	Appliance, Epoch string
	Seq              int64
	// Duplicate: this seq was seen before with the same id.
	Duplicate bool
	// Conflict: this seq was seen before with another id.
	Conflict bool
	// NewGap lists seqs skipped by this event.
	NewGap [2]int64
	// Filled: this event filled a gap.
	Filled bool
}

// NewGapDetector returns an empty detector.
func NewGapDetector() *GapDetector { return &GapDetector{streams: map[string]*stream{}} }

// Add records one event.
func (g *GapDetector) Add(ev event.Event) Finding {
	key := ev.Appliance + "/" + ev.Epoch
	s := g.streams[key]
	if s == nil {
		s = &stream{appliance: ev.Appliance, epoch: ev.Epoch, ids: map[int64]string{}, min: 1}
		if g.FromFirstSeen {
			s.min, s.max = ev.Seq, ev.Seq-1
		}
		g.streams[key] = s
	}
	f := Finding{Appliance: ev.Appliance, Epoch: ev.Epoch, Seq: ev.Seq}
	if id, ok := s.ids[ev.Seq]; ok {
		if id == ev.ID {
			f.Duplicate = true
			s.duplicates++
		} else {
			f.Conflict = true
		}
		return f
	}
	s.ids[ev.Seq] = ev.ID
	switch {
	case ev.Seq > s.max+1:
		f.NewGap = [2]int64{s.max + 1, ev.Seq - 1}
	case ev.Seq < s.max:
		f.Filled = true
		s.min = min(s.min, ev.Seq)
	}
	s.max = max(s.max, ev.Seq)
	return f
}

// Gaps returns the missing seq ranges of every stream.
func (g *GapDetector) Gaps() map[string][][2]int64 {
	out := map[string][][2]int64{}
	for key, s := range g.streams {
		var gaps [][2]int64
		for seq := s.min; seq <= s.max; seq++ {
			if _, ok := s.ids[seq]; ok {
				continue
			}
			start := seq
			for seq+1 <= s.max {
				if _, ok := s.ids[seq+1]; ok {
					break
				}
				seq++
			}
			gaps = append(gaps, [2]int64{start, seq})
		}
		if len(gaps) > 0 {
			out[key] = gaps
		}
	}
	return out
}

// Summary describes every stream in one line each.
func (g *GapDetector) Summary() []string {
	var out []string
	for _, s := range g.streams {
		gaps := g.Gaps()[s.appliance+"/"+s.epoch]
		out = append(out, fmt.Sprintf("%s epoch %s: %d events, last seq %d, %d gaps %v, %d duplicates",
			s.appliance, s.epoch, len(s.ids), s.max, len(gaps), gaps, s.duplicates))
	}
	sort.Strings(out)
	return out
}

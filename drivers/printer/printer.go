// Package printer defines what every label printer driver reports.
package printer

import (
	"strings"
	"time"
)

// Status is what a label printer says about itself.
type Status struct {
	PaperOut   bool
	RibbonOut  bool
	HeadOpen   bool
	Paused     bool
	BufferFull bool
	// Silent is true when the printer did not answer a status request in
	// time; a printer may stay silent while media is out or the head is open.
	Silent bool
}

// OK reports whether the printer can print.
func (s Status) OK() bool { return s == Status{} }

// String lists the problems, or "ready".
func (s Status) String() string {
	var p []string
	for _, f := range []struct {
		on   bool
		name string
	}{{s.Silent, "not answering"}, {s.PaperOut, "paper out"}, {s.RibbonOut, "ribbon out"}, {s.HeadOpen, "head open"},
		{s.Paused, "paused"}, {s.BufferFull, "buffer full"}} {
		if f.on {
			p = append(p, f.name)
		}
	}
	if len(p) == 0 {
		return "ready"
	}
	return strings.Join(p, ", ")
}

// Reading is a printer status report.
type Reading struct {
	Device string
	Status Status
	At     time.Time
}

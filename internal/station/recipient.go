package station

import (
	"context"
	"slices"
	"strings"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// People is the recipient directory as a station uses it.
type People interface {
	// Index returns the directory's current index.
	Index(ctx context.Context) (*directory.Index, error)
}

// directoryIndex returns the directory to match in, or nil when there is
// none (no directory configured, none imported, or it cannot be read:
// the parcel is then recorded without a match rather than not at all).
func (s *Station) directoryIndex(ctx context.Context) *directory.Index {
	if s.cfg.People == nil {
		return nil
	}
	x, err := s.cfg.People.Index(ctx)
	if err != nil {
		s.log.Warn("recipient directory cannot be read; the parcel is recorded without a match", "err", err)
		return nil
	}
	if x.Len() == 0 {
		return nil
	}
	return x
}

// matchRecipient finds the person a parcel is for and records them in ev:
// the person of the manual entry's scan (the clerk chose them, or the page
// matched the name typed: scan.RecipientID and RecipientMatch), else the
// one a code or a typed name stands for (ev.Recipient), else the one the
// parcel's label names. A name typed in and matched is replaced by the
// person's id. With no directory nothing is recorded; with one, a parcel
// nobody fits is marked "none" and waits on the page's needs-recipient
// list.
func (s *Station) matchRecipient(ctx context.Context, ev *event.Event, scan event.Event, typed bool) {
	defer s.redactLabel(ev)
	x := s.directoryIndex(ctx)
	if x == nil {
		return
	}
	set := func(e directory.Entry, how string, score float64) {
		ev.RecipientID, ev.RecipientMatch = e.ID, how
		if how == directory.MatchFuzzy {
			ev.RecipientScore = score
		}
		if !s.cfg.PrivacyID {
			ev.RecipientName = e.Name
		}
	}
	if scan.RecipientID != "" {
		if e, ok := x.ByID(scan.RecipientID); ok {
			how := scan.RecipientMatch
			if how != directory.MatchExact && how != directory.MatchFuzzy {
				how = directory.MatchManual
			}
			set(e, how, scan.RecipientScore)
			if typed {
				ev.Recipient = ""
			}
			return
		}
	}
	if ev.Recipient != "" {
		e, how, score := x.Resolve(ev.Recipient)
		if how != directory.MatchNone {
			set(e, how, score)
			if typed && how != directory.MatchBadge {
				ev.Recipient = "" // the name typed is the person's: the id says it
			}
			return
		}
	}
	if name := labelName(ev.Parcel); name != "" {
		if e, how, score := x.Resolve(name); how != directory.MatchNone {
			set(e, how, score)
			return
		}
	}
	ev.RecipientMatch = directory.MatchNone
}

// labelName is the recipient's name a parcel's code prints: the ship-to
// contact of a 2D label, or GS1 AI 4301 of a GS1 code.
func labelName(p *event.Parcel) string {
	switch {
	case p == nil:
		return ""
	case p.Label != nil && p.Label.ShipTo != nil && p.Label.ShipTo.Name != "":
		return p.Label.ShipTo.Name
	}
	return p.GS1["4301"]
}

// personalAIs are the GS1 AIs that name or reach a person (ship-to
// company, contact name, phone): left out of events that carry no names.
var personalAIs = []string{"4300", "4301", "4308"}

// withoutPersonal returns m without the personal AIs: a copy when it had
// any.
func withoutPersonal(m map[string]string) map[string]string {
	had := false
	for _, ai := range personalAIs {
		_, ok := m[ai]
		had = had || ok
	}
	if !had {
		return m
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !slices.Contains(personalAIs, k) {
			out[k] = v
		}
	}
	return out
}

// redactLabel leaves the names (and the phone) a 2D label or a GS1 code
// prints out of the event when events carry no names.
func (s *Station) redactLabel(ev *event.Event) {
	if !s.cfg.PrivacyID || ev.Parcel == nil {
		return
	}
	ev.Parcel.GS1 = withoutPersonal(ev.Parcel.GS1)
	if l := ev.Parcel.Label; l != nil {
		c := *l
		if l.ShipTo != nil {
			st := *l.ShipTo
			st.Name, st.Company = "", ""
			c.ShipTo = &st
		}
		c.GS1 = withoutPersonal(l.GS1)
		ev.Parcel.Label = &c
	}
}

// mayCollect says whether the holder of badge may collect parcel p: with
// a directory, a parcel for one of its people goes to that person (self)
// or one of their delegates only; person is the recipient's entry, when
// known. refusal is the code of a refusal: not_a_delegate, or
// directory_unavailable when the directory cannot be read.
func (s *Station) mayCollect(ctx context.Context, p store.Parcel, badge string) (person directory.Entry, self bool, refusal string) {
	if p.Person == "" || s.cfg.People == nil {
		return person, false, ""
	}
	x, err := s.cfg.People.Index(ctx)
	if err != nil {
		s.log.Error("recipient directory cannot be read; a badge hand-over is refused", "err", err)
		return person, false, store.RefusedNoDirectory
	}
	person, known := x.ByID(p.Person)
	if !known {
		return person, false, "" // forgotten or left: the clerk decides
	}
	holder, ok := x.ByBadge(badge)
	if !ok || !directory.MayCollect(person, holder) {
		return person, false, store.RefusedNotDelegate
	}
	return person, strings.EqualFold(holder.ID, person.ID), ""
}

package station

import (
	"context"
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
// the person a clerk chose (chosen, a directory id), else the one a code
// or a typed name stands for (ev.Recipient), else the one the 2D label
// names. A name typed in and matched is replaced by the person's id, so
// that with directory.privacy "id" no name travels. With no directory
// nothing is recorded; with one, a parcel nobody fits is marked "none"
// and waits on the page's needs-recipient list.
func (s *Station) matchRecipient(ctx context.Context, ev *event.Event, chosen string, typed bool) {
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
	if chosen != "" {
		if e, ok := x.ByID(chosen); ok {
			set(e, directory.MatchManual, 0)
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
	if ev.Parcel != nil && ev.Parcel.Label != nil && ev.Parcel.Label.ShipTo != nil && ev.Parcel.Label.ShipTo.Name != "" {
		if e, how, score := x.Resolve(ev.Parcel.Label.ShipTo.Name); how != directory.MatchNone {
			set(e, how, score)
			return
		}
	}
	ev.RecipientMatch = directory.MatchNone
}

// redactLabel leaves the name a 2D label prints out of the event when
// events carry no names.
func (s *Station) redactLabel(ev *event.Event) {
	if !s.cfg.PrivacyID || ev.Parcel == nil || ev.Parcel.Label == nil {
		return
	}
	l := ev.Parcel.Label
	if (l.ShipTo == nil || l.ShipTo.Name == "" && l.ShipTo.Company == "") && l.GS1["4300"] == "" && l.GS1["4301"] == "" && l.GS1["4308"] == "" {
		return
	}
	c := *l
	if l.ShipTo != nil {
		st := *l.ShipTo
		st.Name, st.Company = "", ""
		c.ShipTo = &st
	}
	if l.GS1 != nil {
		c.GS1 = make(map[string]string, len(l.GS1))
		for k, v := range l.GS1 {
			if k != "4300" && k != "4301" && k != "4308" { // company, name, phone
				c.GS1[k] = v
			}
		}
	}
	ev.Parcel.Label = &c
}

// mayCollect says whether the holder of badge may collect parcel p: with
// a directory, a parcel for one of its people goes to that person (self)
// or one of their delegates only; person is the recipient's entry, when
// known.
func (s *Station) mayCollect(ctx context.Context, p store.Parcel, badge string) (person directory.Entry, self, may bool) {
	if p.Person == "" {
		return person, false, true
	}
	x := s.directoryIndex(ctx)
	if x == nil {
		return person, false, true
	}
	person, known := x.ByID(p.Person)
	if !known {
		return person, false, true // forgotten or left: the clerk decides
	}
	holder, ok := x.ByBadge(badge)
	if !ok || !directory.MayCollect(person, holder) {
		return person, false, false
	}
	return person, strings.EqualFold(holder.ID, person.ID), true
}

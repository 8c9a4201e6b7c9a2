package web

import (
	"testing"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
)

// The status page names a parcel's person by the directory as it is now:
// never by the name the event carries, so that a person forgotten is
// shown by id only.
func TestStatusRowNamesPeopleFromTheDirectory(t *testing.T) {
	ev := store.Stored{Event: event.Event{ID: "p1", Type: event.TypeParcelReceived, Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z"},
		RecipientID: "E1", RecipientName: "Name In The Event", RecipientMatch: "exact"}}
	now := directory.NewIndex([]directory.Entry{{ID: "E1", Name: "Jürgen Müller", Active: true}})
	if r := row(ev, now); r.Recip != "Jürgen Müller" || r.Person != "E1" || r.Match != "exact" {
		t.Fatalf("row with the person in the directory: %+v", r)
	}
	forgotten := directory.NewIndex(nil)
	if r := row(ev, forgotten); r.Recip != "E1" {
		t.Fatalf("row after the person was forgotten: %+v", r)
	}
	if r := row(ev, nil); r.Recip != "E1" {
		t.Fatalf("row without a directory: %+v", r)
	}
	none := store.Stored{Event: event.Event{ID: "p2", Type: event.TypeParcelReceived, Parcel: &event.Parcel{}, Recipient: "Poststelle", RecipientMatch: "none"}}
	if r := row(none, now); r.Recip != "Poststelle" || r.Match != "none" {
		t.Fatalf("row of a parcel that needs a recipient: %+v", r)
	}
}

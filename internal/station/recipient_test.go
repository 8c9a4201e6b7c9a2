package station

import (
	"context"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
)

type staticPeople struct{ x *directory.Index }

func (p staticPeople) Index(context.Context) (*directory.Index, error) { return p.x, nil }

var testPeople = staticPeople{directory.NewIndex([]directory.Entry{
	{ID: "E1", Name: "Jürgen Müller", Badges: []string{"EMP-1"}, Active: true},
	{ID: "E2", Name: "Anna Weiß", Badges: []string{"EMP-2"}, Active: true},
	{ID: "E3", Name: "Anna Weis", Active: true},
	{ID: "E4", Name: "Konstantin Papadopoulos", Active: true},
})}

// gs1Label is a 2D label (ISO/IEC 15434 format 05) that prints a name.
func gs1Label(sscc, name string) string {
	return "[)>\x1e05\x1d00" + sscc + "\x1d4301" + name + "\x1d42127610115\x1e\x04"
}

// A parcel's recipient is matched in the directory: by a badge scanned
// with it, by a name typed in or printed on its label (exactly or closely,
// when one person alone fits), or by the clerk's choice; no or several
// fitting people leave it "none".
func TestRecipientMatching(t *testing.T) {
	for _, tc := range []struct {
		name       string
		scan       event.Event
		badgeFirst bool
		id, how    string
		recipient  string
	}{
		{"a badge scanned first", event.Event{Barcode: []byte("1Z999AA10123456784")}, true, "E1", "badge", "EMP-1"},
		{"the label's name, exactly", event.Event{Barcode: []byte(gs1Label("340123450000000017", "Juergen Mueller"))}, false, "E1", "exact", ""},
		{"the label's name, misspelt", event.Event{Barcode: []byte(gs1Label("340123450000000024", "Konstantin Papadopulos"))}, false, "E4", "fuzzy", ""},
		{"two people fit the label's name", event.Event{Barcode: []byte(gs1Label("340123450000000031", "Anna Weihs"))}, false, "", "none", ""},
		{"a name nobody has", event.Event{Barcode: []byte(gs1Label("340123450000000048", "Hans Unbekannt"))}, false, "", "none", ""},
		{"a name typed in", event.Event{Barcode: []byte("1Z999AA10123456784"), Manual: true, Recipient: "mueller jürgen"}, false, "E1", "exact", ""},
		{"a person chosen on the page", event.Event{Barcode: []byte("1Z999AA10123456784"), Manual: true, RecipientID: "E2", Recipient: "Anna"}, false, "E2", "manual", ""},
		{"a code of nobody typed in", event.Event{Barcode: []byte("1Z999AA10123456784"), Manual: true, Recipient: "Poststelle"}, false, "", "none", "Poststelle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.People = "", "", testPeople })
			r.run()
			if tc.badgeFirst {
				r.scan("EMP-1", 0, true)
			}
			ev := tc.scan
			ev.Appliance, ev.Type, ev.Time, ev.Device, ev.Station = "mr-test", event.TypeScan, r.t0.Add(time.Second), "dock-scanner", "dock-1"
			committed, err := r.store.Append(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			r.st.Submit(committed)
			r.waitEvents(event.TypeParcelReceived, 1)
			got := r.events(event.TypeParcelReceived)[0]
			if got.RecipientID != tc.id || got.RecipientMatch != tc.how || got.Recipient != tc.recipient {
				t.Fatalf("recipient %q id %q match %q score %v", got.Recipient, got.RecipientID, got.RecipientMatch, got.RecipientScore)
			}
			if tc.how == "fuzzy" && (got.RecipientScore < directory.FuzzyAccept || got.RecipientScore >= 1) {
				t.Fatalf("fuzzy score %v", got.RecipientScore)
			}
			if want := map[string]string{"E1": "Jürgen Müller", "E2": "Anna Weiß", "E4": "Konstantin Papadopoulos"}[tc.id]; got.RecipientName != want {
				t.Fatalf("recipient_name %q, want %q", got.RecipientName, want)
			}
			p, err := r.store.ParcelByID(context.Background(), got.ID)
			if err != nil || p.Person != tc.id || p.Match != tc.how {
				t.Fatalf("parcel state %+v %v", p, err)
			}
			needs, n, _ := r.store.NeedsRecipient(context.Background(), 10)
			if wantNeeds := tc.how == "none"; (n == 1) != wantNeeds || (len(needs) == 1) != wantNeeds {
				t.Fatalf("needs-recipient list: %d %v", n, needs)
			}
		})
	}
}

// With directory.privacy "id" events carry the person's id alone: no
// recipient_name, and the label's ship-to name is left out.
func TestRecipientPrivacyID(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.People, c.PrivacyID = "", "", testPeople, true })
	r.run()
	r.scan(gs1Label("340123450000000017", "Jürgen Müller"), 0, true)
	r.waitEvents(event.TypeParcelReceived, 1)
	got := r.events(event.TypeParcelReceived)[0]
	l := got.Parcel.Label
	if got.RecipientID != "E1" || got.RecipientName != "" || l == nil || l.ShipTo == nil || l.ShipTo.Name != "" || l.GS1["4301"] != "" ||
		l.ShipTo.PostalCode != "10115" {
		t.Fatalf("event %+v label %+v", got, l)
	}
}

// Without a directory nothing is matched and nothing needs a recipient.
func TestNoDirectoryNoMatch(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	r.scan(gs1Label("340123450000000017", "Jürgen Müller"), 0, true)
	r.waitEvents(event.TypeParcelReceived, 1)
	got := r.events(event.TypeParcelReceived)[0]
	if got.RecipientMatch != "" || got.RecipientID != "" || got.Parcel.Label.ShipTo.Name != "Jürgen Müller" {
		t.Fatalf("event %+v", got)
	}
}

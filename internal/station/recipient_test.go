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

// A badge scanned right after a parcel whose label named its person is
// for the next parcel, not a new owner of this one.
func TestBadgeAfterALabelMatchedParcelIsForTheNext(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.People = "", "", testPeople })
	r.run()
	r.scan(gs1Label("340123450000000017", "Jürgen Müller"), 0, true)
	r.scan("EMP-2", time.Second, true)
	r.scan("1Z999AA10123456784", 2*time.Second, true)
	got := r.waitEvents(event.TypeParcelReceived, 2)
	if got[0].RecipientID != "E1" || got[1].RecipientID != "E2" || got[1].RecipientMatch != "badge" || got[1].Recipient != "EMP-2" {
		t.Fatalf("parcels %+v / %+v", got[0], got[1])
	}
	if ups := r.events(event.TypeParcelUpdated); len(ups) != 0 {
		t.Fatalf("the badge changed the first parcel: %+v", ups)
	}
	if p, _ := r.store.ParcelByID(context.Background(), got[0].ID); p.Person != "E1" {
		t.Fatalf("first parcel's person %q", p.Person)
	}
}

// In deliver mode a parcel for a person goes on a badge only to them or a
// delegate; anyone else's badge is refused (not_a_delegate) and audited.
func TestDeliverModeOnlyToThePersonOrADelegate(t *testing.T) {
	people := staticPeople{directory.NewIndex([]directory.Entry{
		{ID: "E1", Name: "Jürgen Müller", Badges: []string{"EMP-1"}, Delegates: []string{"E3"}, Active: true},
		{ID: "E2", Name: "Anna Weiß", Badges: []string{"EMP-2"}, Active: true},
		{ID: "E3", Name: "Carla Vogt", Badges: []string{"EMP-3"}, Active: true}})}
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.BadgeIsProof, c.People = "", "", true, people })
	r.run()
	r.scan(gs1Label("340123450000000017", "Jürgen Müller"), 0, true)
	r.scan(gs1Label("340123450000000024", "Jürgen Müller"), time.Second, true)
	rcv := r.waitEvents(event.TypeParcelReceived, 2)
	r.scan("ACT-DELIVER", 10*time.Second, true)
	r.scan("EMP-2", 11*time.Second, true)
	r.scan("340123450000000017", 12*time.Second, true) // Anna may not
	r.scan("EMP-3", 13*time.Second, true)
	r.scan("340123450000000017", 14*time.Second, true) // Carla may: his delegate
	r.scan("EMP-1", 15*time.Second, true)
	r.scan("340123450000000024", 16*time.Second, true) // he himself
	del := r.waitEvents(event.TypeParcelDelivered, 2)
	if del[0].ParcelID != rcv[0].ID || del[0].Proxy != "EMP-3" || del[0].RecipientID != "E1" || del[0].RecipientName != "Jürgen Müller" {
		t.Fatalf("the delegate's collection %+v", del[0])
	}
	if del[1].ParcelID != rcv[1].ID || del[1].Proxy != "" || del[1].Recipient != "EMP-1" {
		t.Fatalf("his own collection %+v", del[1])
	}
	audits := r.waitEvents(event.TypeAudit, 1)
	if audits[0].Audit.Reason != "not_a_delegate" || audits[0].ParcelID != rcv[0].ID {
		t.Fatalf("refusal %+v", audits[0].Audit)
	}
}

// A GS1 code (not a 2D label) that names its recipient (AI 4301) is
// matched too; with privacy "id" its name and phone leave the event.
func TestGS1CodeNameMatchedAndRedacted(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.People, c.PrivacyID = "", "", testPeople, true })
	r.run()
	r.scan("]d2"+"00340123450000000017\x1d4301Juergen Mueller\x1d4308+49301234567", 0, true)
	got := r.waitEvents(event.TypeParcelReceived, 1)[0]
	if got.RecipientID != "E1" || got.RecipientMatch != "exact" || got.RecipientName != "" {
		t.Fatalf("event %+v", got)
	}
	if _, ok := got.Parcel.GS1["4301"]; ok || got.Parcel.GS1["4308"] != "" || got.Parcel.GS1["00"] != "340123450000000017" {
		t.Fatalf("gs1 %v", got.Parcel.GS1)
	}
}

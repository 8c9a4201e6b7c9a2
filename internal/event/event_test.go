package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestIDsNeverGoBackwards(t *testing.T) {
	g, err := NewIDGenerator("")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	steps := []time.Duration{0, time.Millisecond, -time.Hour, 0, 0, 24 * time.Hour, -48 * time.Hour, time.Millisecond}
	now := base
	prev := ""
	for i := 0; i < 10000; i++ {
		now = now.Add(steps[i%len(steps)])
		id := g.New(now)
		if id <= prev {
			t.Fatalf("id %d %s not greater than %s", i, id, prev)
		}
		prev = id
	}
	// A generator seeded with the last id keeps going up after a restart
	// with a clock that is far behind.
	g2, err := NewIDGenerator(prev)
	if err != nil {
		t.Fatal(err)
	}
	if id := g2.New(base.Add(-365 * 24 * time.Hour)); id <= prev {
		t.Fatalf("seeded generator went backwards: %s <= %s", id, prev)
	}
}

func TestIDFormat(t *testing.T) {
	g, _ := NewIDGenerator("")
	now := time.UnixMilli(1764237600123)
	id := g.New(now)
	if len(id) != 36 || id[14] != '7' || !strings.ContainsAny(id[19:20], "89ab") {
		t.Fatalf("not a uuidv7: %s", id)
	}
	got, err := IDTime(id)
	if err != nil || !got.Equal(now) {
		t.Fatalf("IDTime = %v, %v; want %v", got, err, now)
	}
	if _, err := NewIDGenerator("not-a-uuid"); err == nil {
		t.Fatal("seeding with garbage must fail")
	}
}

func TestEventWireRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name    string
		barcode []byte
		field   string
	}{
		{"utf8", []byte("1Z999AA10123456784"), `"barcode":"1Z999AA10123456784"`},
		{"gs1 with gs", []byte("]C1420123451\x1d00123"), `"barcode":"]C1420123451\u001d00123"`},
		{"binary", []byte{0xff, 0x00, 'A'}, `"barcode_b64":"/wBB"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Event{ID: "019ac4a0-0000-7000-8000-000000000001", Epoch: "e1", Seq: 42,
				Appliance: "mr-1", Site: "hq", Type: TypeScan, Time: ts, Device: "dock", Barcode: tc.barcode}
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(tc.field)) {
				t.Fatalf("payload %s lacks %s", b, tc.field)
			}
			if !bytes.Contains(b, []byte(`"ts":"2026-11-27T09:00:00.123Z"`)) {
				t.Fatalf("payload %s: ts not UTC with ms", b)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Barcode, tc.barcode) || got.Seq != 42 || got.ID != e.ID {
				t.Fatalf("round trip changed the event: %+v", got)
			}
		})
	}
}

func TestMarshalRefusesUncommitted(t *testing.T) {
	if _, err := json.Marshal(Event{Type: TypeScan}); err == nil {
		t.Fatal("an event without id/seq must not encode")
	}
}

func FuzzEventJSON(f *testing.F) {
	f.Add([]byte("1Z999AA10123456784"), "dock")
	f.Add([]byte("a\"b\\c\x00\x1d\x7f\u2028"), "d\"ev")
	f.Add([]byte{0xff, 0xfe}, "")
	f.Fuzz(func(t *testing.T, barcode []byte, device string) {
		if !utf8.ValidString(device) {
			return
		}
		e := Event{ID: "id", Epoch: "ep", Seq: 1, Appliance: "a", Type: TypeScan, Time: time.Unix(0, 0), Device: device, Barcode: barcode}
		b, err := e.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %q", b)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Barcode, barcode) && !(len(barcode) == 0 && len(got.Barcode) == 0) || got.Device != device {
			t.Fatalf("round trip: %q/%q -> %q/%q", barcode, device, got.Barcode, got.Device)
		}
	})
}

func TestBusinessEventsRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	base := Event{ID: "019ac4a0-0000-7000-8000-000000000002", Epoch: "e1", Seq: 7, Appliance: "mr-1", Time: ts}
	received := base
	received.Type, received.Station, received.ScanID = TypeParcelReceived, "dock-1", "019ac4a0-0000-7000-8000-000000000001"
	received.Recipient = "EMP-0042"
	received.Resolves = []string{received.ScanID}
	received.Parcel = &Parcel{Carrier: "ups", Service: "ground", Tracking: "1Z999AA10123456784", Check: "valid",
		Raw: "1Z999AA10123456784", Weight: &Weight{Value: 1.25, Unit: "kg", Grams: 1250, Stable: true, Scale: "dock-scale"}}
	noWeight := received
	noWeight.Parcel = &Parcel{Carrier: "unknown", Tracking: "X", Check: "none", Raw: "X"}
	manual := base
	manual.Type, manual.Station, manual.Manual, manual.Barcode = TypeScan, "dock-1", true, []byte("1Z999AA10123456784")
	printed := base
	printed.Type, printed.Station, printed.ParcelID, printed.Printer = TypeLabelPrinted, "dock-1", received.ID, "dock-printer"

	for _, tc := range []struct {
		name  string
		ev    Event
		parts []string
	}{
		{"parcel.received", received, []string{`"type":"parcel.received"`, `"station":"dock-1"`, `"scan_id":"019ac4a0-0000-7000-8000-000000000001"`,
			`"carrier":"ups"`, `"service":"ground"`, `"check":"valid"`, `"recipient":"EMP-0042"`,
			`"weight":{"value":1.25,"unit":"kg","grams":1250,"stable":true,"scale":"dock-scale"}`}},
		{"no weight", noWeight, []string{`"weight":null`, `"carrier":"unknown"`}},
		{"manual scan", manual, []string{`"manual":true`, `"barcode":"1Z999AA10123456784"`}},
		{"label.printed", printed, []string{`"parcel_id":"` + received.ID + `"`, `"printer":"dock-printer"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.ev.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) {
				t.Fatalf("invalid JSON %s", b)
			}
			for _, p := range tc.parts {
				if !bytes.Contains(b, []byte(p)) {
					t.Errorf("payload %s lacks %s", b, p)
				}
			}
			if bytes.Contains(b, []byte("resolves")) {
				t.Errorf("payload %s carries the store-only resolves list", b)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			got.Resolves = tc.ev.Resolves
			again, _ := got.AppendJSON(nil)
			if !bytes.Equal(again, b) {
				t.Fatalf("round trip changed the payload:\n%s\n%s", b, again)
			}
		})
	}
}

func TestCustodyEventsRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	for _, e := range []Event{
		{Type: TypeParcelMoved, ParcelID: "p1", Location: "SHELF-A01", By: "dock-scanner", Station: "dock-1"},
		{Type: TypeParcelOutForDelivery, ParcelID: "p1", Round: "north", By: "carl"},
		{Type: TypeParcelDelivered, ParcelID: "p1", Recipient: "EMP-1", Proxy: "EMP-2", By: "clara",
			Proof: &Proof{Method: ProofSignature, SHA256: "ab", Size: 9, Signature: "M1 2L3 4"}},
		{Type: TypeParcelHeld, ParcelID: "p1", Reason: "on leave"},
		{Type: TypeParcelReturned, ParcelID: "p1", Reason: "refused"},
		{Type: TypeParcelForwarded, ParcelID: "p1", Reason: "moved", To: "Munich office"},
		{Type: TypeParcelReceived, Parcel: &Parcel{Carrier: "ups", Tracking: "1Z"}, PickupPIN: "123456"},
	} {
		t.Run(string(e.Type), func(t *testing.T) {
			if !e.Type.Custody() && e.Type != TypeParcelReceived {
				t.Fatalf("%s is not a custody type", e.Type)
			}
			e.ID, e.Epoch, e.Seq, e.Appliance, e.Time = "id", "ep", 7, "mr-1", ts
			b, err := e.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip changed the event:\n got %+v\nwant %+v\n%s", got, e, b)
			}
		})
	}
	if TypeParcelReceived.Custody() || TypeScan.Custody() {
		t.Fatal("received and scan are not custody types")
	}
}

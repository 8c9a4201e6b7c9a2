package barcode

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// msg builds an ISO/IEC 15434 message from a readable form: "|" is GS,
// "^" is RS and "~" is EOT.
func msg(s string) string {
	return strings.NewReplacer("|", "\x1d", "^", "\x1e", "~", "\x04").Replace(s)
}

// The vectors follow the public layouts (ANSI MH10.8.3 format 01 as UPS
// MaxiCode and carriers' PDF417 carry it; GS1 format 05; MH10.8.2 format
// 06); the numbers are made up.
func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    Label
		carrier Carrier
	}{
		{"UPS MaxiCode mode 2 (US ZIP+4)", "[)>^01|96841706672|840|001|1Z12345675|UPSN|12345E|089||1/1|10.1|Y||SALT LAKE CITY|UT^~",
			Label{Format: "01", Tracking: "1Z12345675", SCAC: "UPSN", ServiceClass: "001", Shipper: "12345E", PickupDay: "089", Package: "1/1",
				Weight: &Printed{Value: 10.1}, AddressValidated: "Y",
				ShipTo: &ShipTo{PostalCode: "841706672", Country: "840", City: "SALT LAKE CITY", State: "UT"}}, UPS},
		{"UPS MaxiCode mode 3 (alphanumeric postal code)", "[)>^01|96K1A0B1|124|066|1Z8X3F726700000017|UPSN|8X3F72|331|SHP77|1/2|4.5KG|N|100 WELLINGTON ST|OTTAWA|ON^~",
			Label{Format: "01", Tracking: "1Z8X3F726700000017", SCAC: "UPSN", ServiceClass: "066", Shipper: "8X3F72", PickupDay: "331", ShipmentID: "SHP77",
				Package: "1/2", Weight: &Printed{Value: 4.5, Unit: "KG"}, AddressValidated: "N",
				ShipTo: &ShipTo{PostalCode: "K1A0B1", Country: "124", Street: "100 WELLINGTON ST", City: "OTTAWA", State: "ON"}}, UPS},
		{"FedEx Ground PDF417, with carrier data after the standard fields", "[)>^01|9638117|840|019|748912345670|FDEG|123456789|032||1/1|5.0LB|N|123 MAIN ST|MEMPHIS|TN|EXTRA|DATA^~",
			Label{Format: "01", Tracking: "748912345670", SCAC: "FDEG", ServiceClass: "019", Shipper: "123456789", PickupDay: "032", Package: "1/1",
				Weight: &Printed{Value: 5, Unit: "LB"}, AddressValidated: "N",
				ShipTo: &ShipTo{PostalCode: "38117", Country: "840", Street: "123 MAIN ST", City: "MEMPHIS", State: "TN"}}, FedEx},
		{"GS1 format 05", "[)>^05|00340123450000000017|42127610115|3301000125^~",
			Label{Format: "05", Tracking: "340123450000000017", Weight: &Printed{Value: 12.5, Unit: "KG"},
				GS1:    map[string]string{"00": "340123450000000017", "421": "27610115", "3301": "000125"},
				ShipTo: &ShipTo{Country: "276", PostalCode: "10115"}}, SSCC},
		{"GS1 format 05 with the ship-to name and address (AIs 4300-4306)", "[)>^05|00340123450000000024|4301Jürgen Müller|4300Example GmbH|4302Hauptstr. 5|4305Berlin|42127610115^~",
			Label{Format: "05", Tracking: "340123450000000024",
				GS1: map[string]string{"00": "340123450000000024", "4301": "Jürgen Müller", "4300": "Example GmbH", "4302": "Hauptstr. 5",
					"4305": "Berlin", "421": "27610115"},
				ShipTo: &ShipTo{Name: "Jürgen Müller", Company: "Example GmbH", Street: "Hauptstr. 5", City: "Berlin", Country: "276", PostalCode: "10115"}}, SSCC},
		{"MH10.8.2 format 06", "[)>^06|1JUN123456789ABC|KPO-7788^~",
			Label{Format: "06", Tracking: "UN123456789ABC", Identifiers: map[string]string{"1J": "UN123456789ABC", "K": "PO-7788"}}, Unknown},
		{"two blocks, the second of a format not read", "[)>^01|96841706672|840|001|1Z12345675|UPSN^07|free text^~",
			Label{Format: "01", Tracking: "1Z12345675", SCAC: "UPSN", ServiceClass: "001", ShipTo: &ShipTo{PostalCode: "841706672", Country: "840"}}, UPS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseMessage(msg(tc.in))
			if !reflect.DeepEqual(*got, tc.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Fatalf("\n got %s\nwant %s", g, w)
			}
			r := Classify([]byte("]U0" + msg(tc.in)))
			if r.Label == nil || r.Carrier != tc.carrier || r.Symbology != "]U0" || !r.IsParcel() {
				t.Fatalf("classified as %+v", r)
			}
		})
	}
}

func TestParseMessageFaults(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[)>^01|96841706672|840|001|1Z12345675|UPSN|12345E", "truncated: the message has no EOT"},
		{"[)>01|96841706672|840|001|1Z12345675|UPSN~", "were control characters stripped?"},
		{"[)>^01|97841706672|840|001|1Z1|UPSN^~", "format 01 version 97 is not 96"},
		{"[)>^01|96|841706672|840|001|1Z1|UPSN^~", "a GS between its version and the postal code"},
		{"[)>^01|96841706672|840|001||UPSN^~", "format 01 has no tracking number"},
		{"[)>^01|96841706672|840|001|1Z1|UPSN^01|96W1A1AA|826|068|1ZX|FDEG^~", "format block 2 is a second format 01 block"},
		{"[)>^05|3301000X25^~", `format 05`},
		{"[)>^01|96841706672|840~", "the last format block does not end with RS"},
		{"[)>^01|XX841706672|840|001|1Z1|UPSN^~", "format 01 must start with its two-digit version"},
		{"[)>^1|96^~", "format block 1 does not start with a two-digit format"},
		{"[)>^01|96841706672|840^~", "format 01 has 2 fields"},
		{"[)>^01|96841706672|84|001|1Z1|UPSN^~", `country "84" is not a three-digit ISO 3166 code`},
		{"[)>^01|96841706672|840|001|1Z1|UPSN|||||ten|Y^~", `weight "ten" is not a number`},
		{"[)>^05|99^~", `format 05: "99" is no GS1 element string`},
		{"[)>^09|x^~", "format 09 is not one this box reads"},
		{"[)>01|96", "not an ISO/IEC 15434 message"},
	} {
		l := ParseMessage(msg(tc.in))
		if !strings.Contains(l.Error, tc.want) {
			t.Errorf("%q: error %q, want %q", tc.in, l.Error, tc.want)
		}
	}
	// A truncated message keeps what was read, and is still a parcel.
	r := Classify([]byte(msg("[)>^01|96841706672|840|001|1Z12345675|UPSN|12345E")))
	if r.Label == nil || r.Label.Error == "" || r.Label.Tracking != "1Z12345675" || r.Carrier != UPS {
		t.Fatalf("truncated: %+v %+v", r, r.Label)
	}
	// The field being read when it broke off is not taken: half a
	// tracking number is none.
	if l := ParseMessage(msg("[)>^01|96841706672|840|001|1Z999AA1012")); l.Tracking != "" || l.ServiceClass != "001" {
		t.Fatalf("a cut-off tracking number was taken: %+v", l)
	}
	// Control characters stripped: the label is recognised and says why
	// it cannot be read, with no tracking number made of its fields.
	if r := Classify([]byte(msg("[)>01|96841706672|840|001|1Z12345675|UPSN"))); r.Label == nil || r.Tracking != "" {
		t.Fatalf("stripped message: %+v", r)
	}
	// Units as printed.
	if l := ParseMessage(msg("[)>^01|96841706672|840|001|1Z1|UPSN||||1/1|10 lb|Y^~")); l.Weight == nil || l.Weight.Unit != "lb" || l.Weight.Value != 10 {
		t.Fatalf("unit as printed: %+v", l.Weight)
	}
}

func TestDecodeJSONHasTheLabel(t *testing.T) {
	r := Classify([]byte(msg("[)>^01|96841706672|840|001|1Z12345675|UPSN|12345E|089||1/1|10.1|Y||SALT LAKE CITY|UT^~")))
	b, _ := json.Marshal(r)
	for _, want := range []string{`"label":{"format":"01","tracking":"1Z12345675","scac":"UPSN","service_class":"001"`,
		`"ship_to":{"postal_code":"841706672","country":"840","city":"SALT LAKE CITY","state":"UT"}`, `"package":"1/1"`,
		`"weight":{"value":10.1}`, `"shipper":"12345E"`, `"pickup_day":"089"`, `"carrier":"ups"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(msg("[)>^01|96841706672|840|001|1Z12345675|UPSN|12345E|089||1/1|10.1|Y||SALT LAKE CITY|UT^~"))
	f.Add(msg("[)>^05|00340123450000000017|42127610115|3301000125^~"))
	f.Add(msg("[)>^06|1JUN123456789ABC|KPO-7788^~"))
	f.Add(msg("[)>^01|96|^^^~~"))
	f.Fuzz(func(t *testing.T, s string) {
		l := ParseMessage(s)
		if _, err := json.Marshal(l); err != nil {
			t.Fatal(err)
		}
		if l.Error == "" && (!IsMessage(s) || len(l.Format) != 2) {
			t.Fatalf("%q parsed without error but is no well-formed message: %+v", s, l)
		}
		Classify([]byte(s))
	})
}

// A GS1 code's ship-to name and address keep letter case and blanks as
// printed; the tracking number is read as before.
func TestGS1ShipToAsPrinted(t *testing.T) {
	for _, code := range []string{
		"]d200340123450000000017\x1d4301Jürgen Müller\x1d4302Haupt str. 5\x1d4308+49 30 1234567",
		"]d2 00 3401 2345 0000 0000 17 4301Jürgen Müller\x1d4302Haupt str. 5\x1d4308+49 30 1234567", // blanks, no GS after 00
	} {
		r := Classify([]byte(code))
		if r.Tracking != "340123450000000017" || r.GS1["4301"] != "Jürgen Müller" || r.GS1["4302"] != "Haupt str. 5" || r.GS1["4308"] != "+49 30 1234567" {
			t.Errorf("%q: %+v", code, r)
		}
	}
}

package barcode

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The vectors were computed with an independent implementation of each
// check algorithm (see the reference notes); every valid vector has a twin
// with its check digit changed.
var carrierVectors = []struct {
	name, valid, invalid string
	carrier              Carrier
	service, tracking    string
}{
	{"ups 1Z", "1Z999AA10123456784", "1Z999AA10123456785", UPS, "next-day-air", ""},
	{"ups 1Z ground", "1Z12345E0305271684", "1Z12345E0305271685", UPS, "ground", ""},
	{"ups 1Z other service", "1Z12345E6605272234", "1Z12345E6605272235", UPS, "", ""},
	{"ups waybill", "K1234567895", "K1234567898", UPS, "waybill", ""},
	{"ups waybill K", "K2479825491", "K2479825497", UPS, "waybill", ""},
	{"ups waybill V", "V0490119172", "V0490119179", UPS, "waybill", ""},
	{"ups waybill A", "A9876543215", "A9876543210", UPS, "waybill", ""},
	{"fedex express", "987654321010", "987654321011", FedEx, "express", ""},
	{"fedex ground", "123456789012343", "123456789012344", FedEx, "ground", ""},
	{"fedex ground 96", "9611019012345678901231", "9611019012345678901232", FedEx, "ground-96", ""},
	{"fedex 34", "1001901781810001100400123456789012", "1001901781810001100400123456789013", FedEx, "34-digit", "123456789012"},
	{"usps impb 20", "94001000000000000013", "94001000000000000014", USPS, "impb", ""},
	{"usps impb 22", "9400111899223855718403", "9400111899223855718404", USPS, "impb", ""},
	{"usps legacy 91", "9100000000000000000019", "9100000000000000000010", USPS, "legacy-91", ""},
	{"usps impb 26", "92055900000000000000000125", "92055900000000000000000126", USPS, "impb", ""},
	{"usps 420 zip5", "420100019400111899223855718403", "420100019400111899223855718404", USPS, "impb", "9400111899223855718403"},
	{"usps 420 zip9", "4201000112349400111899223855718403", "4201000112349400111899223855718404", USPS, "impb", "9400111899223855718403"},
	{"s10 gb", "RB123456785GB", "RB123456786GB", RoyalMail, "international", ""},
	{"s10 fr", "CP987654326FR", "CP987654327FR", UPU, "international", ""},
	{"s10 us", "EA000000014US", "EA000000015US", USPS, "international", ""},
	{"s10 de", "RR111222332DE", "RR111222333DE", DeutschePost, "international", ""},
	{"s10 ca", "LX555555555CA", "LX555555556CA", CanadaPost, "international", ""},
	{"dhl express", "1234567891", "1234567892", DHL, "express", ""},
	{"deutschepost identcode", "563102430313", "563102430314", DeutschePost, "identcode", ""},
	{"deutschepost leitcode", "21311045001025", "21311045001026", DeutschePost, "leitcode", ""},
	{"canadapost", "1012345678901238", "1012345678901239", CanadaPost, "", ""},
	{"ontrac C", "C12345678901236", "C12345678901237", OnTrac, "", ""},
	{"ontrac D", "D10000000000011", "D10000000000012", OnTrac, "", ""},
	{"sscc", "340123450000000017", "340123450000000018", SSCC, "", ""},
}

func TestCarrierVectors(t *testing.T) {
	for _, v := range carrierVectors {
		t.Run(v.name, func(t *testing.T) {
			want := v.tracking
			if want == "" {
				want = v.valid
			}
			for _, in := range []string{v.valid, spaced(v.valid), strings.ToLower(v.valid)} {
				r := Classify([]byte(in))
				if r.Carrier != v.carrier || r.Check != CheckValid || r.Service != v.service || r.Tracking != want || r.Raw != in {
					t.Errorf("Classify(%q) = %+v; want %s/%s tracking %s valid", in, r, v.carrier, v.service, want)
				}
			}
			r := Classify([]byte(v.invalid))
			if r.Check != CheckInvalid {
				t.Errorf("Classify(%q) check = %s, want invalid (%+v)", v.invalid, r.Check, r)
			}
			if r.Carrier != v.carrier && !slices.Contains(r.Candidates, v.carrier) {
				t.Errorf("Classify(%q): carrier %s candidates %v; want %s among them", v.invalid, r.Carrier, r.Candidates, v.carrier)
			}
		})
	}
}

// spaced inserts a space every four characters, as codes are printed.
func spaced(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if i > 0 && i%4 == 0 {
			b.WriteByte(' ')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestNoCheckFormats(t *testing.T) {
	for _, tc := range []struct {
		in      string
		carrier Carrier
		service string
	}{
		{"TBA123456789012", Amazon, ""},
		{"TBC000011112222", Amazon, ""},
		{"TBM123456789012", Amazon, ""},
		{"JJD000390007785461337", DHL, "paket"},
		{"JVGL0123456789012345", DHL, "paket"},
	} {
		r := Classify([]byte(tc.in))
		if r.Carrier != tc.carrier || r.Service != tc.service || r.Check != CheckNone || r.Tracking != tc.in {
			t.Errorf("Classify(%q) = %+v", tc.in, r)
		}
	}
}

func TestGS1(t *testing.T) {
	const gs = "\x1d"
	for _, tc := range []struct {
		name, in string
		carrier  Carrier
		tracking string
		check    Check
		sym      string
		gs1      map[string]string
	}{
		{"sscc with AI and GS1-128 id", "]C100340123450000000017", SSCC, "340123450000000017", CheckValid, "]C1",
			map[string]string{"00": "340123450000000017"}},
		{"sscc with AI, no id", "00340123450000000017", SSCC, "340123450000000017", CheckValid, "",
			map[string]string{"00": "340123450000000017"}},
		{"sscc with AI, bad check", "]C100340123450000000018", SSCC, "340123450000000018", CheckInvalid, "]C1",
			map[string]string{"00": "340123450000000018"}},
		{"usps 420 with FNC1", "]C1420100011234" + gs + "9400111899223855718403", USPS, "9400111899223855718403", CheckValid, "]C1",
			map[string]string{"420": "100011234", "94": "00111899223855718403"}},
		{"usps 420 without FNC1", "]C1420100019400111899223855718403", USPS, "9400111899223855718403", CheckValid, "]C1",
			map[string]string{"420": "10001"}},
		{"datamatrix 421 401 403", "]d2421276" + "10117" + gs + "401" + "CONS-1" + gs + "403" + "R42", Unknown, "CONS-1", CheckNone, "]d2",
			map[string]string{"421": "27610117", "401": "CONS-1", "403": "R42"}},
		{"leading FNC1 and SSCC then 420", "]C1" + gs + "00340123450000000017420" + "10117", SSCC, "340123450000000017", CheckValid, "]C1",
			map[string]string{"00": "340123450000000017", "420": "10117"}},
		{"QR symbology id on a UPS code", "]Q31Z999AA10123456784", UPS, "1Z999AA10123456784", CheckValid, "]Q3", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Classify([]byte(tc.in))
			if r.Carrier != tc.carrier || r.Tracking != tc.tracking || r.Check != tc.check || r.Symbology != tc.sym {
				t.Fatalf("Classify(%q) = %+v", tc.in, r)
			}
			for ai, v := range tc.gs1 {
				if r.GS1[ai] != v {
					t.Errorf("GS1[%s] = %q, want %q (all %v)", ai, r.GS1[ai], v, r.GS1)
				}
			}
			if r.Raw != tc.in {
				t.Errorf("raw %q, want %q", r.Raw, tc.in)
			}
		})
	}
}

func TestAmbiguityIsReported(t *testing.T) {
	// Both the FedEx Express and the Deutsche Post Identcode checks hold.
	r := Classify([]byte("100000000220"))
	if !r.Ambiguous || r.Carrier != Unknown || !slices.Equal(r.Candidates, []Carrier{FedEx, DeutschePost}) {
		t.Fatalf("got %+v; want ambiguity between fedex and deutschepost", r)
	}
	// Neither holds: invalid, both named.
	r = Classify([]byte("100000000221"))
	if r.Ambiguous || r.Check != CheckInvalid || len(r.Candidates) != 2 {
		t.Fatalf("got %+v; want invalid with two candidates", r)
	}
}

func TestUnknownKeepsRaw(t *testing.T) {
	for _, in := range []string{"", "hello world", "12345", "1Z!!", "\xff\xfe", "ÄÖÜ-42"} {
		r := Classify([]byte(in))
		if r.Carrier != Unknown || r.Raw != in || r.Check != CheckNone {
			t.Errorf("Classify(%q) = %+v", in, r)
		}
	}
}

func TestInternalRules(t *testing.T) {
	c, err := NewClassifier([]Rule{
		{Kind: KindRecipient, Prefix: "EMP-"},
		{Kind: KindLocation, Prefix: "MS-"},
		{Kind: KindLocation, Pattern: `^SHELF-[A-Z][0-9]{2}$`},
		{Kind: KindParcel, Prefix: "MR"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in     string
		kind   Kind
		parcel bool
	}{
		{"EMP-0042", KindRecipient, false},
		{"emp-0042", KindRecipient, false},
		{"MS-4.12", KindLocation, false},
		{"SHELF-B07", KindLocation, false},
		{"MR000123", KindParcel, true},
	} {
		r := c.Classify([]byte(tc.in))
		if r.Carrier != Internal || r.Kind != tc.kind || r.Tracking != tc.in || r.IsParcel() != tc.parcel {
			t.Errorf("Classify(%q) = %+v", tc.in, r)
		}
	}
	if r := c.Classify([]byte("SHELF-B7")); r.Carrier != Unknown {
		t.Errorf("SHELF-B7 = %+v, want unknown", r)
	}
	if r := c.Classify([]byte("1Z999AA10123456784")); r.Carrier != UPS || !r.IsParcel() {
		t.Errorf("carrier code with rules = %+v", r)
	}
	for _, bad := range [][]Rule{
		{{Kind: "boss", Prefix: "X"}},
		{{Kind: KindLocation}},
		{{Kind: KindLocation, Prefix: "A", Pattern: "B"}},
		{{Kind: KindLocation, Pattern: "("}},
	} {
		if _, err := NewClassifier(bad); err == nil {
			t.Errorf("NewClassifier(%+v) accepted", bad)
		}
	}
}

func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Classify([]byte("]C1420100011234\x1d9400111899223855718403")))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"raw":"]C1420100011234\u001d9400111899223855718403","symbology":"]C1","carrier":"usps","service":"impb","tracking":"9400111899223855718403","check":"valid","gs1":{"420":"100011234","94":"00111899223855718403"}}`
	if string(b) != want {
		t.Fatalf("json\n got %s\nwant %s", b, want)
	}
}

func FuzzClassify(f *testing.F) {
	for _, v := range carrierVectors {
		f.Add([]byte(v.valid))
		f.Add([]byte(v.invalid))
	}
	f.Add([]byte("]C100340123450000000017"))
	f.Add([]byte("]d2\x1d421276\x1d401X\x1d"))
	f.Add([]byte("TBA123456789012"))
	c, err := NewClassifier([]Rule{{Kind: KindRecipient, Prefix: "EMP-"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := c.Classify(b)
		if r.Raw != string(b) {
			t.Fatalf("raw not preserved: %q vs %q", r.Raw, b)
		}
		switch r.Check {
		case CheckValid, CheckInvalid, CheckNone:
		default:
			t.Fatalf("check %q", r.Check)
		}
		if r.Carrier == "" {
			t.Fatal("empty carrier")
		}
		if r.Ambiguous && (r.Carrier != Unknown || len(r.Candidates) < 2) {
			t.Fatalf("ambiguous result %+v", r)
		}
		if utf8.ValidString(r.Raw) {
			if _, err := json.Marshal(r); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	codes := [][]byte{}
	for _, v := range carrierVectors {
		codes = append(codes, []byte(v.valid))
	}
	codes = append(codes, []byte("]C100340123450000000017"), []byte("not a tracking number"))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Classify(codes[i%len(codes)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "codes/s")
}

// TestUSPS20Digits: a 20-digit number without a channel identifier is USPS
// when its check digit holds (as printed, or with the implied 91), and of
// no carrier otherwise: the shape alone says nothing.
func TestUSPS20Digits(t *testing.T) {
	for _, tc := range []struct{ valid, twin string }{
		{"03071790000523483741", "03071790000523483742"},
		{"71969010756003077385", "71969010756003077384"}, // valid only with the implied 91
		{"12345678901234567890", "12345678901234567891"},
	} {
		if r := Classify([]byte(tc.valid)); r.Carrier != USPS || r.Service != "20-digit" || r.Check != CheckValid {
			t.Errorf("Classify(%q) = %+v; want usps 20-digit valid", tc.valid, r)
		}
		if r := Classify([]byte(tc.twin)); r.Carrier != Unknown || r.Check != CheckNone {
			t.Errorf("Classify(%q) = %+v; want unknown: no check digit holds", tc.twin, r)
		}
	}
}

func TestActionAndRoundCodes(t *testing.T) {
	c, err := NewClassifier([]Rule{{Kind: KindAction, Prefix: "ACT-DELIVER", Action: "deliver"}, {Kind: KindRound, Prefix: "RND-"}})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Classify([]byte("act-deliver")); r.Kind != KindAction || r.Action != "deliver" || r.IsParcel() {
		t.Fatalf("action code: %+v", r)
	}
	if r := c.Classify([]byte("RND-NORTH")); r.Kind != KindRound || r.Tracking != "RND-NORTH" || r.IsParcel() {
		t.Fatalf("round code: %+v", r)
	}
	for _, bad := range []Rule{{Kind: KindAction, Prefix: "X"}, {Kind: KindAction, Prefix: "X", Action: "fly"}, {Kind: KindRound, Prefix: "X", Action: "move"}} {
		if _, err := NewClassifier([]Rule{bad}); err == nil {
			t.Fatalf("rule %+v accepted", bad)
		}
	}
}

package label

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultLabel(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	for _, qr := range []bool{false, true} {
		b, err := MustDefault().Render(Fields{ID: "019ac4a0-0000-7000-8000-000000000001", Carrier: "ups", Service: "ground",
			Tracking: "1Z999AA10123456784", Recipient: "EMP-0042", Location: "MS-4.12", Station: "dock-1", Weight: "1.25 kg", Time: at, QR: qr})
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, want := range []string{"^XA", "^XZ", "^FH^FD1Z999AA10123456784^FS", "EMP-0042", "MS-4.12", "2026-11-27 09:30", "dock-1", "1.25 kg"} {
			if !strings.Contains(s, want) {
				t.Errorf("label lacks %q:\n%s", want, s)
			}
		}
		code := "^BCN,100,Y,N,N^FH^FD019ac4a0-0000-7000-8000-000000000001^FS"
		if qr {
			code = "^BQN,2,5^FH^FDQA,019ac4a0-0000-7000-8000-000000000001^FS"
		}
		if !strings.Contains(s, code) {
			t.Errorf("label lacks the id code %q:\n%s", code, s)
		}
	}
}

func TestScannedValuesCannotInjectCommands(t *testing.T) {
	b, err := MustDefault().Render(Fields{ID: "x", Carrier: "unknown", Tracking: "A^FS^XZ^XA^FDevil~JR", Recipient: "B_1"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Count(s, "^XA") != 1 || strings.Count(s, "^XZ") != 1 || strings.Contains(s, "~JR") {
		t.Fatalf("scanned data escaped its field:\n%s", s)
	}
	if !strings.Contains(s, "A_5EFS_5EXZ_5EXA_5EFDevil_7EJR") || !strings.Contains(s, "B_5F1") {
		t.Fatalf("values not hex-escaped:\n%s", s)
	}
}

func TestParseRejectsBadTemplates(t *testing.T) {
	for _, tc := range []string{
		"^XA{{.Nope}}^XZ",
		"^XA{{.Tracking^XZ",
		"{{.Tracking}}",
	} {
		if _, err := Parse(tc); err == nil {
			t.Errorf("Parse(%q) accepted", tc)
		}
	}
	if _, err := Parse("^XA^FO10,10^FH^FD{{.Tracking}}^FS^XZ"); err != nil {
		t.Fatal(err)
	}
}

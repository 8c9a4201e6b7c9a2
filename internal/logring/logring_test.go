package logring

import (
	"fmt"
	"strings"
	"testing"
)

func TestRingKeepsLastLinesRedacted(t *testing.T) {
	r := New(3)
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(r, "line %d recipient=\"Frau Müller\" token=abc\n", i)
	}
	fmt.Fprint(r, "partial")
	got := r.Last(10)
	if len(got) != 3 || !strings.HasPrefix(got[0], "line 3") || !strings.HasPrefix(got[2], "line 5") {
		t.Fatalf("lines = %q", got)
	}
	for _, l := range got {
		if strings.Contains(l, "Müller") || strings.Contains(l, "abc") {
			t.Fatalf("not redacted: %q", l)
		}
	}
	if got := r.Last(1); len(got) != 1 || !strings.HasPrefix(got[0], "line 5") {
		t.Fatalf("Last(1) = %q", got)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		`msg="parcel received" recipient=EMP-0042 location="MS 4"`:               `msg="parcel received" recipient=[redacted] location=[redacted]`,
		`{"msg":"x","recipient":"Frau \"M\"","seq":1}`:                           `{"msg":"x","recipient":"[redacted]","seq":1}`,
		`hash $2a$12$bMskNMBOyzyG2IcqWcSaWuSNLve4QeiuPLc0kTQo/qKpOxEsSclBu end`:  `hash [redacted-hash] end`,
		"key -----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY----- end": "key [redacted-pem] end",
		`msg=login user=clara`: `msg=login user=clara`,
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

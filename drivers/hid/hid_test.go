package hid

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

func decodeAll(t *testing.T, d *KeyboardDecoder, reports [][]byte) []string {
	t.Helper()
	var out []string
	for _, r := range reports {
		code, err := d.Feed(r)
		if err != nil {
			out = append(out, "!"+err.Error())
		} else if code != nil {
			out = append(out, string(code))
		}
	}
	return out
}

func TestKeyboardByteExact(t *testing.T) {
	// "1Z" then Enter on a US layout, as a scanner sends it: press, release.
	reports := [][]byte{
		{0x00, 0, 0x1E, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0},
		{0x02, 0, 0x1D, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0},
		{0x00, 0, 0x28, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0},
	}
	if got := decodeAll(t, NewKeyboardDecoder(US, 0), reports); len(got) != 1 || got[0] != "1Z" {
		t.Fatalf("US: %q", got)
	}
	// The same positions on a German scanner: y and z swap.
	if got := decodeAll(t, NewKeyboardDecoder(DE, 0), reports); len(got) != 1 || got[0] != "1Y" {
		t.Fatalf("DE: %q", got)
	}
	// Right shift counts as shift; a held key (same key in the next report) counts once;
	// two keys pressed in one report both count.
	held := [][]byte{
		{0x20, 0, 0x04, 0, 0, 0, 0, 0}, {0x20, 0, 0x04, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0},
		{0, 0, 0x05, 0x06, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0},
		{0, 0, 0x2B, 0, 0, 0, 0, 0},
	}
	if got := decodeAll(t, NewKeyboardDecoder(US, 0), held); len(got) != 1 || got[0] != "Abc" {
		t.Fatalf("held/rollover: %q", got)
	}
}

func TestEveryKeyOfBothLayoutsRoundTrips(t *testing.T) {
	for _, l := range []*Layout{US, DE} {
		var all []rune
		for _, m := range []map[byte]rune{l.plain, l.shifted, l.altGr} {
			for _, r := range m {
				all = append(all, r)
			}
		}
		text := string(all) + "\x1d"
		reports, err := KeyReports(l, text)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeAll(t, NewKeyboardDecoder(l, 4096), reports)
		if len(got) != 1 || got[0] != text {
			t.Fatalf("%s: typed %q, decoded %q", l.Name, text, got)
		}
	}
	if _, err := KeyReports(US, "ü"); err == nil {
		t.Fatal("US layout cannot type ü")
	}
	r, _ := KeyReports(DE, "Müller@ß€")
	if got := decodeAll(t, NewKeyboardDecoder(DE, 0), r); got[0] != "Müller@ß€" {
		t.Fatalf("DE umlauts and AltGr: %q", got)
	}
}

func TestKeyboardOversizeAndShortReports(t *testing.T) {
	d := NewKeyboardDecoder(US, 8)
	r, _ := KeyReports(US, "123456789012")
	r2, _ := KeyReports(US, "ok")
	got := decodeAll(t, d, append(r, r2...))
	if len(got) != 2 || !strings.Contains(got[0], "longer than 8") || got[1] != "ok" {
		t.Fatalf("got %q", got)
	}
	if _, err := d.Feed([]byte{1, 2}); err == nil {
		t.Fatal("short report accepted")
	}
}

func posReport(aim string, data string, more bool) []byte {
	r := make([]byte, 64)
	r[0] = 2
	r[1] = byte(len(data))
	copy(r[2:5], aim)
	copy(r[5:61], data)
	if more {
		r[63] = 1
	}
	return r
}

func TestPOSScannerReassembly(t *testing.T) {
	p := NewPOSScanner(0)
	long := strings.Repeat("0123456789", 7) // 70 bytes: two reports
	if code, _, err := p.Feed(posReport("]C1", long[:56], true)); code != nil || err != nil {
		t.Fatalf("first part: %q %v", code, err)
	}
	code, aim, err := p.Feed(posReport("]C1", long[56:], false))
	if err != nil || string(code) != long || aim != "]C1" {
		t.Fatalf("reassembled %q %q %v", code, aim, err)
	}
	code, aim, _ = p.Feed(posReport("\x00\x00\x00", "1Z999AA10123456784", false))
	if string(code) != "1Z999AA10123456784" || aim != "" {
		t.Fatalf("single: %q %q", code, aim)
	}
	if _, _, err := p.Feed(posReport("]C1", "x", false)[:10]); err == nil {
		t.Fatal("short report accepted")
	}
	bad := posReport("]C1", "x", false)
	bad[1] = 200
	if _, _, err := p.Feed(bad); err == nil {
		t.Fatal("impossible length accepted")
	}
}

func TestScaleReports(t *testing.T) {
	for _, tc := range []struct {
		report []byte
		want   scale.Reading
	}{
		{[]byte{3, 4, 11, 0xFF, 0x2C, 0x01}, scale.Reading{Value: 30, Unit: scale.Ounce, Stable: true, Status: scale.StatusStable}},
		{[]byte{3, 2, 11, 0xFF, 0, 0}, scale.Reading{Unit: scale.Ounce, Stable: true, Status: scale.StatusZero}},
		{[]byte{3, 3, 2, 0, 0xE8, 0x03}, scale.Reading{Value: 1000, Unit: scale.Gram, Status: scale.StatusMotion}},
		{[]byte{3, 4, 3, 0xFD, 0x39, 0x30}, scale.Reading{Value: 12.345, Unit: scale.Kilogram, Stable: true, Status: scale.StatusStable}},
		{[]byte{3, 4, 12, 0xFE, 0xE2, 0x04}, scale.Reading{Value: 12.5, Unit: scale.Pound, Stable: true, Status: scale.StatusStable}},
		{[]byte{3, 4, 1, 2, 5, 0}, scale.Reading{Value: 500, Unit: scale.Milligram, Stable: true, Status: scale.StatusStable}},
		{[]byte{3, 5, 2, 0, 0, 0}, scale.Reading{Unit: scale.Gram, Status: scale.StatusUnderZero}},
		{[]byte{3, 6, 2, 0, 0, 0}, scale.Reading{Unit: scale.Gram, Status: scale.StatusOverload}},
		{[]byte{3, 1, 2, 0, 0, 0}, scale.Reading{Unit: scale.Gram, Status: scale.StatusFault}},
		{[]byte{3, 7, 2, 0, 0, 0}, scale.Reading{Unit: scale.Gram, Status: scale.StatusCalibration}},
		{[]byte{3, 8, 2, 0, 0, 0}, scale.Reading{Unit: scale.Gram, Status: scale.StatusRezero}},
	} {
		d := &ScaleDecoder{}
		if _, ok, _ := d.Feed([]byte{3, 4, 11, 0xFF, 0x99, 0x99}); ok {
			t.Fatal("first (stale) report after open must be ignored")
		}
		got, ok, err := d.Feed(tc.report)
		if err != nil || !ok || got != tc.want {
			t.Fatalf("% x: %+v %v %v, want %+v", tc.report, got, ok, err, tc.want)
		}
	}
	d := &ScaleDecoder{seen: true}
	for _, bad := range [][]byte{{3, 9, 2, 0, 0, 0}, {3, 4, 99, 0, 0, 0}, {3, 4}} {
		if _, _, err := d.Feed(bad); err == nil {
			t.Fatalf("% x accepted", bad)
		}
	}
}

func FuzzDecoders(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0x02, 0, 0x1E, 0x28}, 16))
	f.Add(posReport("]C1", "abc", false))
	f.Add([]byte{3, 4, 11, 0xFF, 0x2C, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		kd := NewKeyboardDecoder(DE, 64)
		ps := NewPOSScanner(128)
		sd := &ScaleDecoder{}
		for i := 0; i+8 <= len(b); i += 8 {
			if code, err := kd.Feed(b[i : i+8]); err == nil && len(code) > 64 {
				t.Fatalf("keyboard code of %d bytes beyond max", len(code))
			}
		}
		for i := 0; i+64 <= len(b); i += 64 {
			if code, _, err := ps.Feed(b[i : i+64]); err == nil && len(code) > 128 {
				t.Fatalf("POS code of %d bytes beyond max", len(code))
			}
		}
		for i := 0; i+6 <= len(b); i += 6 {
			sd.Feed(b[i : i+6])
		}
	})
}

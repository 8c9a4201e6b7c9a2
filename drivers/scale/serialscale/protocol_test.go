package serialscale

import (
	"strings"
	"testing"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

// parseAll feeds the stream in chunks of chunk bytes, the way a port
// delivers split and merged frames, and returns readings and errors.
func parseAll(p Protocol, stream string, chunk int) (out []string) {
	var buf []byte
	for i := 0; i < len(stream); i += chunk {
		end := min(i+chunk, len(stream))
		b := []byte(stream[i:end])
		Mask7(b)
		buf = append(buf, b...)
		for {
			n, r, ok, err := p.Parse(buf)
			if n == 0 {
				break
			}
			buf = buf[n:]
			switch {
			case err != nil:
				out = append(out, "!"+err.Error())
			case ok:
				out = append(out, r.String())
			}
		}
	}
	return out
}

func TestProtocols(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      Protocol
		stream string
		want   []string
	}{
		{"nci stable", NCI{}, "\n0002.50LB\r\n00\r\x03", []string{"2.5 lb stable"}},
		{"nci variants", NCI{}, "\n0001.20KG\r\nS00\r\x03" + "0000.75LB00\x03" + "\n0000.00LB\r\n20\r\x03", []string{"1.2 kg stable", "0.75 lb stable", "0 lb zero"}},
		{"nci motion", NCI{}, "\n0003.10LB\r\n10\r\x03", []string{"3.1 lb motion"}},
		{"nci over and under capacity", NCI{}, "\n^^^^^^\r\n02\r\x03\n______\r\n01\r\x03", []string{"0  over_capacity", "0  under_zero"}},
		{"nci faults", NCI{}, "\n0000.00LB\r\n40\r\x03\n0000.00LB\r\n08\r\x03", []string{"0  fault", "0  needs_calibration"}},
		{"nci unknown command", NCI{}, "\n?\r\x03", []string{"!scale answered '?': unknown command"}},
		{"nci 7E1 parity bits set", NCI{}, "\n0002.50LB\r\n00\r\x03", []string{"2.5 lb stable"}},
		{"nci noise then frame", NCI{}, "\x00\x7f\n0001.00LB\r\n00\r\x03", []string{"1 lb stable"}},
		{"sics", SICS{}, "S S     100.00 g\r\nS D      99.80 g\r\nS S       0.00 kg\r\n", []string{"100 g stable", "99.8 g motion", "0 kg zero"}},
		{"sics over under busy errors", SICS{}, "S +\r\nS -\r\nS I\r\nES\r\nET\r\nEL\r\n", []string{"0  over_capacity", "0  under_zero", "!MT-SICS scale busy (S I)", "!MT-SICS syntax error (ES)", "!MT-SICS transmission error (ET)", "!MT-SICS logical error (EL)"}},
		{"toledo", Toledo{Unit: scale.Pound}, "\x02  1.234\r\x02  0.000\r", []string{"1.234 lb stable", "0 lb zero"}},
		{"toledo status", Toledo{Unit: scale.Pound}, "\x02?\x21\r\x02?\x22\r\x02?\x24\r", []string{"0 lb motion", "0 lb over_capacity", "0 lb under_zero"}},
		{"toledo noise", Toledo{Unit: scale.Pound}, "xx\x02  2.000\r", []string{"2 lb stable"}},
		{"continuous", Continuous{}, "US,GS,+  1.230 kg\r\nST,GS,+  1.234 kg\r\nOL,GS,+  9.999 kg\r\nST,GS,+  0.000 kg\r\n", []string{"1.23 kg motion", "1.234 kg stable", "0  over_capacity", "0 kg zero"}},
	} {
		for _, chunk := range []int{1, 3, 1000} {
			got := parseAll(tc.p, tc.stream, chunk)
			if len(got) != len(tc.want) {
				t.Fatalf("%s (chunks of %d): got %q, want %q", tc.name, chunk, got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Fatalf("%s (chunks of %d): reading %d = %q, want %q", tc.name, chunk, i, got[i], tc.want[i])
				}
			}
		}
	}
}

func TestParityBitsAreMasked(t *testing.T) {
	in := []byte("\n0002.50LB\r\n00\r\x03")
	for i := range in {
		in[i] |= 0x80 // as if the port handed the parity bit through
	}
	got := parseAll(NCI{}, string(in), 4)
	if len(got) != 1 || got[0] != "2.5 lb stable" {
		t.Fatalf("got %q", got)
	}
}

func FuzzProtocols(f *testing.F) {
	f.Add([]byte("\n0002.50LB\r\n00\r\x03"))
	f.Add([]byte("S S     100.00 g\r\n"))
	f.Add([]byte("\x02?\x21\r"))
	f.Add([]byte("ST,GS,+  1.234 kg\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []Protocol{NCI{}, SICS{}, Toledo{Unit: scale.Pound}, Continuous{}} {
			buf := append([]byte(nil), b...)
			Mask7(buf)
			for len(buf) > 0 {
				n, _, _, _ := p.Parse(buf)
				if n < 0 || n > len(buf) {
					t.Fatalf("%s consumed %d of %d", p.Name(), n, len(buf))
				}
				if n == 0 {
					break
				}
				buf = buf[n:]
			}
			if len(buf) > 300 {
				t.Fatalf("%s keeps %d bytes without progress", p.Name(), len(buf))
			}
		}
	})
}

package serialscale

import (
	"testing"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

// BenchmarkParseFrame parses one reply frame of each protocol: the work of
// one poll.
func BenchmarkParseFrame(b *testing.B) {
	for _, tc := range []struct {
		p     Protocol
		frame string
	}{
		{NCI{}, "\n0002.50LB\r\n00\r\x03"},
		{SICS{}, "S S     100.00 g\r\n"},
		{Toledo{Unit: scale.Pound}, "\x02  1.234\r"},
		{Continuous{}, "ST,GS,+  1.234 kg\r\n"},
	} {
		b.Run(tc.p.Name(), func(b *testing.B) {
			buf := []byte(tc.frame)
			b.ReportAllocs()
			for b.Loop() {
				tc.p.Parse(buf)
			}
		})
	}
}

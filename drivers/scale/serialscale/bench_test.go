package serialscale

import (
	"testing"

	"github.com/mailroomd/mailroomd/drivers/scale"
)

// idleFrames are the replies to an idle poll, one per protocol: a stable
// weight.
var idleFrames = []struct {
	p     Protocol
	frame string
}{
	{NCI{}, "\n0002.50LB\r\n00\r\x03"},
	{SICS{}, "S S     100.00 g\r\n"},
	{Toledo{Unit: scale.Pound}, "\x02  1.234\r"},
	{Continuous{}, "ST,GS,+  1.234 kg\r\n"},
}

// BenchmarkParseFrame parses one reply frame of each protocol: the work of
// one poll.
func BenchmarkParseFrame(b *testing.B) {
	for _, tc := range idleFrames {
		b.Run(tc.p.Name(), func(b *testing.B) {
			buf := []byte(tc.frame)
			b.ReportAllocs()
			for b.Loop() {
				tc.p.Parse(buf)
			}
		})
	}
}

// TestIdlePollDoesNotAllocate: parsing the frame of an idle poll (a stable
// weight, the common case) allocates nothing.
func TestIdlePollDoesNotAllocate(t *testing.T) {
	for _, tc := range idleFrames {
		buf := []byte(tc.frame)
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, ok, err := tc.p.Parse(buf); !ok || err != nil {
				t.Fatalf("%s: not parsed: %v", tc.p.Name(), err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.0f allocations per frame", tc.p.Name(), allocs)
		}
	}
}

package serialline

import "testing"

// BenchmarkFrameScan frames one scan line as a serial scanner sends it.
func BenchmarkFrameScan(b *testing.B) {
	f := NewFramer([]byte{'\r'}, nil, nil, 256, StripControl)
	line := []byte("1Z999AA10123456784\r")
	b.ReportAllocs()
	for b.Loop() {
		f.Feed(line)
	}
}

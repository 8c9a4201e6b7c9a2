package hid

import "testing"

// BenchmarkKeyboardScan decodes the reports of one 18-character scan.
func BenchmarkKeyboardScan(b *testing.B) {
	reports, _ := KeyReports(US, "1Z999AA10123456784")
	d := NewKeyboardDecoder(US, 256)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range reports {
			d.Feed(r)
		}
	}
}

// BenchmarkScaleReport decodes one HID POS scale report (an idle poll).
func BenchmarkScaleReport(b *testing.B) {
	d := &ScaleDecoder{seen: true}
	r := []byte{3, 4, 11, 0xFF, 0x2C, 0x01}
	b.ReportAllocs()
	for b.Loop() {
		d.Feed(r)
	}
}

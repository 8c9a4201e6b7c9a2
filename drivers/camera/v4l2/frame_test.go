package v4l2

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"strings"
	"testing"
)

// testImage is a w×h image with gradients and edges, so that its JPEG
// uses many Huffman codes.
func testImage(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x ^ y) & 0xff), 0xff}
			if (x/16+y/16)%2 == 0 {
				c.B = 255 - c.B
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func encode(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// stripDHT removes the DHT segments before the scan, as a UVC camera
// sends its frames (a copy of v4l2test.StripDHT: this test cannot import
// v4l2test).
func stripDHT(jpg []byte) []byte {
	out := append([]byte(nil), jpg[:2]...)
	i := 2
	for i+4 <= len(jpg) && jpg[i] == 0xff && jpg[i+1] != 0xda {
		n := int(jpg[i+2])<<8 | int(jpg[i+3])
		if jpg[i+1] != 0xc4 {
			out = append(out, jpg[i:i+2+n]...)
		}
		i += 2 + n
	}
	return append(out, jpg[i:]...)
}

func decode(t testing.TB, b []byte) image.Image {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return img
}

func samePixels(t *testing.T, got, want image.Image) {
	t.Helper()
	if got.Bounds() != want.Bounds() {
		t.Fatalf("bounds %v, want %v", got.Bounds(), want.Bounds())
	}
	r := want.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if got.At(x, y) != want.At(x, y) {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, got.At(x, y), want.At(x, y))
			}
		}
	}
}

// TestRepairMJPEG: frames with and without DHT, with bytes after EOI, are
// made complete JPEG files; a frame without DHT decodes to exactly the
// pixels of the original (image/jpeg encodes with the Annex K tables, so
// this checks the inserted tables byte for byte in effect).
func TestRepairMJPEG(t *testing.T) {
	orig := encode(t, testImage(96, 64))
	want := decode(t, orig)
	noDHT := stripDHT(orig)
	if bytes.Contains(noDHT, []byte{0xff, 0xc4}) {
		t.Fatal("stripDHT left a DHT marker")
	}
	if _, err := jpeg.Decode(bytes.NewReader(noDHT)); err == nil {
		t.Fatal("a frame without DHT decodes without repair: the test proves nothing")
	}
	withFill := append([]byte(nil), orig[:2]...)
	withFill = append(withFill, 0xff, 0xff, 0xff) // fill bytes before a marker
	withFill = append(withFill, orig[2:]...)

	cases := []struct {
		name    string
		frame   []byte
		same    bool // the output is the frame up to its EOI
		grows   int  // by this many bytes (the DHT)
		trimmed int  // bytes cut after EOI
	}{
		{"with DHT", orig, true, 0, 0},
		{"without DHT", noDHT, false, len(standardDHT), 0},
		{"garbage after EOI", append(append([]byte(nil), orig...), "garbage\xff\xd9more"...), true, 0, 13},
		{"buffer tail of zeros", append(append([]byte(nil), noDHT...), make([]byte, 4096)...), false, len(standardDHT), 4096},
		{"fill bytes before a marker", withFill, true, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, cfg, err := frameToJPEG(c.frame, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if wantLen := len(c.frame) + c.grows - c.trimmed; len(out) != wantLen {
				t.Errorf("output %d bytes, want %d", len(out), wantLen)
			}
			if c.same && !bytes.Equal(out, c.frame[:len(out)]) {
				t.Error("output is not the frame up to EOI")
			}
			if !bytes.HasPrefix(out, []byte{0xff, 0xd8}) || !bytes.HasSuffix(out, []byte{0xff, 0xd9}) {
				t.Error("output does not run from SOI to EOI")
			}
			if cfg.Width != 96 || cfg.Height != 64 {
				t.Errorf("config %dx%d, want 96x64", cfg.Width, cfg.Height)
			}
			samePixels(t, decode(t, out), want)
		})
	}
}

// TestRepairMJPEGErrors: what is not a JPEG frame is refused, with the
// reason.
func TestRepairMJPEGErrors(t *testing.T) {
	orig := encode(t, testImage(32, 16))
	sos := bytes.Index(orig, []byte{0xff, 0xda})
	huge := append([]byte(nil), orig...)
	sof := bytes.Index(huge, []byte{0xff, 0xc0})
	huge[sof+5], huge[sof+6], huge[sof+7], huge[sof+8] = 0xea, 0x60, 0xea, 0x60 // 60000x60000

	cases := []struct {
		name, frame, want string
	}{
		{"empty", "", "no SOI marker"},
		{"png", "\x89PNG\r\n\x1a\n", "no SOI marker"},
		{"SOI only", "\xff\xd8", "truncated"},
		{"truncated in the scan", string(orig[:len(orig)-40]), "truncated"},
		{"truncated in a header", string(orig[:sos-3]), "truncated"},
		{"EOI before SOS", "\xff\xd8\xff\xd9", "EOI before any SOS"},
		{"bad segment length", "\xff\xd8\xff\xe0\x00\x01", "bad length"},
		{"no marker", "\xff\xd8\x00\x00", "no marker at byte 2"},
		{"implausible size", string(huge), "implausible size 60000x60000"},
		{"not decodable", "\xff\xd8\xff\xda\x00\x02\xff\xd9", "missing SOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := frameToJPEG([]byte(c.frame), 1<<20)
			if err == nil {
				t.Fatalf("accepted (%d bytes out)", len(out))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to mention %q", err, c.want)
			}
		})
	}
}

// TestStandardDHT: the segment's length and table headers are those of
// the four Annex K.3 tables.
func TestStandardDHT(t *testing.T) {
	s := []byte(standardDHT)
	if s[0] != 0xff || s[1] != 0xc4 || int(s[2])<<8|int(s[3]) != len(s)-2 || len(s) != 420 {
		t.Fatalf("bad DHT segment header % x, %d bytes", s[:4], len(s))
	}
	i := 4
	for _, want := range []struct {
		id     byte
		values int
	}{{0x00, 12}, {0x10, 162}, {0x01, 12}, {0x11, 162}} {
		n := 0
		for _, c := range s[i+1 : i+17] {
			n += int(c)
		}
		if s[i] != want.id || n != want.values {
			t.Fatalf("table %#02x with %d values, want %#02x with %d", s[i], n, want.id, want.values)
		}
		i += 17 + n
	}
	if i != len(s) {
		t.Fatalf("%d bytes after the tables", len(s)-i)
	}
}

// TestYUYVToYCbCr: lines bytesperline apart, padding skipped, samples in
// Y0 U Y1 V order.
func TestYUYVToYCbCr(t *testing.T) {
	const w, h, bpl = 6, 3, 16
	frame := bytes.Repeat([]byte{0xee}, bpl*h)
	for y := range h {
		for x := 0; x < w; x += 2 {
			p := frame[y*bpl+2*x:]
			p[0], p[1], p[2], p[3] = byte(10*y+x), byte(100+10*y+x), byte(10*y+x+1), byte(200+10*y+x)
		}
	}
	img, err := yuyvToYCbCr(frame, w, h, bpl)
	if err != nil {
		t.Fatal(err)
	}
	for y := range h {
		for x := range w {
			got := img.YCbCrAt(x, y)
			want := color.YCbCr{byte(10*y + x), byte(100 + 10*y + x&^1), byte(200 + 10*y + x&^1)}
			if got != want {
				t.Errorf("(%d,%d) = %v, want %v", x, y, got, want)
			}
		}
	}
	// The last line needs no padding.
	if _, err := yuyvToYCbCr(frame[:bpl*(h-1)+2*w], w, h, bpl); err != nil {
		t.Errorf("frame without the last line's padding: %v", err)
	}
	for _, c := range []struct {
		name       string
		n, w, bpl  int
		wantErrSub string
	}{
		{"short", bpl*(h-1) + 2*w - 1, w, bpl, "short YUYV frame"},
		{"odd width", len(frame), 5, bpl, "width must be even"},
		{"line shorter than the width", len(frame), w, 2*w - 2, "line length"},
	} {
		if _, err := yuyvToYCbCr(frame[:c.n], c.w, h, c.bpl); err == nil || !strings.Contains(err.Error(), c.wantErrSub) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.wantErrSub)
		}
	}
}

// FuzzFrameToJPEG: the repair never panics, and what it accepts is a
// complete JPEG file that image/jpeg decodes.
func FuzzFrameToJPEG(f *testing.F) {
	orig := encode(f, testImage(24, 16))
	f.Add(orig)
	f.Add(stripDHT(orig))
	f.Add(append(stripDHT(orig), "trailing"...))
	f.Add(orig[:len(orig)/2])
	f.Add([]byte("\xff\xd8\xff\xd9"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		in := append([]byte(nil), frame...)
		out, cfg, err := frameToJPEG(frame, 1<<16)
		if !bytes.Equal(in, frame) {
			t.Fatal("the frame was modified")
		}
		if err != nil {
			return
		}
		if !bytes.HasPrefix(out, []byte{0xff, 0xd8}) || !bytes.HasSuffix(out, []byte{0xff, 0xd9}) {
			t.Fatalf("accepted output does not run from SOI to EOI: % x", out)
		}
		img, err := jpeg.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("accepted output does not decode: %v", err)
		}
		if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
			t.Fatalf("decoded %v, config %dx%d", b, cfg.Width, cfg.Height)
		}
	})
}

// BenchmarkRepairMJPEG is the DHT insertion into a 1280x720 frame.
func BenchmarkRepairMJPEG(b *testing.B) {
	frame := stripDHT(encode(b, testImage(1280, 720)))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := repairMJPEG(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrameToJPEG is the DHT insertion and the check that the
// 1280x720 frame decodes.
func BenchmarkFrameToJPEG(b *testing.B) {
	frame := stripDHT(encode(b, testImage(1280, 720)))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := frameToJPEG(frame, 4*1280*720); err != nil {
			b.Fatal(err)
		}
	}
}

func yuyvFrame(w, h, bpl int) []byte {
	frame := make([]byte, bpl*h)
	for i := range frame {
		frame[i] = byte(i * 7)
	}
	return frame
}

// BenchmarkYUYVToYCbCr is the copy of a 1280x720 YUYV frame (with padded
// lines) into an image.
func BenchmarkYUYVToYCbCr(b *testing.B) {
	frame := yuyvFrame(1280, 720, 2*1280+64)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := yuyvToYCbCr(frame, 1280, 720, 2*1280+64); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkYUYVToJPEG is the whole conversion of a 1280x720 YUYV frame:
// the copy and the JPEG encoding at quality 90.
func BenchmarkYUYVToJPEG(b *testing.B) {
	frame := yuyvFrame(1280, 720, 2*1280)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		img, err := yuyvToYCbCr(frame, 1280, 720, 2*1280)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeJPEG(img); err != nil {
			b.Fatal(err)
		}
	}
}

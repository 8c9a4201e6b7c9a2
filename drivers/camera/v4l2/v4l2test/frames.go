package v4l2test

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
)

// Solid returns a w×h image of one colour.
func Solid(w, h int, c color.Color) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(c), image.Point{}, draw.Src)
	return img
}

// Halves returns a w×h image, left half one colour, right half another.
func Halves(w, h int, left, right color.Color) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, image.Rect(0, 0, w/2, h), image.NewUniform(left), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(w/2, 0, w, h), image.NewUniform(right), image.Point{}, draw.Src)
	return img
}

// JPEG encodes img as a complete JPEG file (with its DHT segment) at
// quality 90; it panics on an encoder error, which cannot happen for an
// image in memory.
func JPEG(img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// StripDHT removes the DHT segments from a JPEG file, as UVC cameras send
// their MJPEG frames (their decoder is meant to use the standard tables,
// which image/jpeg's encoder uses).
func StripDHT(jpg []byte) []byte {
	out := append([]byte(nil), jpg[:2]...)
	i := 2
	for i+4 <= len(jpg) && jpg[i] == 0xff {
		m := jpg[i+1]
		n := int(jpg[i+2])<<8 | int(jpg[i+3])
		if m == 0xda { // SOS: the rest is scan data
			break
		}
		if m != 0xc4 {
			out = append(out, jpg[i:i+2+n]...)
		}
		i += 2 + n
	}
	return append(out, jpg[i:]...)
}

// YUYVFrame encodes img as a YUYV (YUV 4:2:2) frame with lines bytesPerLine
// bytes apart; the padding at the end of each line is 0xEE. The width must
// be even.
func YUYVFrame(img image.Image, bytesPerLine int) []byte {
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	out := bytes.Repeat([]byte{0xee}, bytesPerLine*h)
	for y := range h {
		line := out[y*bytesPerLine:]
		for x := 0; x < w; x += 2 {
			y0, cb0, cr0 := ycc(img.At(r.Min.X+x, r.Min.Y+y))
			y1, cb1, cr1 := ycc(img.At(r.Min.X+x+1, r.Min.Y+y))
			line[2*x] = y0
			line[2*x+1] = uint8((int(cb0) + int(cb1) + 1) / 2)
			line[2*x+2] = y1
			line[2*x+3] = uint8((int(cr0) + int(cr1) + 1) / 2)
		}
	}
	return out
}

func ycc(c color.Color) (y, cb, cr uint8) {
	r, g, b, _ := c.RGBA()
	return color.RGBToYCbCr(uint8(r>>8), uint8(g>>8), uint8(b>>8))
}

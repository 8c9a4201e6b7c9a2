// Package ocrtest makes shipping label images for tests of label reading:
// text in the Go fonts, rotated, with speckle noise.
package ocrtest

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/f64"
	"golang.org/x/image/math/fixed"
)

// Font is one of the Go fonts at a size in pixels.
type Font struct {
	Name string
	TTF  []byte
	Size float64
}

// Fonts are the fonts labels are rendered in.
var Fonts = []Font{{"regular", goregular.TTF, 40}, {"bold", gobold.TTF, 36}, {"mono", gomono.TTF, 34}}

// Label renders lines of text as a PNG shipping label, rotated by deg
// degrees, with noise speckles (seeded: the same arguments make the same
// image).
func Label(f Font, lines []string, deg float64, noise int, seed uint64) ([]byte, error) {
	ft, err := opentype.Parse(f.TTF)
	if err != nil {
		return nil, err
	}
	face, err := opentype.NewFace(ft, &opentype.FaceOptions{Size: f.Size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, err
	}
	defer face.Close()
	const w, h = 1400, 700
	src := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(src, src.Bounds(), image.White, image.Point{}, draw.Src)
	d := &font.Drawer{Dst: src, Src: image.Black, Face: face}
	y := 90
	for _, l := range lines {
		d.Dot = fixed.P(70, y)
		d.DrawString(l)
		y += face.Metrics().Height.Ceil() + 18
	}
	dst := image.NewRGBA(src.Bounds())
	draw.Draw(dst, dst.Bounds(), image.White, image.Point{}, draw.Src)
	a := deg * math.Pi / 180
	cx, cy := float64(w)/2, float64(h)/2
	sin, cos := math.Sin(a), math.Cos(a)
	m := f64.Aff3{cos, -sin, cx - cos*cx + sin*cy, sin, cos, cy - sin*cx - cos*cy}
	draw.BiLinear.Transform(dst, m, src, src.Bounds(), draw.Over, nil)
	r := rand.New(rand.NewPCG(seed, 7))
	for range noise {
		g := uint8(r.IntN(256))
		dst.Set(r.IntN(w), r.IntN(h), color.RGBA{g, g, g, 255})
	}
	var b bytes.Buffer
	if err := png.Encode(&b, dst); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

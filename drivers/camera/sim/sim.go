// Package sim is a simulated still camera for the demo and the daemon's
// tests: Still returns a generated JPEG (by default a parcel label reading
// "mailroomd sim camera" and the still's number), and Run reports the
// camera connected until its context ends, as a real driver's Run does.
// There is no device and no protocol.
package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"sync"
	"time"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/mailroomd/mailroomd/drivers/camera"
)

// Camera is a simulated camera.
type Camera struct {
	name   string
	render func(n int) image.Image

	mu sync.Mutex
	n  int // stills taken
}

var _ camera.Camera = (*Camera)(nil)

// New returns a simulated camera; render draws still number n (1, 2, …)
// and is Label when nil.
func New(name string, render func(n int) image.Image) *Camera {
	if render == nil {
		render = Label
	}
	return &Camera{name: name, render: render}
}

// Run reports the camera connected on status (which may be nil) and
// returns nil when ctx ends.
func (c *Camera) Run(ctx context.Context, status chan<- camera.Status) error {
	if status != nil {
		select {
		case status <- camera.Status{Device: c.name, Connected: true, Detail: "simulated camera", At: time.Now()}:
		case <-ctx.Done():
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

// Still renders the next image and returns it as a JPEG (quality 90).
func (c *Camera) Still(ctx context.Context) (camera.Photo, error) {
	if ctx.Err() != nil {
		return camera.Photo{}, fmt.Errorf("camera %s: still: %w", c.name, context.Cause(ctx))
	}
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	img := c.render(n)
	if img == nil || img.Bounds().Empty() {
		return camera.Photo{}, fmt.Errorf("camera %s: still %d: %w", c.name, n, errors.New("the render function gave no image"))
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		return camera.Photo{}, fmt.Errorf("camera %s: encode jpeg: %w", c.name, err)
	}
	r := img.Bounds()
	return camera.Photo{JPEG: b.Bytes(), Width: r.Dx(), Height: r.Dy(), At: time.Now()}, nil
}

// Label draws still n: a 1600x1200 photo of a white label on cardboard
// with "mailroomd sim camera", "still #n" and a bar pattern that encodes n.
func Label(n int) image.Image {
	const w, h = 1600, 1200
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(img, img.Rect, color.RGBA{0xc8, 0xa8, 0x78, 0xff}) // cardboard
	label := image.Rect(250, 250, 1350, 950)
	fill(img, label.Inset(-8), color.Black)
	fill(img, label, color.White)

	// Text in basicfont's 7x13 pixels, drawn small, then scaled up 6 times.
	small := image.NewRGBA(image.Rect(0, 0, 170, 60))
	fill(small, small.Rect, color.White)
	d := font.Drawer{Dst: small, Src: image.Black, Face: basicfont.Face7x13}
	for i, line := range []string{"mailroomd sim camera", fmt.Sprintf("still #%d", n)} {
		d.Dot = fixed.P(5, 18+22*i)
		d.DrawString(line)
	}
	draw.NearestNeighbor.Scale(img, image.Rect(290, 280, 290+6*170, 280+6*60), small, small.Rect, draw.Over, nil)

	// Bars: 32 bits of n, wide for 1, narrow for 0.
	x := 300
	for bit := 31; bit >= 0; bit-- {
		bw := 6
		if n>>bit&1 == 1 {
			bw = 18
		}
		fill(img, image.Rect(x, 700, x+bw, 900), color.Black)
		x += bw + 12
	}
	return img
}

func fill(img draw.Image, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

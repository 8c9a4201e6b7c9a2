package sim_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/drivers/camera"
	"github.com/mailroomd/mailroomd/drivers/camera/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func decode(t *testing.T, p camera.Photo) image.Image {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(p.JPEG))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != p.Width || b.Dy() != p.Height {
		t.Fatalf("decoded %v, photo says %dx%d", b, p.Width, p.Height)
	}
	return img
}

// dark counts the dark pixels of r.
func dark(img image.Image, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			if c := color.GrayModel.Convert(img.At(x, y)).(color.Gray); c.Y < 80 {
				n++
			}
		}
	}
	return n
}

// differ counts the pixels of r that are dark in one image and not in the
// other.
func differ(a, b image.Image, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			ya := color.GrayModel.Convert(a.At(x, y)).(color.Gray).Y
			yb := color.GrayModel.Convert(b.At(x, y)).(color.Gray).Y
			if (ya < 80) != (yb < 80) {
				n++
			}
		}
	}
	return n
}

// TestDefaultLabel: stills are 1600x1200 JPEGs of a label whose text and
// bars change with the still's number.
func TestDefaultLabel(t *testing.T) {
	c := sim.New("sim-cam", nil)
	p1, err := c.Still(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Still(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a, b := decode(t, p1), decode(t, p2)
	if p1.Width != 1600 || p1.Height != 1200 || time.Since(p1.At) > time.Minute {
		t.Errorf("photo %dx%d at %v", p1.Width, p1.Height, p1.At)
	}
	text := image.Rect(290, 280, 1310, 640)
	if n := dark(a, text); n < 1000 {
		t.Errorf("only %d dark pixels where the text is", n)
	}
	if dark(a, image.Rect(0, 0, 200, 200)) != 0 {
		t.Error("dark pixels on the cardboard")
	}
	for _, r := range []image.Rectangle{image.Rect(290, 420, 1310, 640), image.Rect(290, 690, 1310, 910)} {
		if n := differ(a, b, r); n < 100 {
			t.Errorf("stills 1 and 2 differ in %d pixels of %v: the counter is not drawn", n, r)
		}
	}
	if n := differ(a, b, image.Rect(290, 280, 1310, 400)); n != 0 {
		t.Errorf("the first line differs in %d pixels", n)
	}
}

func TestRender(t *testing.T) {
	var got []int
	c := sim.New("sim-cam", func(n int) image.Image {
		got = append(got, n)
		if n == 3 {
			return nil
		}
		return image.NewGray(image.Rect(0, 0, 8*n, 8))
	})
	for n := 1; n <= 2; n++ {
		p, err := c.Still(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if decode(t, p); p.Width != 8*n {
			t.Errorf("still %d: width %d", n, p.Width)
		}
	}
	if _, err := c.Still(context.Background()); err == nil || err.Error() != "camera sim-cam: still 3: the render function gave no image" {
		t.Errorf("nil image: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Still(ctx); !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "camera sim-cam: still: ") {
		t.Errorf("cancelled: %v", err)
	}
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Errorf("rendered %v", got)
	}
}

// TestRun: connected until the context ends.
func TestRun(t *testing.T) {
	c := sim.New("sim-cam", nil)
	status := make(chan camera.Status)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, status) }()
	if s := <-status; !s.Connected || s.Device != "sim-cam" {
		t.Errorf("status %+v", s)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before its context ended", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	// With nobody reading the status: Run still returns.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx, make(chan camera.Status)) }()
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

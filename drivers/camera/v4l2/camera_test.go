package v4l2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mailroomd/mailroomd/drivers/camera"
	"github.com/mailroomd/mailroomd/drivers/camera/v4l2"
	"github.com/mailroomd/mailroomd/drivers/camera/v4l2/v4l2test"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// epoch is what the test clock always says.
var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// harness runs a driver on a fake camera until the test ends, then checks
// that the driver left every device closed, not streaming, unmapped, and
// broke no rule of the protocol.
type harness struct {
	t    *testing.T
	fake *v4l2test.Camera
	cam  *v4l2.Camera

	cancel    context.CancelFunc
	done      chan error
	statusCh  chan camera.Status
	collected chan struct{}
	stopOnce  sync.Once

	mu       sync.Mutex
	statuses []camera.Status
}

// start runs a driver with cfg (Name, Path, Open, Now and a Warmup of none
// filled in when unset) on a fake camera made from fc.
func start(t *testing.T, fc v4l2test.Config, cfg v4l2.Config) *harness {
	t.Helper()
	return startOn(t, v4l2test.New(fc), cfg)
}

func startOn(t *testing.T, fake *v4l2test.Camera, cfg v4l2.Config) *harness {
	t.Helper()
	if cfg.Warmup == 0 {
		cfg.Warmup = -1
	}
	return run(t, fake, cfg)
}

// run is startOn without the change of a zero Warmup.
func run(t *testing.T, fake *v4l2test.Camera, cfg v4l2.Config) *harness {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "dock-cam"
	}
	if cfg.Path == "" {
		cfg.Path = "/dev/video0"
	}
	if cfg.Open == nil {
		cfg.Open = fake.Open
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return epoch }
	}
	h := &harness{
		t: t, fake: fake, cam: v4l2.New(cfg),
		done: make(chan error, 1), statusCh: make(chan camera.Status), collected: make(chan struct{}),
	}
	go func() {
		defer close(h.collected)
		for s := range h.statusCh {
			h.mu.Lock()
			h.statuses = append(h.statuses, s)
			h.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.cam.Run(ctx, h.statusCh) }()
	t.Cleanup(h.stop)
	return h
}

// stop cancels Run, waits for it and checks what it left behind.
func (h *harness) stop() {
	h.stopOnce.Do(func() {
		t := h.t
		t.Helper()
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
		close(h.statusCh)
		<-h.collected
		for i, d := range h.fake.Devices() {
			if !d.Closed() {
				t.Errorf("device %d not closed after Run returned", i)
			}
			if d.StreamingAtClose() && !d.Unplugged() {
				t.Errorf("device %d closed while streaming (no STREAMOFF)", i)
			}
			if n := d.Mapped(); n != 0 {
				t.Errorf("device %d: %d buffers still mapped", i, n)
			}
		}
		if v := h.fake.Violations(); len(v) > 0 {
			t.Errorf("protocol violations:\n%s", strings.Join(v, "\n"))
		}
	})
}

// last returns the latest status, if any.
func (h *harness) last() (camera.Status, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.statuses) == 0 {
		return camera.Status{}, false
	}
	return h.statuses[len(h.statuses)-1], true
}

// waitStatus waits until the latest status satisfies ok.
func (h *harness) waitStatus(what string, ok func(camera.Status) bool) camera.Status {
	h.t.Helper()
	return waitfor.Value(h.t, 5*time.Second, what, func() camera.Status { s, _ := h.last(); return s },
		func(s camera.Status) bool {
			_, any := h.last()
			return any && ok(s)
		})
}

func (h *harness) waitConnected() camera.Status {
	h.t.Helper()
	return h.waitStatus("camera connected", func(s camera.Status) bool { return s.Connected })
}

func (h *harness) still() (camera.Photo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.cam.Still(ctx)
}

func (h *harness) mustStill() camera.Photo {
	h.t.Helper()
	p, err := h.still()
	if err != nil {
		h.t.Fatalf("Still: %v", err)
	}
	return p
}

// decodePhoto decodes a photo's JPEG and checks its size and time.
func decodePhoto(t *testing.T, p camera.Photo, w, h int) image.Image {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(p.JPEG))
	if err != nil {
		t.Fatalf("the photo does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h || p.Width != w || p.Height != h {
		t.Fatalf("photo %dx%d (decoded %v), want %dx%d", p.Width, p.Height, b, w, h)
	}
	if !p.At.Equal(epoch) {
		t.Errorf("photo taken at %v, want %v (Config.Now)", p.At, epoch)
	}
	return img
}

// near reports whether two colours are within tol per 8-bit channel.
func near(a, b color.Color, tol int) bool {
	ar, ag, ab, _ := a.RGBA()
	br, bg, bb, _ := b.RGBA()
	d := func(x, y uint32) bool { return abs(int(x>>8)-int(y>>8)) <= tol }
	return d(ar, br) && d(ag, bg) && d(ab, bb)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

var (
	red   = color.RGBA{220, 30, 30, 255}
	blue  = color.RGBA{30, 40, 220, 255}
	green = color.RGBA{30, 200, 60, 255}
)

// stillCalls returns the calls from the first "REQBUFS 4" on, without
// the DQBUFs that found nothing yet.
func stillCalls(calls []string) []string {
	i := slices.Index(calls, "REQBUFS 4")
	if i < 0 {
		return nil
	}
	return slices.DeleteFunc(slices.Clone(calls[i:]), func(c string) bool { return c == "DQBUF: EAGAIN" })
}

// TestStillMJPEG: a still from an MJPEG camera, with the frame's DHT, or
// without (the standard tables are inserted), or with bytes after EOI; the
// size is the offered one nearest the asked one, and the ioctl sequence is
// that of the protocol.
func TestStillMJPEG(t *testing.T) {
	cases := []struct {
		name  string
		frame func(f v4l2test.Format) []byte
	}{
		{"with DHT", func(f v4l2test.Format) []byte { return v4l2test.JPEG(v4l2test.Solid(f.Width, f.Height, red)) }},
		{"without DHT", func(f v4l2test.Format) []byte {
			return v4l2test.StripDHT(v4l2test.JPEG(v4l2test.Solid(f.Width, f.Height, red)))
		}},
		{"garbage after EOI", func(f v4l2test.Format) []byte {
			return append(v4l2test.JPEG(v4l2test.Solid(f.Width, f.Height, red)), "\x00\x00garbage\xff"...)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, v4l2test.Config{
				Sizes:  []v4l2test.Size{{Width: 320, Height: 240}, {Width: 640, Height: 360}, {Width: 1280, Height: 720}},
				Frames: func(_ int, f v4l2test.Format) []byte { return c.frame(f) },
			}, v4l2.Config{Width: 600, Height: 350})
			s := h.waitConnected()
			if want := "Fake UVC Camera (1234:5678) 640x360 MJPEG"; s.Detail != want || s.Device != "dock-cam" || !s.At.Equal(epoch) {
				t.Errorf("status %+v, want detail %q", s, want)
			}
			p := h.mustStill()
			img := decodePhoto(t, p, 640, 360)
			if got := img.At(320, 180); !near(got, red, 12) {
				t.Errorf("pixel %v, want about %v", got, red)
			}
			dev := h.fake.Last()
			want := []string{
				"REQBUFS 4",
				"QUERYBUF 0", "mmap 0", "QUERYBUF 1", "mmap 1", "QUERYBUF 2", "mmap 2", "QUERYBUF 3", "mmap 3",
				"QBUF 0", "QBUF 1", "QBUF 2", "QBUF 3",
				"STREAMON", "DQBUF 0", "STREAMOFF",
				"munmap 0", "munmap 1", "munmap 2", "munmap 3", "REQBUFS 0",
			}
			if got := stillCalls(dev.Calls()); !slices.Equal(got, want) {
				t.Errorf("calls\n%q\nwant\n%q", got, want)
			}
			if dev.Streaming() || dev.Buffers() != 0 || dev.Mapped() != 0 {
				t.Errorf("after the still: streaming %v, %d buffers, %d mapped", dev.Streaming(), dev.Buffers(), dev.Mapped())
			}
			if f := dev.Format(); f.Width != 640 || f.Height != 360 || f.PixelFormat != v4l2test.MJPEG {
				t.Errorf("format set %+v", f)
			}
		})
	}
}

// TestStillYUYV: a YUYV camera whose lines are padded; the left half of
// the photo is red, the right blue, down to the last line (a driver that
// ignored bytesperline would shear the image).
func TestStillYUYV(t *testing.T) {
	for _, pad := range []int{0, 64, 6} {
		t.Run(fmt.Sprintf("padding %d", pad), func(t *testing.T) {
			h := start(t, v4l2test.Config{
				Formats: []uint32{v4l2test.YUYV}, Sizes: []v4l2test.Size{{Width: 320, Height: 240}}, Padding: pad,
				Frames: func(_ int, f v4l2test.Format) []byte {
					return v4l2test.YUYVFrame(v4l2test.Halves(f.Width, f.Height, red, blue), f.BytesPerLine)
				},
			}, v4l2.Config{Width: 320, Height: 240})
			if s := h.waitConnected(); s.Detail != "Fake UVC Camera (1234:5678) 320x240 YUYV" {
				t.Errorf("detail %q", s.Detail)
			}
			img := decodePhoto(t, h.mustStill(), 320, 240)
			for _, p := range []struct {
				x, y int
				want color.Color
			}{{40, 2, red}, {280, 2, blue}, {40, 237, red}, {280, 237, blue}, {150, 120, red}, {170, 120, blue}} {
				if got := img.At(p.x, p.y); !near(got, p.want, 24) {
					t.Errorf("pixel (%d,%d) = %v, want about %v", p.x, p.y, got, p.want)
				}
			}
		})
	}
}

// TestFormatChoice: MJPEG is preferred, YUYV taken otherwise, anything
// else refused; an old driver without device_caps is understood.
func TestFormatChoice(t *testing.T) {
	cases := []struct {
		name    string
		fc      v4l2test.Config
		w, h    int
		connect bool
		detail  string
	}{
		{"MJPEG preferred", v4l2test.Config{Formats: []uint32{v4l2test.YUYV, v4l2test.MJPEG}}, 0, 0, true, "Fake UVC Camera (1234:5678) 640x480 MJPEG"},
		{"YUYV otherwise", v4l2test.Config{Formats: []uint32{v4l2test.H264, v4l2test.YUYV}}, 0, 0, true, "Fake UVC Camera (1234:5678) 640x480 YUYV"},
		{"nearest size", v4l2test.Config{Sizes: []v4l2test.Size{{Width: 640, Height: 480}, {Width: 1280, Height: 720}, {Width: 1920, Height: 1080}}}, 1200, 700, true, "Fake UVC Camera (1234:5678) 1280x720 MJPEG"},
		{"default size", v4l2test.Config{Sizes: []v4l2test.Size{{Width: 640, Height: 480}, {Width: 1280, Height: 720}, {Width: 1920, Height: 1080}}}, 0, 0, true, "Fake UVC Camera (1234:5678) 1280x720 MJPEG"},
		{"no device caps", v4l2test.Config{NoDeviceCaps: true, Card: "Old Cam"}, 0, 0, true, "Old Cam 640x480 MJPEG"},
		{"YUYV among 80 formats, as the kernel's vivid lists them", v4l2test.Config{Formats: manyFormats(80, v4l2test.YUYV)}, 0, 0, true, "Fake UVC Camera (1234:5678) 640x480 YUYV"},
		{"neither MJPEG nor YUYV", v4l2test.Config{Formats: []uint32{v4l2test.H264}}, 0, 0, false,
			`/dev/video0 (Fake UVC Camera (1234:5678)) offers neither MJPEG nor YUYV (offers ["H264"])`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, c.fc, v4l2.Config{Width: c.w, Height: c.h})
			s := h.waitStatus("a status", func(camera.Status) bool { return true })
			if s.Connected != c.connect || s.Detail != c.detail {
				t.Errorf("status connected %v %q, want %v %q", s.Connected, s.Detail, c.connect, c.detail)
			}
		})
	}
}

// manyFormats is n pixel formats, none MJPEG or YUYV but the last, which
// is last.
func manyFormats(n int, last uint32) []uint32 {
	out := make([]uint32, 0, n)
	for i := range n - 1 {
		out = append(out, v4l2test.H264+uint32(i)<<24)
	}
	return append(out, last)
}

// TestMetadataNodeRefused: a UVC camera's second node (metadata) has no
// VIDEO_CAPTURE in its device_caps, though the device's capabilities have
// it; it is refused, naming the capability, and Still says why at once.
func TestMetadataNodeRefused(t *testing.T) {
	h := start(t, v4l2test.Config{Metadata: true}, v4l2.Config{Path: "/dev/video1"})
	s := h.waitStatus("a status", func(camera.Status) bool { return true })
	if s.Connected || !strings.Contains(s.Detail, "no video capture capability (V4L2_CAP_VIDEO_CAPTURE)") ||
		!strings.Contains(s.Detail, "metadata node") || !strings.Contains(s.Detail, "/dev/video1") {
		t.Errorf("status %+v", s)
	}
	_, err := h.still()
	if !errors.Is(err, v4l2.ErrNotConnected) || !strings.HasPrefix(err.Error(), "camera dock-cam: not connected: /dev/video1 (Fake UVC Camera (1234:5678)) has no video capture capability") {
		t.Errorf("Still: %v", err)
	}
	if calls := h.fake.Calls(); slices.Contains(calls, "ENUM_FMT 0") || slices.Contains(calls, "REQBUFS 4") {
		t.Errorf("the metadata node was used: %q", calls)
	}
}

// TestWarmup: the first Warmup frames after STREAMON are dropped (re-queued)
// and frame number Warmup is the photo, on every still; 0 means 5.
func TestWarmup(t *testing.T) {
	colors := []color.RGBA{{250, 0, 0, 255}, {0, 250, 0, 255}, {0, 0, 250, 255}, {250, 250, 0, 255}, {0, 250, 250, 255}, {250, 0, 250, 255}, {250, 250, 250, 255}}
	for _, c := range []struct {
		warmup, frame int
	}{{-1, 0}, {3, 3}, {0, 5}} {
		t.Run(fmt.Sprintf("warmup %d", c.warmup), func(t *testing.T) {
			fake := v4l2test.New(v4l2test.Config{
				Sizes: []v4l2test.Size{{Width: 64, Height: 48}},
				Frames: func(seq int, f v4l2test.Format) []byte {
					return v4l2test.JPEG(v4l2test.Solid(f.Width, f.Height, colors[seq%len(colors)]))
				},
			})
			h := run(t, fake, v4l2.Config{Warmup: c.warmup, Width: 64, Height: 48})
			h.waitConnected()
			for i := range 2 {
				img := decodePhoto(t, h.mustStill(), 64, 48)
				if got := img.At(32, 24); !near(got, colors[c.frame], 16) {
					t.Errorf("still %d: pixel %v, want frame %d's %v", i, got, c.frame, colors[c.frame])
				}
			}
			dev := h.fake.Last()
			calls := stillCalls(dev.Calls())
			dq, q := 0, 0
			for _, call := range calls {
				if strings.HasPrefix(call, "DQBUF ") {
					dq++
				}
				if strings.HasPrefix(call, "QBUF ") {
					q++
				}
			}
			if want := 2 * (c.frame + 1); dq != want {
				t.Errorf("%d frames dequeued, want %d", dq, want)
			}
			if want := 2 * (4 + c.frame); q != want {
				t.Errorf("%d buffers queued, want %d (4 per still and the dropped frames again)", q, want)
			}
			if n := dev.StreamOns(); n != 2 {
				t.Errorf("streamed %d times, want 2 (once per still)", n)
			}
		})
	}
}

// TestBadFrames: UVC cameras sometimes deliver a damaged first frame: up
// to two bad frames are skipped; a third fails the still, and the device
// stays open.
func TestBadFrames(t *testing.T) {
	good := v4l2test.JPEG(v4l2test.Solid(64, 48, green))
	noDHT := v4l2test.StripDHT(good)
	// sizeimage of a 64x48 MJPEG format is 64*48+64K: this does not fit.
	oversized := append(append([]byte(nil), good...), make([]byte, 64*48+64<<10)...)
	cases := []struct {
		name    string
		damaged [][]byte // queued first, flagged V4L2_BUF_FLAG_ERROR
		frames  [][]byte
		wantErr string
	}{
		{"damaged first", [][]byte{v4l2test.JPEG(v4l2test.Solid(64, 48, red))}, [][]byte{good}, ""},
		{"garbage first", nil, [][]byte{[]byte("not a jpeg at all"), good}, ""},
		{"truncated first", nil, [][]byte{noDHT[:len(noDHT)/2], noDHT}, ""},
		{"oversized first (V4L2_BUF_FLAG_ERROR)", nil, [][]byte{oversized, good}, ""},
		{"empty first", nil, [][]byte{{}, good}, ""},
		{"two bad", nil, [][]byte{[]byte("bad"), noDHT[:100], good}, ""},
		{"three bad", nil, [][]byte{[]byte("bad"), noDHT[:100], []byte("\xff\xd8\xff\xd9"), good},
			"camera dock-cam: frame is not a JPEG: EOI before any SOS: no image data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
			fake.QueueDamaged(c.damaged...)
			fake.Queue(c.frames...)
			h := startOn(t, fake, v4l2.Config{Width: 64, Height: 48})
			h.waitConnected()
			p, err := h.still()
			dev := fake.Last()
			if c.wantErr != "" {
				if err == nil || err.Error() != c.wantErr {
					t.Fatalf("Still: %v, want %q", err, c.wantErr)
				}
				if fake.Opens() != 1 || !h.mustConnected() {
					t.Error("bad frames made the driver reopen the device")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				img := decodePhoto(t, p, 64, 48)
				if got := img.At(10, 10); !near(got, green, 12) {
					t.Errorf("pixel %v, want the good frame's %v", got, green)
				}
			}
			if dev.Streaming() || dev.Buffers() != 0 || dev.Mapped() != 0 {
				t.Errorf("after the still: streaming %v, %d buffers, %d mapped", dev.Streaming(), dev.Buffers(), dev.Mapped())
			}
		})
	}
}

// TestShortYUYVFrame: a YUYV frame shorter than its format (bytesused) is
// skipped, whatever the rest of the buffer holds.
func TestShortYUYVFrame(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{Formats: []uint32{v4l2test.YUYV}, Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	full := v4l2test.YUYVFrame(v4l2test.Solid(64, 48, red), 128)
	fake.Queue(full[:len(full)/2], v4l2test.YUYVFrame(v4l2test.Solid(64, 48, blue), 128))
	h := startOn(t, fake, v4l2.Config{})
	h.waitConnected()
	img := decodePhoto(t, h.mustStill(), 64, 48)
	for _, y := range []int{2, 45} {
		if got := img.At(32, y); !near(got, blue, 24) {
			t.Errorf("pixel (32,%d) = %v, want the whole frame's %v", y, got, blue)
		}
	}
}

func (h *harness) mustConnected() bool {
	s, _ := h.last()
	return s.Connected
}

// TestNoFrame: a camera that sends nothing fails the still after
// FrameTimeout, not before and not much later, with the stream stopped and
// the buffers freed; the device stays open and the next still works.
func TestNoFrame(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	fake.Stall(true)
	const timeout = 150 * time.Millisecond
	h := startOn(t, fake, v4l2.Config{FrameTimeout: timeout})
	h.waitConnected()
	t0 := time.Now()
	_, err := h.still()
	took := time.Since(t0)
	if err == nil || err.Error() != "camera dock-cam: no frame within 150ms" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Still: %v, want \"camera dock-cam: no frame within 150ms\" wrapping os.ErrDeadlineExceeded", err)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("Still took %s, want a little more than %s", took, timeout)
	}
	dev := fake.Last()
	if dev.Streaming() || dev.Buffers() != 0 || dev.Mapped() != 0 {
		t.Errorf("after the timeout: streaming %v, %d buffers, %d mapped", dev.Streaming(), dev.Buffers(), dev.Mapped())
	}
	fake.Stall(false)
	fake.Queue(v4l2test.JPEG(v4l2test.Solid(64, 48, red)))
	decodePhoto(t, h.mustStill(), 64, 48)
	if n := fake.Opens(); n != 1 {
		t.Errorf("opened %d times, want 1 (a timeout does not reopen)", n)
	}
}

// TestStillCancelled: a still whose context ends returns at once; the
// driver stops the stream and frees the buffers, and serves the next one.
func TestStillCancelled(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	fake.Stall(true)
	h := startOn(t, fake, v4l2.Config{FrameTimeout: time.Minute})
	h.waitConnected()
	dev := fake.Last()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := h.cam.Still(ctx); errc <- err }()
	waitfor.True(t, 5*time.Second, "streaming", dev.Streaming)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || err.Error() != "camera dock-cam: still: context canceled" {
			t.Errorf("Still: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Still did not return when its context ended")
	}
	waitfor.True(t, 5*time.Second, "stream stopped, buffers freed and unmapped", func() bool {
		return !dev.Streaming() && dev.Buffers() == 0 && dev.Mapped() == 0
	})

	// A context that ended before: no streaming at all.
	ons := dev.StreamOns()
	if _, err := h.cam.Still(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Still with an ended context: %v", err)
	}
	if dev.StreamOns() != ons {
		t.Error("a still with an ended context streamed")
	}

	fake.Stall(false)
	fake.Queue(v4l2test.JPEG(v4l2test.Solid(64, 48, red)))
	decodePhoto(t, h.mustStill(), 64, 48)
}

// TestUnplugIdle: an unplug while idle is seen by the probe and reported;
// Still fails at once meanwhile, saying why; the camera is found again
// when plugged back in.
func TestUnplugIdle(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	h := startOn(t, fake, v4l2.Config{Probe: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	h.waitConnected()
	first := fake.Last()
	fake.Unplug()
	s := h.waitStatus("disconnected", func(s camera.Status) bool { return !s.Connected })
	if s.Detail != "VIDIOC_QUERYCAP /dev/video0: no such device" {
		t.Errorf("disconnected status detail %q", s.Detail)
	}
	t0 := time.Now()
	_, err := h.still()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Still while unplugged took %s", d)
	}
	if !errors.Is(err, v4l2.ErrNotConnected) || (err.Error() != "camera dock-cam: not connected: VIDIOC_QUERYCAP /dev/video0: no such device" &&
		err.Error() != "camera dock-cam: not connected: open /dev/video0: no such file or directory") {
		t.Errorf("Still while unplugged: %v", err)
	}
	waitfor.True(t, 5*time.Second, "the unplugged device closed", first.Closed)
	h.waitStatus("open failing", func(s camera.Status) bool {
		return s.Detail == "open /dev/video0: no such file or directory"
	})
	if _, err := h.still(); err == nil || err.Error() != "camera dock-cam: not connected: open /dev/video0: no such file or directory" {
		t.Errorf("Still while unplugged: %v", err)
	}

	fake.Plug()
	fake.Queue(v4l2test.JPEG(v4l2test.Solid(64, 48, red)))
	h.waitConnected()
	decodePhoto(t, h.mustStill(), 64, 48)
	if fake.Opens() != 2 {
		t.Errorf("opened %d times, want 2", fake.Opens())
	}
}

// TestUnplugDuringStill: an unplug while waiting for a frame fails the
// still with ENODEV at once, unmaps the buffers, closes the device and
// reports it.
func TestUnplugDuringStill(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	fake.Stall(true)
	// No idle probe: the still itself must see the unplug.
	h := startOn(t, fake, v4l2.Config{FrameTimeout: time.Minute, ReconnectMax: 30 * time.Millisecond, Probe: time.Hour})
	h.waitConnected()
	dev := fake.Last()
	errc := make(chan error, 1)
	go func() { _, err := h.still(); errc <- err }()
	waitfor.True(t, 5*time.Second, "streaming", dev.Streaming)
	fake.Unplug()
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.ENODEV) || !strings.HasPrefix(err.Error(), "camera dock-cam: ") || !strings.Contains(err.Error(), "/dev/video0") {
			t.Errorf("Still: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Still did not fail on the unplug")
	}
	h.waitStatus("disconnected", func(s camera.Status) bool { return !s.Connected })
	waitfor.True(t, 5*time.Second, "device closed and unmapped", func() bool { return dev.Closed() && dev.Mapped() == 0 })
}

// TestNotRunning: Still before Run and after it returned fails at once.
func TestNotRunning(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{})
	cam := v4l2.New(v4l2.Config{Name: "dock-cam", Path: "/dev/video0", Open: fake.Open})
	_, err := cam.Still(context.Background())
	if !errors.Is(err, v4l2.ErrNotRunning) || err.Error() != "camera dock-cam: not running" {
		t.Errorf("Still before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cam.Run(ctx, nil) }() // a nil status channel is allowed
	waitfor.True(t, 5*time.Second, "opened", func() bool { return fake.Opens() == 1 })
	if err := cam.Run(ctx, nil); err == nil || err.Error() != "camera dock-cam: run: already running" {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := cam.Still(context.Background()); !errors.Is(err, v4l2.ErrNotRunning) {
		t.Errorf("Still after Run: %v", err)
	}
	if !fake.Last().Closed() {
		t.Error("Run returned with the device open")
	}
}

// TestAbsentAtStart: a camera that is not there: the open error is the
// status, and Still says it at once.
func TestAbsentAtStart(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{})
	fake.Unplug()
	h := startOn(t, fake, v4l2.Config{})
	s := h.waitStatus("a status", func(camera.Status) bool { return true })
	if s.Connected || s.Detail != "open /dev/video0: no such file or directory" {
		t.Errorf("status %+v", s)
	}
	t0 := time.Now()
	_, err := h.still()
	if err == nil || err.Error() != "camera dock-cam: not connected: open /dev/video0: no such file or directory" {
		t.Errorf("Still: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Still took %s", d)
	}
}

// TestWakeTriesAtOnce: a camera plugged in while the driver waits out a
// long backoff is opened when hotplug says a device appeared, not when the
// backoff ends.
func TestWakeTriesAtOnce(t *testing.T) {
	fake := v4l2test.New(v4l2test.Config{})
	fake.Unplug()
	wake := make(chan struct{}, 1)
	var tries atomic.Int32
	h := startOn(t, fake, v4l2.Config{ReconnectMax: time.Hour, Wake: wake, Open: func(path string) (v4l2.Device, error) {
		tries.Add(1)
		return fake.Open(path)
	}})
	// Five failed opens: the next comes 4 s after the fifth.
	waitfor.True(t, 10*time.Second, "five failed opens", func() bool { return tries.Load() >= 5 })
	fake.Plug()
	woken := time.Now()
	wake <- struct{}{}
	h.waitConnected()
	if d := time.Since(woken); d > 2*time.Second {
		t.Fatalf("connected %s after the wake: the backoff was waited out", d)
	}
}

// TestStillWhileOpening: Still does not wait for an open that hangs.
func TestStillWhileOpening(t *testing.T) {
	release := make(chan struct{})
	opening := make(chan struct{}, 1)
	fake := v4l2test.New(v4l2test.Config{})
	h := startOn(t, fake, v4l2.Config{Open: func(path string) (v4l2.Device, error) {
		opening <- struct{}{}
		<-release
		return fake.Open(path)
	}})
	defer close(release)
	<-opening
	t0 := time.Now()
	_, err := h.still()
	if err == nil || err.Error() != "camera dock-cam: not connected: the device has not been opened yet" {
		t.Errorf("Still: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Still took %s", d)
	}
}

// TestStopDuringStill: cancelling Run during a still ends the still, stops
// the stream, unmaps, closes the device, and leaves no goroutine behind.
func TestStopDuringStill(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	fake := v4l2test.New(v4l2test.Config{Sizes: []v4l2test.Size{{Width: 64, Height: 48}}})
	fake.Stall(true)
	h := startOn(t, fake, v4l2.Config{FrameTimeout: time.Minute})
	h.waitConnected()
	dev := fake.Last()
	errc := make(chan error, 1)
	go func() { _, err := h.still(); errc <- err }()
	waitfor.True(t, 5*time.Second, "streaming", dev.Streaming)
	h.stop() // checks Run returned nil, the device closed, not streaming, unmapped
	if err := <-errc; err == nil || !strings.HasPrefix(err.Error(), "camera dock-cam: still: the camera is stopping") {
		t.Errorf("Still: %v", err)
	}
	if !slices.Contains(dev.Calls(), "STREAMOFF") || dev.Buffers() != 0 {
		t.Errorf("stream not stopped before close: %q", dev.Calls())
	}
	goleak.VerifyNone(t, ignore)
}

// TestConcurrentStills: stills asked for at the same time are taken one
// after the other on the one device.
func TestConcurrentStills(t *testing.T) {
	h := start(t, v4l2test.Config{
		Sizes:  []v4l2test.Size{{Width: 64, Height: 48}},
		Frames: func(_ int, f v4l2test.Format) []byte { return v4l2test.JPEG(v4l2test.Solid(f.Width, f.Height, blue)) },
	}, v4l2.Config{})
	h.waitConnected()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			p, err := h.still()
			if err == nil && (p.Width != 64 || len(p.JPEG) == 0) {
				err = fmt.Errorf("photo %dx%d, %d bytes", p.Width, p.Height, len(p.JPEG))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := h.fake.Last().StreamOns(); n != 4 {
		t.Errorf("streamed %d times, want 4", n)
	}
}

// TestReconnectBackoff: failed opens are retried after 250ms, then twice
// as long each time, up to ReconnectMax; after a connection the backoff
// starts again at 250ms. Timers do not fire early, so the lower bounds are
// exact; the upper ones leave 200ms for a busy machine.
func TestReconnectBackoff(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 2.5s")
	}
	fake := v4l2test.New(v4l2test.Config{})
	var mu sync.Mutex
	var opens []time.Time
	attempts := func() int { mu.Lock(); defer mu.Unlock(); return len(opens) }
	h := startOn(t, fake, v4l2.Config{
		ReconnectMax: 700 * time.Millisecond, Probe: 10 * time.Millisecond,
		Open: func(path string) (v4l2.Device, error) {
			mu.Lock()
			opens = append(opens, time.Now())
			n := len(opens)
			mu.Unlock()
			if n <= 4 {
				return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
			}
			return fake.Open(path)
		},
	})
	h.waitConnected()
	unplugged := time.Now()
	fake.Unplug()
	waitfor.True(t, 10*time.Second, "an attempt after the unplug", func() bool { return attempts() >= 6 })
	h.stop()
	mu.Lock()
	defer mu.Unlock()
	check := func(what string, got, want, slack time.Duration) {
		if got < want || got > want+slack {
			t.Errorf("%s after %s, want %s", what, got, want)
		}
	}
	// Timers run late on a busy machine, never early: the lower bounds are
	// exact, the upper ones only as tight as telling the backoff without
	// its cap (1000, 2000 ms) or without its reset (700 ms) needs.
	for i, want := range []time.Duration{250, 500, 700, 700} {
		check(fmt.Sprintf("attempt %d", i+2), opens[i+1].Sub(opens[i]), want*time.Millisecond, 900*time.Millisecond)
	}
	check("the attempt after the unplug", opens[5].Sub(unplugged), 250*time.Millisecond, 400*time.Millisecond)
}

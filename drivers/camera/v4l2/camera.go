package v4l2

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/mailroomd/mailroomd/drivers/camera"
)

// Config describes one V4L2 (UVC) camera.
type Config struct {
	// Name is the configured device name; it starts every error ("camera
	// dock-cam: …") and is the Status's Device.
	Name string
	// Path is the device node: best a /dev/v4l/by-id/…-video-index0 link,
	// which survives a replug, or /dev/videoN.
	Path string
	// Width and Height are the size asked for (default 1280x720); the
	// driver takes the size the device offers nearest to it.
	Width, Height int
	// Warmup is how many frames are dropped after STREAMON so that auto
	// exposure and white balance settle: 5 when 0, none when negative.
	Warmup int
	// FrameTimeout is the longest wait for one frame (default 2s).
	FrameTimeout time.Duration
	// ReconnectMax caps the backoff between attempts to open the device
	// (default 30s); the first retry comes after 250ms, or ReconnectMax
	// when that is shorter.
	ReconnectMax time.Duration
	// Probe is how often an idle device is checked with VIDIOC_QUERYCAP, so
	// that an unplug is reported without waiting for a still (default 3s).
	Probe time.Duration
	// Wake, if not nil, tells a camera that is not connected that a
	// device appeared (hotplug): it tries again at once, not after its
	// backoff.
	Wake <-chan struct{}
	// Open opens the device node; nil is OpenDevice (the real device).
	Open func(path string) (Device, error)
	// Now stamps photos and statuses; nil is time.Now.
	Now func() time.Time
	// Log is where the driver logs; nil discards.
	Log *slog.Logger
}

// Defaults and limits.
const (
	defaultWidth        = 1280
	defaultHeight       = 720
	defaultWarmup       = 5
	defaultFrameTimeout = 2 * time.Second
	defaultReconnectMax = 30 * time.Second
	defaultProbe        = 3 * time.Second
	reconnectMin        = 250 * time.Millisecond
	// buffers is how many MMAP buffers a still asks for.
	buffers = 4
	// badFrames is how many unusable frames in a row fail a still: UVC
	// cameras sometimes deliver a damaged first frame.
	badFrames = 3
	// waitSlice bounds one Wait, so that a cancelled still stops waiting
	// at most this late.
	waitSlice = 50 * time.Millisecond
)

// notOpened is why the device is not connected before Run opened it.
const notOpened = "the device has not been opened yet"

// ErrNotRunning is returned (wrapped) by Still while Run is not running.
var ErrNotRunning = errors.New("not running")

// ErrNotConnected is returned (wrapped, followed by the reason) by Still
// while the device is not open.
var ErrNotConnected = errors.New("not connected")

// Camera is a V4L2 still camera. Run owns the device; Still asks Run's
// goroutine for a photo.
type Camera struct {
	cfg  Config
	log  *slog.Logger
	reqs chan request

	mu        sync.Mutex
	done      chan struct{} // closed when Run returns; nil while Run is not running
	connected bool
	reason    string // why the device is not connected
}

var _ camera.Camera = (*Camera)(nil)

// request is one Still waiting for Run's goroutine.
type request struct {
	ctx   context.Context
	reply chan result // buffered: Run never blocks on it
}

type result struct {
	photo camera.Photo
	err   error
}

// New returns a camera for cfg, with defaults filled in; it does not touch
// the device until Run.
func New(cfg Config) *Camera {
	if cfg.Width <= 0 || cfg.Height <= 0 {
		cfg.Width, cfg.Height = defaultWidth, defaultHeight
	}
	switch {
	case cfg.Warmup == 0:
		cfg.Warmup = defaultWarmup
	case cfg.Warmup < 0:
		cfg.Warmup = 0
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = defaultFrameTimeout
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = defaultReconnectMax
	}
	if cfg.Probe <= 0 {
		cfg.Probe = defaultProbe
	}
	if cfg.Open == nil {
		cfg.Open = OpenDevice
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Camera{
		cfg:    cfg,
		log:    log.With("camera", cfg.Name, "path", cfg.Path),
		reqs:   make(chan request),
		reason: notOpened,
	}
}

// negotiated is what the device agreed to at VIDIOC_S_FMT.
type negotiated struct {
	card          string
	pixelFormat   uint32
	width, height int
	bytesPerLine  int
}

func (n negotiated) String() string {
	name := fourcc(n.pixelFormat)
	switch n.pixelFormat {
	case pixFmtMJPEG:
		name = "MJPEG"
	case pixFmtYUYV:
		name = "YUYV"
	}
	return fmt.Sprintf("%s %dx%d %s", n.card, n.width, n.height, name)
}

// Run owns the device until ctx ends: it opens it, reports it on status
// (which may be nil), serves stills, checks the idle device every Probe,
// and reopens it with capped exponential backoff after it fails or
// vanishes. It returns nil when ctx ends, with the device closed, and an
// error only when the camera is already running.
func (c *Camera) Run(ctx context.Context, status chan<- camera.Status) error {
	done := make(chan struct{})
	c.mu.Lock()
	if c.done != nil {
		c.mu.Unlock()
		return fmt.Errorf("camera %s: run: already running", c.cfg.Name)
	}
	c.done, c.reason = done, notOpened
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.done, c.connected = nil, false
		c.mu.Unlock()
		close(done)
	}()

	var last *camera.Status
	report := func(connected bool, detail string) {
		if last != nil && last.Connected == connected && last.Detail == detail {
			return
		}
		s := camera.Status{Device: c.cfg.Name, Connected: connected, Detail: detail, At: c.cfg.Now()}
		last = &s
		if status == nil {
			return
		}
		select {
		case status <- s:
		case <-ctx.Done():
		}
	}
	backoff := min(reconnectMin, c.cfg.ReconnectMax)
	for {
		dev, f, err := c.connect()
		if ctx.Err() != nil {
			if err == nil {
				dev.Close()
			}
			return nil
		}
		if err != nil {
			if last == nil || last.Detail != err.Error() {
				c.log.Warn("camera unavailable, retrying", "err", err, "retry", backoff)
			}
			c.setDown(err)
			report(false, err.Error())
			if !c.pause(ctx, backoff) {
				return nil
			}
			backoff = min(backoff*2, c.cfg.ReconnectMax)
			continue
		}
		backoff = min(reconnectMin, c.cfg.ReconnectMax)
		c.log.Info("camera connected", "device", f.String())
		c.setUp()
		report(true, f.String())

		err = c.serve(ctx, dev, f)
		if cerr := dev.Close(); cerr != nil {
			c.log.Debug("camera close", "err", cerr)
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("camera disconnected", "err", err)
		c.setDown(err)
		report(false, err.Error())
		if !c.pause(ctx, backoff) {
			return nil
		}
	}
}

func (c *Camera) setUp() {
	c.mu.Lock()
	c.connected, c.reason = true, ""
	c.mu.Unlock()
}

func (c *Camera) setDown(err error) {
	c.mu.Lock()
	c.connected, c.reason = false, err.Error()
	c.mu.Unlock()
}

// notConnected is Still's error while the device is not open.
func (c *Camera) notConnected() error {
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	return fmt.Errorf("camera %s: %w: %s", c.cfg.Name, ErrNotConnected, reason)
}

// pause waits d before the next attempt to open the device, answering
// stills at once meanwhile; false when ctx ended.
func (c *Camera) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-c.cfg.Wake: // nil: never
			return true
		case r := <-c.reqs:
			r.reply <- result{err: c.notConnected()}
		}
	}
}

// Still takes a photo: it asks Run's goroutine, which streams only for the
// time of the still. It fails at once while Run is not running or the
// device is not connected, and returns when ctx ends at the latest.
func (c *Camera) Still(ctx context.Context) (camera.Photo, error) {
	c.mu.Lock()
	done, connected := c.done, c.connected
	c.mu.Unlock()
	if done == nil {
		return camera.Photo{}, fmt.Errorf("camera %s: %w", c.cfg.Name, ErrNotRunning)
	}
	if !connected {
		return camera.Photo{}, c.notConnected()
	}
	r := request{ctx: ctx, reply: make(chan result, 1)}
	select {
	case c.reqs <- r:
	case <-done:
		return camera.Photo{}, fmt.Errorf("camera %s: %w", c.cfg.Name, ErrNotRunning)
	case <-ctx.Done():
		return camera.Photo{}, fmt.Errorf("camera %s: still: %w", c.cfg.Name, context.Cause(ctx))
	}
	select {
	case res := <-r.reply:
		return res.photo, res.err
	case <-ctx.Done():
		return camera.Photo{}, fmt.Errorf("camera %s: still: %w", c.cfg.Name, context.Cause(ctx))
	}
}

// ioctlError is a failed ioctl, mmap or munmap: the device, not the
// frames, is at fault, so the device is reopened.
type ioctlError struct {
	op, path string
	err      error
}

func (e *ioctlError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *ioctlError) Unwrap() error { return e.err }

// timeoutError is a still that got no frame in time.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("no frame within %s", e.d) }
func (e *timeoutError) Unwrap() error { return os.ErrDeadlineExceeded }

// ioctl performs one request, naming it in the error.
func ioctl(dev Device, path, op string, req uint, arg unsafe.Pointer) error {
	if err := dev.Ioctl(req, arg); err != nil {
		return &ioctlError{op: op, path: path, err: err}
	}
	return nil
}

// connect opens the device and sets it up.
func (c *Camera) connect() (Device, negotiated, error) {
	dev, err := c.cfg.Open(c.cfg.Path)
	if err != nil {
		return nil, negotiated{}, err
	}
	if dev == nil {
		return nil, negotiated{}, fmt.Errorf("open %s: no device", c.cfg.Path)
	}
	f, err := c.setup(dev)
	if err != nil {
		dev.Close()
		return nil, negotiated{}, err
	}
	return dev, f, nil
}

// setup checks the device's capabilities and sets its format: MJPEG when
// offered, else YUYV, at the offered size nearest the configured one.
func (c *Camera) setup(dev Device) (negotiated, error) {
	path := c.cfg.Path
	var capa capability
	if err := ioctl(dev, path, "VIDIOC_QUERYCAP", vidiocQuerycap, unsafe.Pointer(&capa)); err != nil {
		if errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EINVAL) {
			return negotiated{}, fmt.Errorf("%s is not a video device: %w", path, err)
		}
		return negotiated{}, err
	}
	card := cString(capa.Card[:])
	caps := capa.Capabilities
	if caps&capDeviceCaps != 0 {
		caps = capa.DeviceCaps // what this node can do, not the whole device
	}
	if caps&capVideoCapture == 0 {
		hint := ""
		if caps&capMetaCapture != 0 {
			hint = " (it is the camera's metadata node: use its other /dev/video node, best through /dev/v4l/by-id/…-video-index0)"
		}
		return negotiated{}, fmt.Errorf("%s (%s) has no video capture capability (V4L2_CAP_VIDEO_CAPTURE)%s", path, card, hint)
	}
	if caps&capStreaming == 0 {
		return negotiated{}, fmt.Errorf("%s (%s) has no streaming I/O (V4L2_CAP_STREAMING)", path, card)
	}

	// maxFormats bounds the list, against a driver that never ends it. A
	// UVC camera offers a few formats; the kernel's own test driver (vivid)
	// offers about 80.
	const maxFormats = 1024
	var offered []uint32
	for i := uint32(0); ; i++ {
		d := fmtdesc{Index: i, Type: bufTypeVideoCapture}
		err := dev.Ioctl(vidiocEnumFmt, unsafe.Pointer(&d))
		if errors.Is(err, syscall.EINVAL) {
			break // the end of the list
		}
		if err != nil {
			return negotiated{}, &ioctlError{op: "VIDIOC_ENUM_FMT", path: path, err: err}
		}
		offered = append(offered, d.PixelFormat)
		if i >= maxFormats {
			return negotiated{}, fmt.Errorf("VIDIOC_ENUM_FMT %s: the list of formats does not end", path)
		}
	}
	var want uint32
	for _, pf := range []uint32{pixFmtMJPEG, pixFmtYUYV} {
		for _, o := range offered {
			if o == pf && want == 0 {
				want = pf
			}
		}
	}
	if want == 0 {
		names := make([]string, len(offered))
		for i, o := range offered {
			names[i] = fourcc(o)
		}
		return negotiated{}, fmt.Errorf("%s (%s) offers neither MJPEG nor YUYV (offers %q)", path, card, names)
	}

	f := format{Type: bufTypeVideoCapture}
	f.Pix = pixFormat{Width: uint32(c.cfg.Width), Height: uint32(c.cfg.Height), PixelFormat: want, Field: fieldAny}
	if err := ioctl(dev, path, "VIDIOC_S_FMT", vidiocSFmt, unsafe.Pointer(&f)); err != nil {
		return negotiated{}, err
	}
	n := negotiated{card: card, pixelFormat: f.Pix.PixelFormat, width: int(f.Pix.Width), height: int(f.Pix.Height), bytesPerLine: int(f.Pix.BytesPerLine)}
	if n.pixelFormat != want {
		return negotiated{}, fmt.Errorf("VIDIOC_S_FMT %s: asked for %s, the device set %s", path, fourcc(want), fourcc(n.pixelFormat))
	}
	if n.width <= 0 || n.height <= 0 || n.width > 1<<14 || n.height > 1<<14 {
		return negotiated{}, fmt.Errorf("VIDIOC_S_FMT %s: the device set a size of %dx%d", path, n.width, n.height)
	}
	if n.pixelFormat == pixFmtYUYV {
		if n.bytesPerLine == 0 {
			n.bytesPerLine = 2 * n.width
		}
		if n.width%2 != 0 || n.bytesPerLine < 2*n.width {
			return negotiated{}, fmt.Errorf("VIDIOC_S_FMT %s: bad YUYV format %dx%d, %d bytes per line", path, n.width, n.height, n.bytesPerLine)
		}
	}
	return n, nil
}

// serve serves stills and checks the idle device until ctx ends (it
// returns ctx's error then) or the device fails.
func (c *Camera) serve(ctx context.Context, dev Device, f negotiated) error {
	probe := time.NewTicker(c.cfg.Probe)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-c.reqs:
			res, broken := c.still(ctx, r.ctx, dev, f)
			r.reply <- res
			if broken != nil {
				return broken
			}
		case <-probe.C:
			var capa capability
			if err := ioctl(dev, c.cfg.Path, "VIDIOC_QUERYCAP", vidiocQuerycap, unsafe.Pointer(&capa)); err != nil {
				return err
			}
		}
	}
}

// captured is one usable frame: an MJPEG frame made a JPEG file, or a
// YUYV frame copied into an image.
type captured struct {
	jpeg []byte
	cfg  image.Config
	yuyv *image.YCbCr
	at   time.Time
}

// still takes one photo. broken is the error after which the device must
// be reopened (it failed, or its stream could not be stopped); it is nil
// when only the still failed (no frame in time, bad frames, cancelled).
func (c *Camera) still(runCtx, reqCtx context.Context, dev Device, f negotiated) (res result, broken error) {
	ctx, cancel := context.WithCancelCause(reqCtx)
	defer cancel(nil)
	stop := context.AfterFunc(runCtx, func() { cancel(errors.New("the camera is stopping")) })
	defer stop()

	shot, err := c.capture(ctx, dev, f)
	if err != nil {
		var ie *ioctlError
		if errors.As(err, &ie) {
			broken = err
		}
		return result{err: fmt.Errorf("camera %s: %w", c.cfg.Name, err)}, broken
	}
	if shot.yuyv != nil {
		b, err := encodeJPEG(shot.yuyv)
		if err != nil {
			return result{err: fmt.Errorf("camera %s: encode jpeg: %w", c.cfg.Name, err)}, nil
		}
		shot.jpeg = b
		shot.cfg = image.Config{Width: shot.yuyv.Rect.Dx(), Height: shot.yuyv.Rect.Dy()}
	}
	return result{photo: camera.Photo{JPEG: shot.jpeg, Width: shot.cfg.Width, Height: shot.cfg.Height, At: shot.at}}, nil
}

// capture streams until it has a usable frame after the warm-up frames,
// and stops the stream before it returns.
func (c *Camera) capture(ctx context.Context, dev Device, f negotiated) (shot captured, err error) {
	if ctx.Err() != nil {
		return captured{}, fmt.Errorf("still: %w", context.Cause(ctx))
	}
	s := &stream{dev: dev, path: c.cfg.Path}
	defer func() {
		if serr := s.stop(); serr != nil {
			var ie *ioctlError
			switch {
			case err == nil:
				// The photo is good, but the device is in an unknown
				// state: fail the still so that the device is reopened.
				c.log.Warn("camera stream not stopped cleanly", "err", serr)
				err = serr
			case errors.As(err, &ie):
				// The device failed already (unplugged?): its stream
				// cannot be stopped either, and is reopened anyway.
				c.log.Debug("camera stream not stopped cleanly", "err", serr)
			default:
				c.log.Warn("camera stream not stopped cleanly", "err", serr)
				err = errors.Join(err, serr)
			}
		}
	}()
	if err := s.start(buffers); err != nil {
		return captured{}, err
	}
	drop := c.cfg.Warmup
	bad := 0
	for {
		b, err := s.dequeue(ctx, c.cfg.FrameTimeout)
		if err != nil {
			return captured{}, err
		}
		if drop > 0 {
			drop--
			if err := s.queue(b.Index); err != nil {
				return captured{}, err
			}
			continue
		}
		shot, err := c.convert(s, b, f)
		if err == nil {
			shot.at = c.cfg.Now()
			return shot, nil
		}
		bad++
		if bad >= badFrames {
			return captured{}, err
		}
		c.log.Warn("camera frame unusable, taking the next one", "err", err, "sequence", b.Sequence)
		if err := s.queue(b.Index); err != nil {
			return captured{}, err
		}
	}
}

// convert checks a dequeued frame and copies it out of the buffer.
func (c *Camera) convert(s *stream, b buffer, f negotiated) (captured, error) {
	m := s.maps[b.Index]
	if b.Flags&bufFlagError != 0 {
		return captured{}, fmt.Errorf("frame %d damaged (the driver set V4L2_BUF_FLAG_ERROR)", b.Sequence)
	}
	if int(b.BytesUsed) > len(m) {
		return captured{}, fmt.Errorf("frame %d: %d bytes used in a %d-byte buffer", b.Sequence, b.BytesUsed, len(m))
	}
	data := m[:b.BytesUsed]
	switch f.pixelFormat {
	case pixFmtMJPEG:
		frame := append([]byte(nil), data...)
		out, cfg, err := frameToJPEG(frame, max(4*f.width*f.height, 1<<20))
		if err != nil {
			return captured{}, fmt.Errorf("frame is not a JPEG: %w", err)
		}
		return captured{jpeg: out, cfg: cfg}, nil
	default:
		img, err := yuyvToYCbCr(data, f.width, f.height, f.bytesPerLine)
		if err != nil {
			return captured{}, fmt.Errorf("frame is not usable: %w", err)
		}
		return captured{yuyv: img}, nil
	}
}

// stream is the MMAP buffers of one still and their streaming state.
type stream struct {
	dev       Device
	path      string
	allocated bool     // VIDIOC_REQBUFS gave buffers
	maps      [][]byte // by buffer index
	on        bool     // between STREAMON and STREAMOFF
}

// start allocates n buffers, maps and queues them and starts streaming.
// Whatever it did is undone by stop, also after an error.
func (s *stream) start(n uint32) error {
	rb := requestBuffers{Count: n, Type: bufTypeVideoCapture, Memory: memoryMMAP}
	if err := ioctl(s.dev, s.path, "VIDIOC_REQBUFS", vidiocReqbufs, unsafe.Pointer(&rb)); err != nil {
		return err
	}
	if rb.Count == 0 {
		return &ioctlError{op: "VIDIOC_REQBUFS", path: s.path, err: errors.New("the device gave no buffers")}
	}
	s.allocated = true
	for i := range rb.Count {
		b := buffer{Index: i, Type: bufTypeVideoCapture, Memory: memoryMMAP}
		if err := ioctl(s.dev, s.path, "VIDIOC_QUERYBUF", vidiocQuerybuf, unsafe.Pointer(&b)); err != nil {
			return err
		}
		m, err := s.dev.Mmap(int64(b.Offset), int(b.Length))
		if err != nil {
			return &ioctlError{op: "mmap", path: s.path, err: err}
		}
		s.maps = append(s.maps, m)
	}
	for i := range rb.Count {
		if err := s.queue(i); err != nil {
			return err
		}
	}
	typ := uint32(bufTypeVideoCapture)
	if err := ioctl(s.dev, s.path, "VIDIOC_STREAMON", vidiocStreamon, unsafe.Pointer(&typ)); err != nil {
		return err
	}
	s.on = true
	return nil
}

// queue hands buffer i to the device to fill.
func (s *stream) queue(i uint32) error {
	b := buffer{Index: i, Type: bufTypeVideoCapture, Memory: memoryMMAP}
	return ioctl(s.dev, s.path, "VIDIOC_QBUF", vidiocQbuf, unsafe.Pointer(&b))
}

// dequeue waits at most timeout for a filled buffer, checking ctx every
// waitSlice.
func (s *stream) dequeue(ctx context.Context, timeout time.Duration) (buffer, error) {
	deadline := time.Now().Add(timeout)
	for {
		b := buffer{Type: bufTypeVideoCapture, Memory: memoryMMAP}
		err := s.dev.Ioctl(vidiocDqbuf, unsafe.Pointer(&b))
		if err == nil {
			if int(b.Index) >= len(s.maps) {
				return buffer{}, &ioctlError{op: "VIDIOC_DQBUF", path: s.path, err: fmt.Errorf("buffer index %d out of range", b.Index)}
			}
			return b, nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return buffer{}, &ioctlError{op: "VIDIOC_DQBUF", path: s.path, err: err}
		}
		if ctx.Err() != nil {
			return buffer{}, fmt.Errorf("still: %w", context.Cause(ctx))
		}
		left := time.Until(deadline)
		if left <= 0 {
			return buffer{}, &timeoutError{d: timeout}
		}
		if err := s.dev.Wait(min(left, waitSlice)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return buffer{}, &ioctlError{op: "poll", path: s.path, err: err}
		}
	}
}

// stop ends streaming, unmaps the buffers and frees them, each step tried
// even when an earlier one failed.
func (s *stream) stop() error {
	var errs []error
	if s.on {
		typ := uint32(bufTypeVideoCapture)
		if err := ioctl(s.dev, s.path, "VIDIOC_STREAMOFF", vidiocStreamoff, unsafe.Pointer(&typ)); err != nil {
			errs = append(errs, err)
		}
		s.on = false
	}
	for _, m := range s.maps {
		if err := s.dev.Munmap(m); err != nil {
			errs = append(errs, &ioctlError{op: "munmap", path: s.path, err: err})
		}
	}
	s.maps = nil
	if s.allocated {
		rb := requestBuffers{Count: 0, Type: bufTypeVideoCapture, Memory: memoryMMAP}
		if err := ioctl(s.dev, s.path, "VIDIOC_REQBUFS", vidiocReqbufs, unsafe.Pointer(&rb)); err != nil {
			errs = append(errs, err)
		}
		s.allocated = false
	}
	return errors.Join(errs...)
}

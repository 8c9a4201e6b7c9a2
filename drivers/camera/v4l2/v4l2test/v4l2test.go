// Package v4l2test is a fake V4L2 (UVC) camera for tests of package v4l2
// without hardware. Its Device speaks the ioctl protocol byte for byte: it
// decodes each request from the raw memory the driver passes, at the
// offsets of <linux/videodev2.h> on 64-bit Linux (written out here, not
// taken from package v4l2, so that a wrong struct layout in the driver
// fails its tests), and writes the answer back as the kernel would. It
// enforces the protocol as uvcvideo and videobuf2 do (EINVAL for DQBUF
// before STREAMON, EBUSY for S_FMT while buffers exist, …), records every
// call, and keeps the protocol errors it returned as violations for the
// test to assert there are none.
//
// A Camera is the camera on the USB bus: its Open is the driver's
// Config.Open, each Open gives a new Device (an open file), Unplug makes
// every open Device fail with ENODEV and Open fail until Plug. Frames come
// from Queue, then from Config.Frames; while there is none (or Stall), Wait
// times out.
package v4l2test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/mailroomd/mailroomd/drivers/camera/v4l2"
)

// Pixel formats (fourcc codes).
const (
	MJPEG uint32 = 'M' | 'J'<<8 | 'P'<<16 | 'G'<<24
	YUYV  uint32 = 'Y' | 'U'<<8 | 'Y'<<16 | 'V'<<24
	H264  uint32 = 'H' | '2'<<8 | '6'<<16 | '4'<<24
)

// The ioctl request numbers of <linux/videodev2.h> on 64-bit Linux.
const (
	vidiocQuerycap  = 0x80685600
	vidiocEnumFmt   = 0xc0405602
	vidiocGFmt      = 0xc0d05604
	vidiocSFmt      = 0xc0d05605
	vidiocReqbufs   = 0xc0145608
	vidiocQuerybuf  = 0xc0585609
	vidiocQbuf      = 0xc058560f
	vidiocDqbuf     = 0xc0585611
	vidiocStreamon  = 0x40045612
	vidiocStreamoff = 0x40045613
	vidiocTryFmt    = 0xc0d05640
)

// Field offsets in the kernel's structs, and their sizes.
const (
	sizeCapability = 104 // struct v4l2_capability
	capDriver      = 0   // [16]u8
	capCard        = 16  // [32]u8
	capBusInfo     = 48  // [32]u8
	capVersion     = 80
	capCaps        = 84
	capDeviceCaps  = 88

	sizeFmtdesc = 64 // struct v4l2_fmtdesc
	fdIndex     = 0
	fdType      = 4
	fdFlags     = 8
	fdDesc      = 12 // [32]u8
	fdPixFmt    = 44
	fdMbusCode  = 48

	sizeFormat    = 208 // struct v4l2_format; fmt.pix at 8
	fmtType       = 0
	pixWidth      = 8
	pixHeight     = 12
	pixPixFmt     = 16
	pixField      = 20
	pixBPL        = 24
	pixSizeImage  = 28
	pixColorspace = 32

	sizeReqbufs = 20 // struct v4l2_requestbuffers
	rbCount     = 0
	rbType      = 4
	rbMemory    = 8
	rbCaps      = 12

	sizeBuffer   = 88 // struct v4l2_buffer
	bIndex       = 0
	bType        = 4
	bBytesUsed   = 8
	bFlags       = 12
	bField       = 16
	bTimestamp   = 24 // struct timeval: tv_sec 24, tv_usec 32
	bSequence    = 56
	bMemory      = 60
	bOffset      = 64 // m.offset
	bLength      = 72
	sizeStreamOn = 4 // int
)

// Constants of the protocol.
const (
	capVideoCapture   = 0x00000001
	capMetaCapture    = 0x00800000
	capStreaming      = 0x04000000
	capExtPixFormat   = 0x00200000
	capDeviceCapsFlag = 0x80000000

	bufTypeVideoCapture = 1
	memoryMMAP          = 1
	fieldNone           = 1
	colorspaceSRGB      = 8
	fmtFlagCompressed   = 1
	bufCapSupportsMMAP  = 1

	bufFlagMapped    = 0x00000001
	bufFlagQueued    = 0x00000002
	bufFlagDone      = 0x00000004
	bufFlagError     = 0x00000040
	bufFlagTimestamp = 0x00002000 // V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
	pageSize         = 4096
	maxBuffers       = 32
	minBuffers       = 2
)

// Size is a frame size a camera offers.
type Size struct{ Width, Height int }

// Format is the format set on a device, as VIDIOC_S_FMT answered it.
type Format struct {
	PixelFormat   uint32
	Width, Height int
	BytesPerLine  int
	SizeImage     int
}

// Config describes a fake camera.
type Config struct {
	// Card is the name VIDIOC_QUERYCAP gives (default "Fake UVC Camera
	// (1234:5678)"); Driver and BusInfo likewise ("uvcvideo",
	// "usb-0000:00:14.0-1").
	Card, Driver, BusInfo string
	// Formats are the pixel formats offered, in VIDIOC_ENUM_FMT order
	// (default MJPEG).
	Formats []uint32
	// Sizes are the frame sizes offered (default 640x480); VIDIOC_S_FMT
	// picks the one nearest the size asked for, as uvcvideo does.
	Sizes []Size
	// Padding is added to a YUYV line: bytesperline is 2*width+Padding.
	Padding int
	// Metadata makes the node a UVC metadata node: its device_caps have
	// META_CAPTURE and no VIDEO_CAPTURE (the device's capabilities have
	// both) and it offers no capture format.
	Metadata bool
	// NoDeviceCaps answers VIDIOC_QUERYCAP as drivers before Linux 3.3
	// did: no V4L2_CAP_DEVICE_CAPS, capabilities only.
	NoDeviceCaps bool
	// Frames, if set, gives the frame with sequence number seq (0 for the
	// first after STREAMON) when Queue is empty; nil means no frame.
	Frames func(seq int, f Format) []byte
}

// Camera is a fake camera on the bus.
type Camera struct {
	mu         sync.Mutex
	cfg        Config
	unplugged  bool
	stalled    bool
	queue      []queuedFrame
	delivered  int
	devs       []*Device
	calls      []string
	violations []string
	changed    chan struct{} // closed and replaced on every change Wait waits for
}

// New returns a plugged-in fake camera.
func New(cfg Config) *Camera {
	if cfg.Card == "" {
		cfg.Card = "Fake UVC Camera (1234:5678)"
	}
	if cfg.Driver == "" {
		cfg.Driver = "uvcvideo"
	}
	if cfg.BusInfo == "" {
		cfg.BusInfo = "usb-0000:00:14.0-1"
	}
	if len(cfg.Formats) == 0 {
		cfg.Formats = []uint32{MJPEG}
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []Size{{640, 480}}
	}
	return &Camera{cfg: cfg, changed: make(chan struct{})}
}

// Open opens the camera's device node, like open(2); it fails with ENOENT
// while the camera is unplugged. It is the driver's Config.Open.
func (c *Camera) Open(path string) (v4l2.Device, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unplugged {
		c.calls = append(c.calls, "open: ENOENT")
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	d := &Device{cam: c, path: path}
	d.format = c.tryFormat(Format{PixelFormat: c.cfg.Formats[0], Width: c.cfg.Sizes[0].Width, Height: c.cfg.Sizes[0].Height})
	c.devs = append(c.devs, d)
	d.record("open", "", nil)
	return d, nil
}

// Unplug pulls the camera out: every call on an open device fails with
// ENODEV from now on (munmap and close excepted), and Open fails.
func (c *Camera) Unplug() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unplugged = true
	for _, d := range c.devs {
		d.unplugged = true
	}
	c.changedLocked()
}

// Plug plugs the camera back in: Open works again (devices opened before
// the unplug stay dead).
func (c *Camera) Plug() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unplugged = false
	c.changedLocked()
}

// queuedFrame is a frame waiting in the queue.
type queuedFrame struct {
	data    []byte
	damaged bool
}

// Queue adds frames to deliver, before any from Config.Frames.
func (c *Camera) Queue(frames ...[]byte) { c.enqueue(false, frames) }

// QueueDamaged adds frames to deliver with V4L2_BUF_FLAG_ERROR set, as
// uvcvideo marks a frame that lost packets on the bus.
func (c *Camera) QueueDamaged(frames ...[]byte) { c.enqueue(true, frames) }

func (c *Camera) enqueue(damaged bool, frames [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range frames {
		c.queue = append(c.queue, queuedFrame{data: f, damaged: damaged})
	}
	c.changedLocked()
}

// Stall stops (true) or resumes (false) the frames: while stalled, no
// buffer is filled and Wait times out.
func (c *Camera) Stall(stalled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stalled = stalled
	c.changedLocked()
}

// Delivered is how many frames were written into buffers.
func (c *Camera) Delivered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered
}

// Opens is how many times Open succeeded.
func (c *Camera) Opens() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.devs)
}

// Devices returns every device opened, oldest first.
func (c *Camera) Devices() []*Device {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.devs)
}

// Last returns the device opened last, or nil.
func (c *Camera) Last() *Device {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.devs) == 0 {
		return nil
	}
	return c.devs[len(c.devs)-1]
}

// Calls returns every call on every device in order: "open", "QUERYCAP",
// "ENUM_FMT 0", "S_FMT MJPG 640x480", "REQBUFS 4", "QUERYBUF 0", "mmap 0",
// "QBUF 0", "STREAMON", "DQBUF 0", "STREAMOFF", "munmap 0", "REQBUFS 0",
// "close"; a failed call ends in its errno (": EAGAIN"). Waits are not
// recorded.
func (c *Camera) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// Violations returns the protocol errors the devices returned (EINVAL,
// EBUSY, EBADF, ENOTTY, EFAULT), each with the rule broken; a correct
// driver causes none. EAGAIN and ENODEV are not violations.
func (c *Camera) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

func (c *Camera) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// tryFormat picks the offered format and size nearest f, as uvcvideo's
// uvc_v4l2_try_format does: an unknown pixel format becomes the first
// offered, the size the one with the least area difference.
func (c *Camera) tryFormat(f Format) Format {
	if !slices.Contains(c.cfg.Formats, f.PixelFormat) {
		f.PixelFormat = c.cfg.Formats[0]
	}
	best, bestD := c.cfg.Sizes[0], -1
	for _, s := range c.cfg.Sizes {
		w, h := min(f.Width, s.Width), min(f.Height, s.Height)
		d := f.Width*f.Height + s.Width*s.Height - 2*w*h
		if d < 0 {
			d = -d
		}
		if bestD < 0 || d < bestD {
			best, bestD = s, d
		}
	}
	f.Width, f.Height = best.Width, best.Height
	switch f.PixelFormat {
	case YUYV:
		f.BytesPerLine = 2*f.Width + c.cfg.Padding
		f.SizeImage = f.BytesPerLine * f.Height
	default:
		f.BytesPerLine = 0
		f.SizeImage = f.Width*f.Height + 64<<10 // a compressed frame's ceiling
	}
	return f
}

// nextFrame takes the next frame to deliver, if any.
func (c *Camera) nextFrame(seq int, f Format) (queuedFrame, bool) {
	if c.stalled {
		return queuedFrame{}, false
	}
	if len(c.queue) > 0 {
		fr := c.queue[0]
		c.queue = c.queue[1:]
		return fr, true
	}
	if c.cfg.Frames != nil {
		if fr := c.cfg.Frames(seq, f); fr != nil {
			return queuedFrame{data: fr}, true
		}
	}
	return queuedFrame{}, false
}

// Buffer states.
const (
	dequeued = iota // owned by the application
	queued          // waiting for a frame
	done            // filled, waiting for DQBUF
)

type fakeBuffer struct {
	mem       []byte // page-rounded; the buffer is mem[:length]
	length    int
	offset    uint32
	state     int
	bytesUsed int
	flags     uint32
	sequence  int
	at        time.Time
}

type mapping struct {
	b     []byte
	index int
}

// Device is one open file of a fake camera; it implements v4l2.Device.
type Device struct {
	cam  *Camera
	path string

	// All below is guarded by cam.mu.
	closed, unplugged bool
	format            Format
	bufs              []*fakeBuffer
	queued, done      []int // buffer indexes in order
	streaming         bool
	sequence          int
	maps              []mapping
	streamOns         int
	streamingAtClose  bool
	calls             []string
}

var _ v4l2.Device = (*Device)(nil)

// record adds a call to the logs; a protocol error becomes a violation.
// Called with cam.mu held.
func (d *Device) record(name, detail string, err error) {
	s := name
	if detail != "" {
		s += " " + detail
	}
	if err != nil {
		var v *violation
		if errors.As(err, &v) {
			s += ": " + errnoName(v.errno)
			d.cam.violations = append(d.cam.violations, fmt.Sprintf("%s: %s: %s", name, errnoName(v.errno), v.why))
		} else if errno, ok := err.(syscall.Errno); ok {
			s += ": " + errnoName(errno)
		} else {
			s += ": " + err.Error()
		}
	}
	d.calls = append(d.calls, s)
	d.cam.calls = append(d.cam.calls, s)
}

// violation is a protocol error: the errno the kernel would return and
// the rule broken.
type violation struct {
	errno syscall.Errno
	why   string
}

func (v *violation) Error() string { return v.errno.Error() }
func (v *violation) Unwrap() error { return v.errno }

func fail(errno syscall.Errno, format string, args ...any) error {
	return &violation{errno: errno, why: fmt.Sprintf(format, args...)}
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EAGAIN:
		return "EAGAIN"
	case syscall.ENODEV:
		return "ENODEV"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.EBUSY:
		return "EBUSY"
	case syscall.EBADF:
		return "EBADF"
	case syscall.ENOTTY:
		return "ENOTTY"
	case syscall.EFAULT:
		return "EFAULT"
	case syscall.EIO:
		return "EIO"
	}
	return fmt.Sprintf("errno %d", int(e))
}

// ioctlName is the request's name without "VIDIOC_".
func ioctlName(req uint) string {
	switch req {
	case vidiocQuerycap:
		return "QUERYCAP"
	case vidiocEnumFmt:
		return "ENUM_FMT"
	case vidiocGFmt:
		return "G_FMT"
	case vidiocSFmt:
		return "S_FMT"
	case vidiocTryFmt:
		return "TRY_FMT"
	case vidiocReqbufs:
		return "REQBUFS"
	case vidiocQuerybuf:
		return "QUERYBUF"
	case vidiocQbuf:
		return "QBUF"
	case vidiocDqbuf:
		return "DQBUF"
	case vidiocStreamon:
		return "STREAMON"
	case vidiocStreamoff:
		return "STREAMOFF"
	}
	return fmt.Sprintf("ioctl %#x", req)
}

func u32(b []byte, off int) uint32      { return binary.LittleEndian.Uint32(b[off:]) }
func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func putStr(b []byte, off, n int, s string) {
	clear(b[off : off+n])
	copy(b[off:off+n-1], s) // NUL-terminated
}

// Ioctl decodes the request from the memory at arg, answers it as
// uvcvideo would, and writes the answer back.
func (d *Device) Ioctl(req uint, arg unsafe.Pointer) error {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	name := ioctlName(req)
	detail, err := d.ioctl(req, arg)
	d.record(name, detail, err)
	return err
}

func (d *Device) ioctl(req uint, arg unsafe.Pointer) (string, error) {
	if d.closed {
		return "", fail(syscall.EBADF, "ioctl on a closed device")
	}
	if d.unplugged {
		return "", syscall.ENODEV
	}
	if ioctlName(req)[0] == 'i' {
		return "", fail(syscall.ENOTTY, "unknown ioctl %#x", req)
	}
	if arg == nil {
		return "", fail(syscall.EFAULT, "nil argument")
	}
	// The kernel copies the argument in and out: its size is in the
	// request number (bits 16-29).
	mem := unsafe.Slice((*byte)(arg), int(req>>16)&0x3fff)
	switch req {
	case vidiocQuerycap:
		return "", d.querycap(mem)
	case vidiocEnumFmt:
		return d.enumFmt(mem)
	case vidiocGFmt:
		if u32(mem, fmtType) != bufTypeVideoCapture || d.cam.cfg.Metadata {
			return "", fail(syscall.EINVAL, "G_FMT type %d", u32(mem, fmtType))
		}
		d.putFormat(mem, d.format)
		return "", nil
	case vidiocSFmt, vidiocTryFmt:
		return d.setFormat(mem, req == vidiocSFmt)
	case vidiocReqbufs:
		return d.reqbufs(mem)
	case vidiocQuerybuf:
		return d.querybuf(mem)
	case vidiocQbuf:
		return d.qbuf(mem)
	case vidiocDqbuf:
		return d.dqbuf(mem)
	case vidiocStreamon, vidiocStreamoff:
		return "", d.stream(mem, req == vidiocStreamon)
	}
	return "", fail(syscall.ENOTTY, "unknown ioctl %#x", req)
}

func (d *Device) querycap(mem []byte) error {
	clear(mem)
	cfg := d.cam.cfg
	putStr(mem, capDriver, 16, cfg.Driver)
	putStr(mem, capCard, 32, cfg.Card)
	putStr(mem, capBusInfo, 32, cfg.BusInfo)
	put32(mem, capVersion, 6<<16|8<<8) // 6.8.0
	devCaps := uint32(capVideoCapture | capStreaming | capExtPixFormat)
	if cfg.Metadata {
		devCaps = capMetaCapture | capStreaming | capExtPixFormat
	}
	if cfg.NoDeviceCaps {
		put32(mem, capCaps, devCaps)
		return nil
	}
	// The whole device: video capture and metadata capture nodes.
	put32(mem, capCaps, capVideoCapture|capMetaCapture|capStreaming|capExtPixFormat|capDeviceCapsFlag)
	put32(mem, capDeviceCaps, devCaps)
	return nil
}

func (d *Device) enumFmt(mem []byte) (string, error) {
	i, typ := u32(mem, fdIndex), u32(mem, fdType)
	detail := fmt.Sprint(i)
	if typ != bufTypeVideoCapture || d.cam.cfg.Metadata {
		return detail, fail(syscall.EINVAL, "ENUM_FMT type %d on a node without that buffer type", typ)
	}
	if int(i) >= len(d.cam.cfg.Formats) {
		return detail, syscall.EINVAL // the end of the list: not a violation
	}
	pf := d.cam.cfg.Formats[i]
	clear(mem[fdFlags:])
	desc := fourccString(pf)
	switch pf {
	case MJPEG:
		put32(mem, fdFlags, fmtFlagCompressed)
		desc = "Motion-JPEG"
	case YUYV:
		desc = "YUYV 4:2:2"
	case H264:
		put32(mem, fdFlags, fmtFlagCompressed)
		desc = "H.264"
	}
	putStr(mem, fdDesc, 32, desc)
	put32(mem, fdPixFmt, pf)
	return detail, nil
}

func (d *Device) putFormat(mem []byte, f Format) {
	clear(mem[8:])
	put32(mem, pixWidth, uint32(f.Width))
	put32(mem, pixHeight, uint32(f.Height))
	put32(mem, pixPixFmt, f.PixelFormat)
	put32(mem, pixField, fieldNone)
	put32(mem, pixBPL, uint32(f.BytesPerLine))
	put32(mem, pixSizeImage, uint32(f.SizeImage))
	put32(mem, pixColorspace, colorspaceSRGB)
}

func (d *Device) setFormat(mem []byte, set bool) (string, error) {
	if u32(mem, fmtType) != bufTypeVideoCapture || d.cam.cfg.Metadata {
		return "", fail(syscall.EINVAL, "S_FMT type %d", u32(mem, fmtType))
	}
	ask := Format{PixelFormat: u32(mem, pixPixFmt), Width: int(u32(mem, pixWidth)), Height: int(u32(mem, pixHeight))}
	detail := fmt.Sprintf("%s %dx%d", fourccString(ask.PixelFormat), ask.Width, ask.Height)
	if set && len(d.bufs) > 0 {
		return detail, fail(syscall.EBUSY, "S_FMT while %d buffers are allocated", len(d.bufs))
	}
	f := d.cam.tryFormat(ask)
	d.putFormat(mem, f)
	if set {
		d.format = f
	}
	return detail, nil
}

func (d *Device) checkType(mem []byte, off int, what string) error {
	if t := u32(mem, off); t != bufTypeVideoCapture || d.cam.cfg.Metadata {
		return fail(syscall.EINVAL, "%s with buffer type %d", what, t)
	}
	return nil
}

func (d *Device) reqbufs(mem []byte) (string, error) {
	count := u32(mem, rbCount)
	detail := fmt.Sprint(count)
	if err := d.checkType(mem, rbType, "REQBUFS"); err != nil {
		return detail, err
	}
	if m := u32(mem, rbMemory); m != memoryMMAP {
		return detail, fail(syscall.EINVAL, "REQBUFS with memory type %d (the fake has MMAP only)", m)
	}
	if d.streaming {
		return detail, fail(syscall.EBUSY, "REQBUFS while streaming")
	}
	if len(d.maps) > 0 {
		return detail, fail(syscall.EBUSY, "REQBUFS while %d buffers are mapped", len(d.maps))
	}
	d.bufs, d.queued, d.done = nil, nil, nil
	if count > 0 {
		count = max(min(count, maxBuffers), minBuffers)
		length := d.format.SizeImage
		rounded := (length + pageSize - 1) / pageSize * pageSize
		for i := range int(count) {
			d.bufs = append(d.bufs, &fakeBuffer{mem: make([]byte, rounded), length: length, offset: uint32(i * rounded)})
		}
	}
	put32(mem, rbCount, count)
	put32(mem, rbCaps, bufCapSupportsMMAP)
	mem[16] = 0 // flags
	return detail, nil
}

// buffer finds the buffer a v4l2_buffer names.
func (d *Device) buffer(mem []byte, what string) (int, error) {
	if err := d.checkType(mem, bType, what); err != nil {
		return 0, err
	}
	i := int(u32(mem, bIndex))
	if i >= len(d.bufs) {
		return i, fail(syscall.EINVAL, "%s of buffer %d, %d allocated", what, i, len(d.bufs))
	}
	return i, nil
}

// putBuffer writes buffer i's state into a v4l2_buffer.
func (d *Device) putBuffer(mem []byte, i int) {
	b := d.bufs[i]
	clear(mem)
	put32(mem, bIndex, uint32(i))
	put32(mem, bType, bufTypeVideoCapture)
	put32(mem, bBytesUsed, uint32(b.bytesUsed))
	flags := b.flags | bufFlagTimestamp
	switch b.state {
	case queued:
		flags |= bufFlagQueued
	case done:
		flags |= bufFlagDone
	}
	for _, m := range d.maps {
		if m.index == i {
			flags |= bufFlagMapped
			break
		}
	}
	put32(mem, bFlags, flags)
	put32(mem, bField, fieldNone)
	if !b.at.IsZero() {
		binary.LittleEndian.PutUint64(mem[bTimestamp:], uint64(b.at.Unix()))
		binary.LittleEndian.PutUint64(mem[bTimestamp+8:], uint64(b.at.Nanosecond()/1000))
	}
	put32(mem, bSequence, uint32(b.sequence))
	put32(mem, bMemory, memoryMMAP)
	put32(mem, bOffset, b.offset)
	put32(mem, bLength, uint32(b.length))
}

func (d *Device) querybuf(mem []byte) (string, error) {
	i, err := d.buffer(mem, "QUERYBUF")
	if err != nil {
		return fmt.Sprint(i), err
	}
	d.putBuffer(mem, i)
	return fmt.Sprint(i), nil
}

func (d *Device) qbuf(mem []byte) (string, error) {
	i, err := d.buffer(mem, "QBUF")
	detail := fmt.Sprint(i)
	if err != nil {
		return detail, err
	}
	if m := u32(mem, bMemory); m != memoryMMAP {
		return detail, fail(syscall.EINVAL, "QBUF of buffer %d with memory type %d", i, m)
	}
	b := d.bufs[i]
	if b.state != dequeued {
		return detail, fail(syscall.EINVAL, "QBUF of buffer %d, which is already queued", i)
	}
	b.state, b.bytesUsed, b.flags = queued, 0, 0
	d.queued = append(d.queued, i)
	d.putBuffer(mem, i)
	d.cam.changedLocked()
	return detail, nil
}

func (d *Device) dqbuf(mem []byte) (string, error) {
	if err := d.checkType(mem, bType, "DQBUF"); err != nil {
		return "", err
	}
	if !d.streaming {
		return "", fail(syscall.EINVAL, "DQBUF while not streaming")
	}
	d.produce()
	if len(d.done) == 0 {
		return "", syscall.EAGAIN // O_NONBLOCK and nothing filled
	}
	i := d.done[0]
	d.done = d.done[1:]
	d.putBuffer(mem, i) // flags DONE, as vb2 fills it in before dequeuing
	d.bufs[i].state = dequeued
	return fmt.Sprint(i), nil
}

func (d *Device) stream(mem []byte, on bool) error {
	what := "STREAMOFF"
	if on {
		what = "STREAMON"
	}
	if err := d.checkType(mem, 0, what); err != nil {
		return err
	}
	if !on {
		// All buffers go back to the application, filled or not.
		for _, b := range d.bufs {
			b.state = dequeued
		}
		d.queued, d.done, d.streaming = nil, nil, false
		return nil
	}
	if len(d.bufs) == 0 {
		return fail(syscall.EINVAL, "STREAMON without buffers")
	}
	if !d.streaming {
		d.streaming, d.sequence = true, 0
		d.streamOns++
		d.cam.changedLocked()
	}
	return nil
}

// produce fills the first queued buffer with the next frame, when no
// filled buffer is waiting. Called with cam.mu held, while streaming.
func (d *Device) produce() {
	if len(d.done) > 0 || len(d.queued) == 0 {
		return
	}
	frame, ok := d.cam.nextFrame(d.sequence, d.format)
	if !ok {
		return
	}
	i := d.queued[0]
	d.queued = d.queued[1:]
	b := d.bufs[i]
	n := copy(b.mem[:b.length], frame.data)
	b.bytesUsed, b.flags = n, 0
	if n < len(frame.data) || frame.damaged {
		b.flags = bufFlagError // damaged, or did not fit: uvcvideo marks it so
	}
	b.state, b.sequence, b.at = done, d.sequence, time.Now()
	d.sequence++
	d.done = append(d.done, i)
	d.cam.delivered++
}

// Mmap maps a buffer: offset must be one VIDIOC_QUERYBUF gave, and length
// at most the buffer's (page-rounded) length. The slice is the buffer's
// memory: frames are written into it.
func (d *Device) Mmap(offset int64, length int) ([]byte, error) {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	i, b, err := d.mmap(offset, length)
	d.record("mmap", fmt.Sprint(i), err)
	return b, err
}

func (d *Device) mmap(offset int64, length int) (int, []byte, error) {
	if d.closed {
		return -1, nil, fail(syscall.EBADF, "mmap on a closed device")
	}
	if d.unplugged {
		return -1, nil, syscall.ENODEV
	}
	for i, b := range d.bufs {
		if int64(b.offset) != offset {
			continue
		}
		if length <= 0 || length > len(b.mem) {
			return i, nil, fail(syscall.EINVAL, "mmap of %d bytes of buffer %d (%d bytes)", length, i, b.length)
		}
		m := b.mem[:length:length]
		d.maps = append(d.maps, mapping{b: m, index: i})
		return i, m, nil
	}
	return -1, nil, fail(syscall.EINVAL, "mmap at offset %#x, which is no buffer's", offset)
}

// Munmap unmaps a slice Mmap returned; it works on a closed or unplugged
// device too, as munmap(2) does.
func (d *Device) Munmap(b []byte) error {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	for j, m := range d.maps {
		if len(b) > 0 && len(b) == len(m.b) && &b[0] == &m.b[0] {
			d.maps = slices.Delete(d.maps, j, j+1)
			d.record("munmap", fmt.Sprint(m.index), nil)
			return nil
		}
	}
	err := fail(syscall.EINVAL, "munmap of memory that is not mapped")
	d.record("munmap", "", err)
	return err
}

// Wait waits at most timeout for a filled buffer, as poll(2) does: it
// returns at once when a frame can be dequeued, an error wrapping
// os.ErrDeadlineExceeded on timeout, ENODEV once unplugged.
func (d *Device) Wait(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		d.cam.mu.Lock()
		switch {
		case d.closed:
			err := fail(syscall.EBADF, "poll on a closed device")
			d.record("poll", "", err)
			d.cam.mu.Unlock()
			return err
		case d.unplugged:
			d.cam.mu.Unlock()
			return fmt.Errorf("hang-up: %w", syscall.ENODEV)
		case !d.streaming:
			// vb2 answers POLLERR when the queue is not streaming.
			err := fail(syscall.EIO, "poll while not streaming (POLLERR)")
			d.record("poll", "", err)
			d.cam.mu.Unlock()
			return fmt.Errorf("error condition: %w", err)
		}
		d.produce()
		if len(d.done) > 0 {
			d.cam.mu.Unlock()
			return nil
		}
		changed := d.cam.changed
		d.cam.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("no frame yet: %w", os.ErrDeadlineExceeded)
		}
	}
}

// Close closes the device; like the kernel it stops a stream still on
// and frees the buffers (StreamingAtClose tells a test it had to), but
// mappings stay until unmapped.
func (d *Device) Close() error {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	if d.closed {
		err := fail(syscall.EBADF, "close of a closed device")
		d.record("close", "", err)
		return err
	}
	d.closed = true
	d.streamingAtClose = d.streaming
	d.streaming = false
	d.queued, d.done = nil, nil
	d.record("close", "", nil)
	d.cam.changedLocked()
	return nil
}

// Calls returns this device's calls, as Camera.Calls.
func (d *Device) Calls() []string {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return slices.Clone(d.calls)
}

// Closed reports whether the device was closed.
func (d *Device) Closed() bool {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.closed
}

// Streaming reports whether the device is streaming (after STREAMON,
// before STREAMOFF or close).
func (d *Device) Streaming() bool {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.streaming
}

// Unplugged reports whether the camera was unplugged while the device was
// open.
func (d *Device) Unplugged() bool {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.unplugged
}

// StreamingAtClose reports whether the device was closed while streaming.
func (d *Device) StreamingAtClose() bool {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.streamingAtClose
}

// StreamOns is how many times streaming started.
func (d *Device) StreamOns() int {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.streamOns
}

// Buffers is how many buffers are allocated (VIDIOC_REQBUFS); a closed
// device has none.
func (d *Device) Buffers() int {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	if d.closed {
		return 0
	}
	return len(d.bufs)
}

// Mapped is how many mappings are not unmapped yet.
func (d *Device) Mapped() int {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return len(d.maps)
}

// Format is the format set on the device.
func (d *Device) Format() Format {
	d.cam.mu.Lock()
	defer d.cam.mu.Unlock()
	return d.format
}

func fourccString(f uint32) string {
	return string([]byte{byte(f), byte(f >> 8), byte(f >> 16), byte(f >> 24)})
}

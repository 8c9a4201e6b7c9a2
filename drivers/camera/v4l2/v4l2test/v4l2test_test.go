package v4l2test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The fake is exercised here as the kernel would be, with raw structs of
// the kernel's sizes, so that its enforcement of the protocol is tested
// independently of the driver.

func open(t *testing.T, c *Camera) *Device {
	t.Helper()
	d, err := c.Open("/dev/video0")
	if err != nil {
		t.Fatal(err)
	}
	return d.(*Device)
}

func call(d *Device, req uint, b []byte) error { return d.Ioctl(req, unsafe.Pointer(&b[0])) }

func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

func set32(b []byte, off int, v uint32) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }

func reqbufs(n uint32) []byte {
	b := make([]byte, sizeReqbufs)
	set32(b, rbCount, n)
	set32(b, rbType, bufTypeVideoCapture)
	return set32(b, rbMemory, memoryMMAP)
}

func buf(i uint32) []byte {
	b := make([]byte, sizeBuffer)
	set32(b, bIndex, i)
	set32(b, bType, bufTypeVideoCapture)
	return set32(b, bMemory, memoryMMAP)
}

func typ() []byte { return set32(make([]byte, sizeStreamOn), 0, bufTypeVideoCapture) }

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %s", what, err, errnoName(want))
	}
}

// stream allocates n buffers, maps and queues them and starts streaming.
func stream(t *testing.T, d *Device, n uint32) [][]byte {
	t.Helper()
	if err := call(d, vidiocReqbufs, reqbufs(n)); err != nil {
		t.Fatal(err)
	}
	var maps [][]byte
	for i := range n {
		b := buf(i)
		if err := call(d, vidiocQuerybuf, b); err != nil {
			t.Fatal(err)
		}
		m, err := d.Mmap(int64(le32(b, bOffset)), int(le32(b, bLength)))
		if err != nil {
			t.Fatal(err)
		}
		maps = append(maps, m)
		if err := call(d, vidiocQbuf, buf(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := call(d, vidiocStreamon, typ()); err != nil {
		t.Fatal(err)
	}
	return maps
}

func TestQuerycap(t *testing.T) {
	for _, c := range []struct {
		name           string
		cfg            Config
		caps, devCaps  uint32
		enumFmtErrno   syscall.Errno
		enumViolations int
	}{
		{"capture node", Config{Card: "Cam"}, capVideoCapture | capMetaCapture | capStreaming | capExtPixFormat | capDeviceCapsFlag, capVideoCapture | capStreaming | capExtPixFormat, 0, 0},
		{"metadata node", Config{Card: "Cam", Metadata: true}, capVideoCapture | capMetaCapture | capStreaming | capExtPixFormat | capDeviceCapsFlag, capMetaCapture | capStreaming | capExtPixFormat, syscall.EINVAL, 1},
		{"old driver", Config{Card: "Cam", NoDeviceCaps: true}, capVideoCapture | capStreaming | capExtPixFormat, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cam := New(c.cfg)
			d := open(t, cam)
			b := bytes.Repeat([]byte{0xaa}, sizeCapability)
			if err := call(d, vidiocQuerycap, b); err != nil {
				t.Fatal(err)
			}
			if got := string(b[capCard : capCard+4]); got != "Cam\x00" {
				t.Errorf("card %q", got)
			}
			if got := string(b[capDriver : capDriver+9]); got != "uvcvideo\x00" {
				t.Errorf("driver %q", got)
			}
			if le32(b, capCaps) != c.caps || le32(b, capDeviceCaps) != c.devCaps {
				t.Errorf("caps %#x device_caps %#x, want %#x %#x", le32(b, capCaps), le32(b, capDeviceCaps), c.caps, c.devCaps)
			}
			if b[sizeCapability-1] != 0 {
				t.Error("reserved not zeroed")
			}
			fd := set32(make([]byte, sizeFmtdesc), fdType, bufTypeVideoCapture)
			err := call(d, vidiocEnumFmt, fd)
			if c.enumFmtErrno != 0 {
				wantErrno(t, "ENUM_FMT", err, c.enumFmtErrno)
			} else if err != nil || le32(fd, fdPixFmt) != MJPEG || le32(fd, fdFlags) != fmtFlagCompressed || !strings.HasPrefix(string(fd[fdDesc:]), "Motion-JPEG\x00") {
				t.Errorf("ENUM_FMT 0: %v, % x", err, fd)
			}
			if n := len(cam.Violations()); n != c.enumViolations {
				t.Errorf("violations %q", cam.Violations())
			}
		})
	}
}

func TestEnumAndSetFormat(t *testing.T) {
	cam := New(Config{Formats: []uint32{YUYV, MJPEG}, Sizes: []Size{{640, 480}, {1280, 720}}, Padding: 32})
	d := open(t, cam)
	var got []uint32
	for i := uint32(0); ; i++ {
		fd := set32(set32(make([]byte, sizeFmtdesc), fdType, bufTypeVideoCapture), fdIndex, i)
		if err := call(d, vidiocEnumFmt, fd); err != nil {
			wantErrno(t, "ENUM_FMT past the end", err, syscall.EINVAL)
			break
		}
		got = append(got, le32(fd, fdPixFmt))
	}
	if len(got) != 2 || got[0] != YUYV || got[1] != MJPEG {
		t.Errorf("formats %x", got)
	}
	f := make([]byte, sizeFormat)
	set32(f, fmtType, bufTypeVideoCapture)
	set32(f, pixWidth, 1200)
	set32(f, pixHeight, 700)
	set32(f, pixPixFmt, YUYV)
	if err := call(d, vidiocSFmt, f); err != nil {
		t.Fatal(err)
	}
	if le32(f, pixWidth) != 1280 || le32(f, pixHeight) != 720 || le32(f, pixBPL) != 2*1280+32 || le32(f, pixSizeImage) != (2*1280+32)*720 || le32(f, pixField) != fieldNone {
		t.Errorf("S_FMT answered % x", f[:40])
	}
	if d.Format().Width != 1280 {
		t.Errorf("format %+v", d.Format())
	}
	if v := cam.Violations(); len(v) > 0 {
		t.Errorf("violations %q", v)
	}
}

// TestProtocolEnforced: each wrong step gets the kernel's errno and is
// recorded as a violation.
func TestProtocolEnforced(t *testing.T) {
	cases := []struct {
		name  string
		do    func(t *testing.T, d *Device) error
		errno syscall.Errno
	}{
		{"DQBUF before STREAMON", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			return call(d, vidiocDqbuf, buf(0))
		}, syscall.EINVAL},
		{"S_FMT with buffers", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			return call(d, vidiocSFmt, set32(make([]byte, sizeFormat), fmtType, bufTypeVideoCapture))
		}, syscall.EBUSY},
		{"REQBUFS while streaming", func(t *testing.T, d *Device) error {
			stream(t, d, 2)
			return call(d, vidiocReqbufs, reqbufs(0))
		}, syscall.EBUSY},
		{"REQBUFS 0 while mapped", func(t *testing.T, d *Device) error {
			stream(t, d, 2)
			if err := call(d, vidiocStreamoff, typ()); err != nil {
				t.Fatal(err)
			}
			return call(d, vidiocReqbufs, reqbufs(0))
		}, syscall.EBUSY},
		{"REQBUFS USERPTR", func(t *testing.T, d *Device) error {
			return call(d, vidiocReqbufs, set32(reqbufs(2), rbMemory, 2))
		}, syscall.EINVAL},
		{"QBUF twice", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			if err := call(d, vidiocQbuf, buf(1)); err != nil {
				t.Fatal(err)
			}
			return call(d, vidiocQbuf, buf(1))
		}, syscall.EINVAL},
		{"QBUF out of range", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			return call(d, vidiocQbuf, buf(2))
		}, syscall.EINVAL},
		{"STREAMON without buffers", func(t *testing.T, d *Device) error { return call(d, vidiocStreamon, typ()) }, syscall.EINVAL},
		{"STREAMON of another type", func(t *testing.T, d *Device) error {
			return call(d, vidiocStreamon, set32(typ(), 0, 2))
		}, syscall.EINVAL},
		{"mmap at no buffer's offset", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			_, err := d.Mmap(12, 4096)
			return err
		}, syscall.EINVAL},
		{"mmap too long", func(t *testing.T, d *Device) error {
			if err := call(d, vidiocReqbufs, reqbufs(2)); err != nil {
				t.Fatal(err)
			}
			_, err := d.Mmap(0, 1<<30)
			return err
		}, syscall.EINVAL},
		{"munmap of foreign memory", func(t *testing.T, d *Device) error { return d.Munmap(make([]byte, 10)) }, syscall.EINVAL},
		{"poll while not streaming", func(t *testing.T, d *Device) error { return d.Wait(time.Second) }, syscall.EIO},
		{"ioctl after close", func(t *testing.T, d *Device) error {
			d.Close()
			return call(d, vidiocQuerycap, make([]byte, sizeCapability))
		}, syscall.EBADF},
		{"close twice", func(t *testing.T, d *Device) error { d.Close(); return d.Close() }, syscall.EBADF},
		{"unknown ioctl", func(t *testing.T, d *Device) error { return call(d, 0xc0cc5699, make([]byte, 1)) }, syscall.ENOTTY},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cam := New(Config{})
			d := open(t, cam)
			wantErrno(t, c.name, c.do(t, d), c.errno)
			if v := cam.Violations(); len(v) != 1 {
				t.Errorf("violations %q, want 1", v)
			}
		})
	}
}

// TestFrames: frames are written into the mapped memory; bytesused,
// sequence and flags tell which; Wait times out while there is none.
func TestFrames(t *testing.T) {
	cam := New(Config{Sizes: []Size{{16, 16}}, Frames: func(seq int, f Format) []byte {
		if seq >= 5 {
			return nil
		}
		return []byte{byte(seq), 1, 2}
	}})
	cam.Queue([]byte("queued"))
	cam.QueueDamaged([]byte("damaged"))
	cam.Queue(make([]byte, 16*16+64<<10+1)) // larger than sizeimage
	d := open(t, cam)
	maps := stream(t, d, 3)
	want := []struct {
		data  string
		n     int
		flags uint32
	}{{"queued", 6, 0}, {"damaged", 7, bufFlagError}, {"", 16*16 + 64<<10, bufFlagError}, {"\x03\x01\x02", 3, 0}, {"\x04\x01\x02", 3, 0}}
	for seq, w := range want {
		if err := d.Wait(time.Second); err != nil {
			t.Fatalf("frame %d: Wait: %v", seq, err)
		}
		b := buf(0)
		if err := call(d, vidiocDqbuf, b); err != nil {
			t.Fatalf("frame %d: DQBUF: %v", seq, err)
		}
		i, n := le32(b, bIndex), int(le32(b, bBytesUsed))
		if n != w.n || le32(b, bSequence) != uint32(seq) || le32(b, bFlags)&bufFlagError != w.flags || le32(b, bFlags)&bufFlagDone == 0 {
			t.Errorf("frame %d: % x", seq, b)
		}
		if w.data != "" && string(maps[i][:n]) != w.data {
			t.Errorf("frame %d: %q in buffer %d, want %q", seq, maps[i][:n], i, w.data)
		}
		if err := call(d, vidiocQbuf, buf(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Frames(5) is nil: nothing more.
	t0 := time.Now()
	err := d.Wait(30 * time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(t0) < 30*time.Millisecond {
		t.Errorf("Wait with no frame: %v after %s", err, time.Since(t0))
	}
	wantErrno(t, "DQBUF with no frame", call(d, vidiocDqbuf, buf(0)), syscall.EAGAIN)
	if v := cam.Violations(); len(v) > 0 {
		t.Errorf("violations %q", v)
	}
	if cam.Delivered() != 5 {
		t.Errorf("delivered %d", cam.Delivered())
	}
}

// TestUnplug: every call fails with ENODEV, Wait too (also one already
// waiting), munmap and close still work, Open fails until Plug.
func TestUnplug(t *testing.T) {
	cam := New(Config{})
	cam.Stall(true)
	d := open(t, cam)
	maps := stream(t, d, 2)
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(time.Minute) }()
	cam.Unplug()
	select {
	case err := <-waited:
		wantErrno(t, "Wait", err, syscall.ENODEV)
	case <-time.After(5 * time.Second):
		t.Fatal("the unplug did not end a Wait")
	}
	wantErrno(t, "QUERYCAP", call(d, vidiocQuerycap, make([]byte, sizeCapability)), syscall.ENODEV)
	wantErrno(t, "STREAMOFF", call(d, vidiocStreamoff, typ()), syscall.ENODEV)
	if _, err := d.Mmap(0, 4096); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("mmap: %v", err)
	}
	for _, m := range maps {
		if err := d.Munmap(m); err != nil {
			t.Errorf("munmap: %v", err)
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := cam.Open("/dev/video0"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open while unplugged: %v", err)
	}
	cam.Plug()
	d2 := open(t, cam)
	if err := call(d2, vidiocQuerycap, make([]byte, sizeCapability)); err != nil {
		t.Errorf("QUERYCAP after replug: %v", err)
	}
	if !d.StreamingAtClose() || !d.Unplugged() || d2.Unplugged() {
		t.Error("state after the unplug")
	}
	if v := cam.Violations(); len(v) > 0 {
		t.Errorf("violations %q", v)
	}
	if calls := cam.Calls(); calls[len(calls)-1] != "QUERYCAP" || !strings.Contains(strings.Join(calls, ","), "STREAMOFF: ENODEV") {
		t.Errorf("calls %q", calls)
	}
}

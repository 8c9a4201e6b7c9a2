//go:build linux && (amd64 || arm64)

package v4l2

import (
	"context"
	"errors"
	"io/fs"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mailroomd/mailroomd/drivers/camera"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestLinuxDevice runs the real syscalls on what every Linux box has: a
// missing node, and /dev/null, which is no V4L2 device.
func TestLinuxDevice(t *testing.T) {
	_, err := OpenDevice("/nonexistent/video9")
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != "open /nonexistent/video9: no such file or directory" {
		t.Errorf("open of a missing node: %v", err)
	}
	d, err := OpenDevice("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	var c capability
	if err := d.Ioctl(vidiocQuerycap, unsafe.Pointer(&c)); !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("VIDIOC_QUERYCAP on /dev/null: %v, want ENOTTY", err)
	}
	if err := d.Wait(time.Second); err != nil { // /dev/null is always readable
		t.Errorf("Wait: %v", err)
	}
	if _, err := d.Mmap(0, 4096); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("mmap of /dev/null: %v, want ENODEV", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := d.Close(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("second close: %v", err)
	}
	if err := d.Ioctl(vidiocQuerycap, unsafe.Pointer(&c)); !errors.Is(err, syscall.EBADF) {
		t.Errorf("ioctl after close: %v", err)
	}
}

// TestDriverOnDevNull: the driver with the real device refuses /dev/null
// as not a video device, with the ioctl's error, as the status.
func TestDriverOnDevNull(t *testing.T) {
	cam := New(Config{Name: "null-cam", Path: "/dev/null"})
	status := make(chan camera.Status, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cam.Run(ctx, status) }()
	s := <-status
	if s.Connected || s.Detail != "/dev/null is not a video device: VIDIOC_QUERYCAP /dev/null: inappropriate ioctl for device" || s.Device != "null-cam" {
		t.Errorf("status %+v", s)
	}
	waitfor.True(t, 5*time.Second, "Still refused", func() bool {
		_, err := cam.Still(ctx)
		return errors.Is(err, ErrNotConnected)
	})
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

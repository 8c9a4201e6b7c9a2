//go:build linux && (amd64 || arm64)

package v4l2

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OpenDevice opens a V4L2 device node (/dev/video0, or better one of its
// /dev/v4l/by-id/ links) for the driver: read-write, non-blocking, closed
// on exec.
func OpenDevice(path string) (Device, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &linuxDevice{fd: fd}, nil
}

// linuxDevice is an open device node.
type linuxDevice struct {
	fd     int
	closed bool
}

func (d *linuxDevice) Ioctl(req uint, arg unsafe.Pointer) error {
	if d.closed {
		return syscall.EBADF
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), uintptr(req), uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

func (d *linuxDevice) Mmap(offset int64, length int) ([]byte, error) {
	if d.closed {
		return nil, syscall.EBADF
	}
	return unix.Mmap(d.fd, offset, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func (d *linuxDevice) Munmap(b []byte) error { return unix.Munmap(b) }

func (d *linuxDevice) Wait(timeout time.Duration) error {
	if d.closed {
		return syscall.EBADF
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no frame yet: %w", os.ErrDeadlineExceeded)
		}
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			continue // the deadline check above ends the wait
		}
		ev := fds[0].Revents
		switch {
		case ev&unix.POLLNVAL != 0:
			return syscall.EBADF
		case ev&unix.POLLHUP != 0:
			// A V4L2 node whose device is unregistered (unplugged)
			// answers POLLERR|POLLHUP.
			return fmt.Errorf("hang-up: %w", syscall.ENODEV)
		case ev&unix.POLLERR != 0:
			// vb2 answers POLLERR while the queue is not streaming or
			// has failed.
			return fmt.Errorf("error condition: %w", syscall.EIO)
		}
		return nil
	}
}

func (d *linuxDevice) Close() error {
	if d.closed {
		return syscall.EBADF
	}
	d.closed = true
	return unix.Close(d.fd)
}

package v4l2

import (
	"time"
	"unsafe"
)

// Device is an open V4L2 device node: the syscall boundary of the driver.
// OpenDevice gives the real one; package v4l2test gives a fake that speaks
// the same ioctl protocol byte for byte. A Device is used by one goroutine.
type Device interface {
	// Ioctl performs the ioctl req on the device; arg points at the
	// request's struct, which the device reads and fills in as the kernel
	// does. Errors are syscall.Errno values (possibly wrapped): EAGAIN when
	// a non-blocking request has nothing to give, ENODEV once the device is
	// gone.
	Ioctl(req uint, arg unsafe.Pointer) error
	// Mmap maps length bytes of the device's memory at offset (a buffer's
	// m.offset from VIDIOC_QUERYBUF), shared, for reading and writing.
	Mmap(offset int64, length int) ([]byte, error)
	// Munmap unmaps a slice Mmap returned.
	Munmap(b []byte) error
	// Wait waits at most timeout for the device to be readable (a filled
	// buffer to dequeue). It returns an error wrapping
	// os.ErrDeadlineExceeded on timeout.
	Wait(timeout time.Duration) error
	// Close closes the device; the kernel stops a stream still running.
	Close() error
}

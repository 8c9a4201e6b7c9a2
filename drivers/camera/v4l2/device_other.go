//go:build !linux || !(amd64 || arm64)

package v4l2

import (
	"errors"
	"fmt"
)

// OpenDevice fails: the driver speaks the 64-bit Linux V4L2 ABI only.
func OpenDevice(path string) (Device, error) {
	return nil, fmt.Errorf("open %s: %w", path, errors.New("v4l2 cameras are supported on Linux only (amd64, arm64)"))
}

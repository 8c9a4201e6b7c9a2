//go:build !windows

package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// readMarker reads the update marker, which the daemon's user writes into
// a directory of its own: not through a symbolic link (this runs as
// root), and only a regular file of at most 64 KiB.
func readMarker(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

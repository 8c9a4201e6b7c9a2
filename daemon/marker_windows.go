package main

import (
	"io"
	"os"
)

// readMarker reads the update marker (a packaged Linux box's; on Windows
// a file like any other), at most 64 KiB of it.
func readMarker(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

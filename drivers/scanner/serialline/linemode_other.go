//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package serialline

import "errors"

// setLineMode is not available here; the driver reads byte by byte.
func setLineMode(string, byte) error { return errors.New("line mode not supported on this system") }

// pendingLines has nothing to read here: no line mode.
func pendingLines(string, byte, func([]byte) error) error { return nil }

//go:build !linux && !windows && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package main

import "errors"

// echoOff is not available here: passwd refuses to read a password from a
// terminal that would echo it (a pipe still works).
func echoOff(int) (func(), error) {
	return nil, errors.New("turning off a terminal's echo is not supported on this system: pipe the password in")
}

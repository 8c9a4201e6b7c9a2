//go:build !windows

package main

import (
	"log/slog"
	"os"
	"syscall"
)

// reexec replaces the process with a fresh start of the same binary and
// arguments, after a clean stop. Under a service manager the PID stays.
func reexec(log *slog.Logger) int {
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, os.Environ())
	}
	log.Error("restart failed; exiting so that the service manager starts us again", "err", err)
	return 3
}

//go:build windows

package main

import "log/slog"

// reexec exits with a failure code; the service's recovery actions start
// it again.
func reexec(log *slog.Logger) int {
	log.Info("exiting for a restart by the service manager")
	return 3
}

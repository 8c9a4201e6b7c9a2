//go:build windows

package update

import (
	"os"
	"os/exec"
	"time"
)

// waitExit gives the old process time to end (Windows: the service
// manager restarts the service; the handover is best effort).
func waitExit(pid int, max time.Duration) {
	if p, err := os.FindProcess(pid); err == nil && pid > 0 {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(max):
		}
	}
}

// Detach is a no-op on Windows: the child already outlives its parent.
func Detach(cmd *exec.Cmd) {}

// StopProcess kills a process and waits up to grace for it to exit (on
// Windows a process handle can be waited for by any process), so that the
// files it held open can be moved once it returns.
func StopProcess(pid int, grace time.Duration) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	p.Kill()
	done := make(chan struct{})
	go func() {
		p.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

// ownLike is a no-op on Windows, where the updater and the service run as
// the same account.
func ownLike(path, like string) error { return nil }

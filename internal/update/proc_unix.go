//go:build !windows

package update

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// waitExit waits for a process to end.
func waitExit(pid int, max time.Duration) {
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Detach makes a command run in its own session, so that it outlives the
// process that starts it.
func Detach(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} }

// StopProcess asks a process to stop, and kills it after grace.
func StopProcess(pid int, grace time.Duration) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Kill()
}

// ownLike gives path the owner and group of like: the updater of a
// package runs as root, the daemon as its own user, which must be able to
// open what the updater puts back.
func ownLike(path, like string) error {
	fi, err := os.Stat(like)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

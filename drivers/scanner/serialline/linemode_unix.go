//go:build linux || darwin || freebsd || netbsd || openbsd

package serialline

import (
	"errors"

	"golang.org/x/sys/unix"
)

// setLineMode switches the tty at path to canonical input with eol as the
// line end, all other special characters disabled. The kernel then hands
// out at most one line per read: a line is either wholly in the kernel's
// buffer or wholly read, so a crash of the daemon never splits a code into
// a lost head and a bogus tail. Termios settings belong to the tty, so a
// second descriptor is enough to change them.
func setLineMode(path string, eol byte) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return err
	}
	t.Lflag |= unix.ICANON
	t.Lflag &^= unix.ISIG | unix.IEXTEN | unix.ECHO | unix.ECHONL | unix.ECHOE | unix.ECHOK
	t.Iflag &^= unix.ICRNL | unix.INLCR | unix.IGNCR | unix.IXON | unix.IXOFF
	for _, c := range []int{unix.VINTR, unix.VQUIT, unix.VERASE, unix.VKILL, unix.VEOF, unix.VEOL2,
		unix.VSTART, unix.VSTOP, unix.VSUSP, unix.VREPRINT, unix.VWERASE, unix.VLNEXT, unix.VDISCARD} {
		t.Cc[c] = 0 // _POSIX_VDISABLE
	}
	t.Cc[unix.VEOL] = eol
	return unix.IoctlSetTermios(fd, ioctlSetTermios, t)
}

// pendingLines hands each whole line that a previous run left in the tty's
// line buffer to each, one read per line, without blocking. Opening the
// port switches the tty to raw mode and line mode back on, which makes
// everything still buffered one single read: read that way, a crash while
// those lines are committed one by one would lose all of them. Read here,
// a crash loses at most the line being committed. A tty not in the line
// mode this driver sets holds no framed lines; nothing is read from it.
func pendingLines(path string, eol byte, each func([]byte) error) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return err
	}
	if t.Lflag&unix.ICANON == 0 || t.Cc[unix.VEOL] != eol {
		return nil
	}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN) || (err == nil && n == 0):
			return nil
		case err != nil:
			return err
		}
		if err := each(buf[:n]); err != nil {
			return err
		}
	}
}

package hotplug

import (
	"context"

	"golang.org/x/sys/unix"
)

func (w *Watcher) run(ctx context.Context) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		w.Log.Info("hot-plug events unavailable; devices are found by their reconnect backoff", "err", err)
		return nil
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		w.Log.Info("hot-plug events unavailable; devices are found by their reconnect backoff", "err", err)
		return nil
	}
	stop := context.AfterFunc(ctx, func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	defer stop()
	// A receive timeout lets the loop notice cancellation even where
	// shutdown does not interrupt the read.
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
	buf := make([]byte, 8192)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n <= 0 {
			continue
		}
		w.handle(buf[:n])
	}
	return nil
}

// Package sdnotify tells systemd about the daemon's state (Type=notify
// units): ready once every subsystem started, stopping when it stops. It
// does nothing when not run by systemd.
package sdnotify

import (
	"net"
	"os"
)

// Notify sends a state such as "READY=1" to $NOTIFY_SOCKET. It reports
// whether a message was sent; without the variable it does nothing.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

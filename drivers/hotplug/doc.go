// Package hotplug tells device drivers when a device appears, so that a
// re-plugged scanner, scale or printer is opened at once instead of at the
// end of the reconnect backoff.
//
// Protocol: on Linux the kernel broadcasts a uevent on a NETLINK_KOBJECT_UEVENT
// socket (multicast group 1) for every device change. A message is
// "ACTION@DEVPATH" followed by NUL-separated KEY=VALUE pairs, e.g.
// "add@/devices/.../ttyACM0\x00ACTION=add\x00DEVPATH=...\x00SUBSYSTEM=tty\x00DEVNAME=ttyACM0\x00".
// The watcher wakes its subscribers on "add" events of the subsystems
// mailroomd drives: tty, usb, hidraw and usbmisc (usblp printers).
// Elsewhere the watcher does nothing and drivers rely on their backoff.
package hotplug

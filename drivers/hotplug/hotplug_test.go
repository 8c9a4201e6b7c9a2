package hotplug

import (
	"context"
	"testing"
	"time"
)

// A uevent as the kernel sends it when a CDC-ACM scanner is plugged in.
var acmAdd = []byte("add@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/tty/ttyACM0\x00" +
	"ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/tty/ttyACM0\x00" +
	"SUBSYSTEM=tty\x00MAJOR=166\x00MINOR=0\x00DEVNAME=ttyACM0\x00SEQNUM=4711\x00")

func TestParse(t *testing.T) {
	ev, ok := Parse(acmAdd)
	if !ok || ev.Action != "add" || ev.Subsystem != "tty" || ev.DevName != "ttyACM0" || !Relevant(ev) {
		t.Fatalf("Parse = %+v %v", ev, ok)
	}
	for _, tc := range []struct {
		msg      string
		relevant bool
	}{
		{"remove@/devices/x/ttyACM0\x00ACTION=remove\x00SUBSYSTEM=tty\x00", false},
		{"add@/devices/x/hidraw3\x00ACTION=add\x00SUBSYSTEM=hidraw\x00DEVNAME=hidraw3\x00", true},
		{"add@/devices/x/lp0\x00ACTION=add\x00SUBSYSTEM=usbmisc\x00DEVNAME=usb/lp0\x00", true},
		{"add@/devices/x/sda\x00ACTION=add\x00SUBSYSTEM=block\x00", false},
		{"libudev\x00\xfe\xed", false},
		{"", false},
	} {
		ev, _ := Parse([]byte(tc.msg))
		if Relevant(ev) != tc.relevant {
			t.Errorf("%q: relevant %v", tc.msg, !tc.relevant)
		}
	}
}

func TestWatcherWakesSubscribers(t *testing.T) {
	w := NewWatcher(nil)
	a, _ := w.Subscribe()
	b, _ := w.Subscribe()
	w.handle([]byte("remove@/x\x00ACTION=remove\x00SUBSYSTEM=tty\x00"))
	select {
	case <-a:
		t.Fatal("woken by a removal")
	default:
	}
	w.handle(acmAdd)
	w.handle(acmAdd) // coalesced
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatal("subscriber not woken")
		}
	}
	// An unsubscribed channel is no longer woken, and no longer counted.
	c, unsubscribe := w.Subscribe()
	if n := w.Subscribers(); n != 3 {
		t.Fatalf("%d subscribers, want 3", n)
	}
	unsubscribe()
	if n := w.Subscribers(); n != 2 {
		t.Fatalf("%d subscribers after unsubscribe, want 2", n)
	}
	w.handle(acmAdd)
	select {
	case <-c:
		t.Fatal("an unsubscribed channel was woken")
	default:
	}
	// Run returns when cancelled, with or without netlink access.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(acmAdd)
	f.Add([]byte("libudev\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, ok := Parse(b)
		if !ok && (ev.Subsystem != "" || ev.DevName != "") {
			t.Fatal("fields from a message that did not parse")
		}
	})
}

package serialport

import (
	"testing"

	"github.com/mailroomd/mailroomd/drivers/usbhid"
)

func TestFind(t *testing.T) {
	ports := []Port{
		{Name: "/dev/ttyS0"},
		{Name: "/dev/ttyACM0", IsUSB: true, VendorID: 0x0c2e, ProductID: 0x0b6a, Serial: "A1"},
		{Name: "/dev/ttyACM1", IsUSB: true, VendorID: 0x0c2e, ProductID: 0x0b6a, Serial: "B2"},
	}
	for _, tc := range []struct {
		m    usbhid.Match
		want string
	}{
		{usbhid.Match{VendorID: 0x0c2e, ProductID: 0x0b6a}, "/dev/ttyACM0"},
		{usbhid.Match{VendorID: 0x0c2e, ProductID: 0x0b6a, Serial: "B2"}, "/dev/ttyACM1"},
	} {
		if got, err := Find(ports, tc.m); err != nil || got != tc.want {
			t.Errorf("Find(%s) = %q, %v; want %q", tc.m, got, err, tc.want)
		}
	}
	if _, err := Find(ports, usbhid.Match{VendorID: 1, ProductID: 2}); err == nil {
		t.Error("found a device that is not attached")
	}
	if _, err := List(); err != nil {
		t.Fatalf("listing ports on this machine: %v", err)
	}
}

package usbhid_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/hid"
	"github.com/mailroomd/mailroomd/drivers/scale"
	"github.com/mailroomd/mailroomd/drivers/scanner"
	"github.com/mailroomd/mailroomd/drivers/usbhid"
	"github.com/mailroomd/mailroomd/drivers/usbhid/usbhidtest"
)

// sequence opens the given devices one after the other, as if the device
// was unplugged after each recording and plugged in again.
func sequence(devs ...usbhid.Device) usbhid.Opener {
	var mu sync.Mutex
	return func(usbhid.Match) (usbhid.Device, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(devs) == 0 {
			return nil, usbhid.ErrNotFound
		}
		d := devs[0]
		devs = devs[1:]
		return d, nil
	}
}

func TestParseMatch(t *testing.T) {
	m, err := usbhid.ParseMatch("0922:8003/ABC123")
	if err != nil || m.VendorID != 0x0922 || m.ProductID != 0x8003 || m.Serial != "ABC123" || m.String() != "0922:8003/ABC123" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, bad := range []string{"0922", "zz:01", "0922:1ffff"} {
		if _, err := usbhid.ParseMatch(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKeyboardScannerAcrossReplug(t *testing.T) {
	first, _ := hid.KeyReports(hid.DE, "1Z999AA10123456784")
	second, _ := hid.KeyReports(hid.DE, "JJD00Müller")
	s := &usbhid.Scanner{Common: usbhid.Common{Name: "wedge", Open: sequence(
		&usbhidtest.Playback{Reports: first},
		&usbhidtest.Playback{Reports: second, Hold: true},
	)}, Keyboard: true, Layout: hid.DE}
	out := make(chan scanner.Reading, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, scanner.ToChannel(out)) }()
	for _, want := range []string{"1Z999AA10123456784", "JJD00Müller"} {
		select {
		case r := <-out:
			if string(r.Barcode) != want {
				t.Fatalf("got %q, want %q", r.Barcode, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reading for %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestScaleDropsStaleFirstReport(t *testing.T) {
	rec := [][]byte{
		{3, 4, 11, 0xFF, 0x99, 0x09}, // stale, from before open
		{3, 2, 11, 0xFF, 0, 0},       // zero
		{3, 3, 11, 0xFF, 0x10, 0x00}, // motion
		{3, 4, 11, 0xFF, 0x2C, 0x01}, // 30.0 oz stable
		{3, 4, 11, 0xFF, 0x2C, 0x01}, // unchanged: not sent again
	}
	s := &usbhid.Scale{Common: usbhid.Common{Name: "postal", Open: sequence(&usbhidtest.Playback{Reports: rec, Hold: true})}}
	out := make(chan scale.Reading, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	want := []string{"0 oz zero", "1.6 oz motion", "30 oz stable"}
	for _, w := range want {
		select {
		case r := <-out:
			if r.String() != w {
				t.Fatalf("got %q, want %q", r.String(), w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no reading for %q", w)
		}
	}
	select {
	case r := <-out:
		t.Fatalf("unexpected reading %v", r)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/printer/zpl/zpltest"
	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestReceivingStation runs the real binary with a PTY scanner, a PTY NCI
// scale and a fake TCP label printer, and checks what reaches the broker
// and the printer.
func TestReceivingStation(t *testing.T) {
	s := newSetup(t, "mr-station-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-station-01/events")
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	scaleDev := serialtest.New(t, filepath.Join(s.dir, "ttyScale"))
	printer := zpltest.Start(t)

	var shown atomic.Value // what the scale answers to W<CR>
	shown.Store("\n0000.00LB\r\n00\r\x03")
	stop := make(chan struct{})
	defer close(stop)
	go scaleDev.Answer(stop, func(req []byte) []byte {
		if bytes.Contains(req, []byte("W\r")) {
			return []byte(shown.Load().(string))
		}
		return nil
	})

	devices := fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
  - {name: dock-scale, kind: scale, driver: nci, port: %s, poll_interval: 50ms, reconnect_max: 200ms}
  - {name: dock-printer, kind: printer, driver: zpl, address: "tcp://%s", poll_interval: 200ms, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner, scale: dock-scale, printer: dock-printer, weight_window: 1500ms, duplicate_window: 30s}
barcodes:
  internal:
    - {kind: recipient, prefix: "EMP-"}`, scanDev.Link, scaleDev.Link, printer.Addr())
	p := startDaemon(t, s.config(t, s.broker.URL(), devices))
	p.waitLog(t, "scanner connected", 10*time.Second)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scale connected", 10*time.Second)
	p.waitLog(t, "printer connected", 10*time.Second)

	// 1. The parcel is scanned while the scale still moves; it settles.
	shown.Store("\n0001.20LB\r\n10\r\x03")
	time.Sleep(200 * time.Millisecond)
	scanDev.Scan("1Z999AA10123456784")
	time.Sleep(300 * time.Millisecond)
	shown.Store("\n0002.50LB\r\n00\r\x03")
	p.waitLog(t, "parcel received", 10*time.Second)

	// 2. The same code again: a duplicate.
	scanDev.Scan("1Z999AA10123456784")
	p.waitLog(t, "duplicate scan ignored", 10*time.Second)

	// 3. A badge right after the parcel updates it; the next badge waits
	// for the next parcel (GS1-128 with the ZIP in AI 420).
	scanDev.Scan("EMP-0042")
	p.waitLog(t, "parcel updated", 10*time.Second)
	scanDev.Scan("EMP-0077")
	scanDev.Scan("]C1420100011234\x1d9400111899223855718403")
	p.waitLog(t, "recipient=[redacted]", 10*time.Second)

	// 4. A parcel on a scale that never settles: the unsettled weight.
	shown.Store("\n0000.90LB\r\n10\r\x03")
	time.Sleep(200 * time.Millisecond)
	scanDev.Scan("RB123456785GB")

	msgs := sub.WaitFor(t, 20*time.Second, "4 scans, 3 parcels, 3 labels", mqtttest.DistinctEvents(13))
	evs, _ := mqtttest.Delivered(t, msgs)
	byType := map[event.Type][]event.Event{}
	scans := map[string]event.Event{}
	for seq := int64(1); seq <= int64(len(evs)); seq++ {
		ev, ok := evs[seq]
		if !ok {
			t.Fatalf("seq %d missing among %d events", seq, len(evs))
		}
		byType[ev.Type] = append(byType[ev.Type], ev)
		if ev.Type == event.TypeScan {
			scans[ev.ID] = ev
		}
	}
	if n := len(byType[event.TypeScan]); n != 6 {
		t.Fatalf("%d scan events, want 6 (every read is recorded, the duplicate too)", n)
	}
	rcv := byType[event.TypeParcelReceived]
	if len(rcv) != 3 {
		t.Fatalf("%d parcel.received, want 3: %+v", len(rcv), rcv)
	}
	ups, usps, s10 := rcv[0], rcv[1], rcv[2]
	if ups.Parcel.Carrier != "ups" || ups.Parcel.Check != "valid" || ups.Station != "dock-1" || scans[ups.ScanID].Station != "dock-1" {
		t.Fatalf("ups parcel = %+v %+v", ups, ups.Parcel)
	}
	if w := ups.Parcel.Weight; w == nil || w.Value != 2.5 || w.Unit != "lb" || !w.Stable || w.Grams != 1133.98 {
		t.Fatalf("ups weight = %+v, want the settled 2.5 lb", w)
	}
	if usps.Parcel.Carrier != "usps" || usps.Parcel.Tracking != "9400111899223855718403" || usps.Recipient != "EMP-0077" ||
		usps.Parcel.GS1["420"] != "100011234" {
		t.Fatalf("usps parcel = %+v %+v", usps, usps.Parcel)
	}
	upd := byType[event.TypeParcelUpdated]
	if len(upd) != 1 || upd[0].ParcelID != ups.ID || upd[0].Recipient != "EMP-0042" || scans[upd[0].ScanID].Barcode == nil {
		t.Fatalf("parcel.updated = %+v", upd)
	}
	if s10.Parcel.Carrier != "royalmail" || s10.Parcel.Country != "GB" {
		t.Fatalf("s10 parcel = %+v", s10.Parcel)
	}
	if w := s10.Parcel.Weight; w == nil || w.Value != 0.9 || w.Stable {
		t.Fatalf("unsettled weight = %+v, want 0.9 lb not stable", w)
	}
	printed := byType[event.TypeLabelPrinted]
	if len(printed) != 3 || printed[0].ParcelID != ups.ID {
		t.Fatalf("label.printed = %+v", printed)
	}

	// Each label reached the printer once, with the parcel id and tracking.
	labels := waitfor.Value(t, 10*time.Second, "three labels at the printer", printer.Labels,
		func(l []string) bool { return len(l) >= 3 })
	if len(labels) != 3 {
		t.Fatalf("%d labels printed, want 3", len(labels))
	}
	for i, want := range []event.Event{ups, usps, s10} {
		if !strings.Contains(labels[i], want.ID) || !strings.Contains(labels[i], want.Parcel.Tracking) {
			t.Fatalf("label %d lacks id %s or tracking %s:\n%s", i, want.ID, want.Parcel.Tracking, labels[i])
		}
	}
	if n := strings.Count(p.log.String(), "not understood"); n > 0 {
		t.Fatalf("%d scale replies not understood", n)
	}
	if strings.Contains(p.log.String(), "EMP-0077") {
		t.Fatal("a recipient appears in the log (personal data is redacted by default)")
	}
	if !strings.Contains(labels[1], "EMP-0077") {
		t.Fatalf("label lacks the recipient:\n%s", labels[1])
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestDecodeCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main([]string{"decode", "1Z999AA10123456784", "1Z999AA10123456785", "]C100340123450000000017", "hello"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want one per code:\n%s", len(lines), out.String())
	}
	want := []struct{ carrier, check, tracking string }{
		{"ups", "valid", "1Z999AA10123456784"}, {"ups", "invalid", "1Z999AA10123456785"},
		{"sscc", "valid", "340123450000000017"}, {"unknown", "none", "HELLO"},
	}
	for i, line := range lines {
		var got struct {
			Raw, Carrier, Check, Tracking string
			GS1                           map[string]string
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d not JSON: %s", i, line)
		}
		if got.Carrier != want[i].carrier || got.Check != want[i].check || got.Tracking != want[i].tracking {
			t.Errorf("line %d = %s", i, line)
		}
	}
	if !strings.Contains(lines[2], `"gs1":{"00":"340123450000000017"}`) || !strings.Contains(lines[0], `"service":"next-day-air"`) {
		t.Errorf("fields missing:\n%s", out.String())
	}
	if code := Main([]string{"decode"}, &out, &errOut); code != 2 {
		t.Fatalf("decode without codes: exit %d", code)
	}
}

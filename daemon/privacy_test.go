package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// TestLogsKeepPersonalCodesOut runs the real binary with a station and
// feeds it a recognised tracking number, codes of no known carrier, staff
// badges and shelf codes: with log.personal_data off, no log line carries
// any of those codes, only the carrier's tracking number.
func TestLogsKeepPersonalCodesOut(t *testing.T) {
	s := newSetup(t, "mr-privacy-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-privacy-01/events")
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	devices := fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner}
barcodes:
  internal:
    - {kind: recipient, prefix: "EMP-"}
    - {kind: location, prefix: "SHELF-"}`, scanDev.Link)
	p := startDaemon(t, s.config(t, s.broker.URL(), devices))
	p.waitLog(t, "scanner connected", 10*time.Second)
	const carrier = "1Z999AA10123456784"
	// Phone numbers have the shape of DHL Express numbers, a letter and ten
	// digits that of a UPS waybill; their check digits fail.
	private := []string{"EMP-0042", "SHELF-B07", "PERSONAL-7731", "HR-CASE-2026-118", "EMP-0077", "ZZ-unknown-0001", "5551234567", "K1506235621"}
	codes := []string{"EMP-0042", carrier, "SHELF-B07", "PERSONAL-7731", "HR-CASE-2026-118", "EMP-0077", "ZZ-unknown-0001", "5551234567", "K1506235621"}
	for _, c := range codes {
		if err := scanDev.Scan(c); err != nil {
			t.Fatal(err)
		}
	}
	scanDev.Scan("PERSONAL-7731") // again: a duplicate of an unknown carrier's code
	p.waitLog(t, "duplicate scan ignored", 20*time.Second)
	sub.WaitFor(t, 20*time.Second, "every scan published", func(ms []mqtttest.Message) bool {
		return strings.Count(joined(ms), `"type":"scan"`) >= len(codes)+1
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	log := p.log.String()
	if !strings.Contains(log, "tracking="+carrier) {
		t.Fatalf("the carrier's tracking number is not in the log; the test does not see the parcel lines:\n%s", log)
	}
	for _, line := range strings.Split(log, "\n") {
		for _, c := range private {
			if strings.Contains(line, c) {
				t.Errorf("a personal code is in the log: %s", line)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
	"github.com/mailroomd/mailroomd/internal/store"
)

// custodyCodes are the internal codes of the custody tests.
const custodyCodes = `barcodes:
  internal:
    - {kind: recipient, prefix: "EMP-"}
    - {kind: location, prefix: "SHELF-"}
    - {kind: action, action: move, prefix: "ACT-MOVE"}
    - {kind: action, action: deliver, prefix: "ACT-DELIVER"}
delivery:
  proof: [badge, signature, pin]`

// TestCustodyByScannerThroughKills runs the real binary with a PTY scanner
// and a real mosquitto: a parcel is received, moved to a shelf and handed
// over by badge, with the daemon SIGKILLed between the scans. The cloud
// gets every event once in seq order, each custody event naming the
// parcel; a second delivery is refused and changes nothing; the parcel's
// state on the box is delivered.
func TestCustodyByScannerThroughKills(t *testing.T) {
	s := newSetup(t, "mr-custody-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-custody-01/events")
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	devices := fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner}
%s`, scanDev.Link, custodyCodes)
	cfg := s.config(t, s.broker.URL(), devices)
	start := func() *proc {
		p := startDaemon(t, cfg)
		p.waitLog(t, "scanner connected", 10*time.Second)
		p.waitLog(t, "uplink connected", 10*time.Second)
		return p
	}
	// scan reads a code and waits until its scan event reached the cloud:
	// it is committed.
	events := 0
	scan := func(code string, more int) {
		t.Helper()
		if err := scanDev.Scan(code); err != nil {
			t.Fatal(err)
		}
		events += 1 + more
		sub.WaitFor(t, 15*time.Second, fmt.Sprintf("%d events after %s", events, code), mqtttest.DistinctEvents(events))
	}

	p := start()
	scan("1Z999AA10123456784", 1) // the scan and its parcel.received
	scan("ACT-MOVE", 0)
	scan("SHELF-A01", 0)
	p.kill() // the mode is in the buffer, not only in memory

	p = start()
	scan("1Z999AA10123456784", 1) // parcel.moved
	p.kill()

	p = start()
	scan("ACT-DELIVER", 0)
	scan("EMP-0042", 0)
	p.kill()
	p = start()
	scan("1Z999AA10123456784", 1) // parcel.delivered
	scan("1Z999AA10123456784", 1) // refused: an audit event
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	msgs := sub.Messages()
	bySeq, _ := mqtttest.Delivered(t, msgs)
	gapless(t, bySeq)
	if len(bySeq) != events {
		t.Fatalf("%d distinct events at the cloud, want %d", len(bySeq), events)
	}
	byType := map[event.Type][]event.Event{}
	for seq := int64(1); seq <= int64(len(bySeq)); seq++ {
		ev := bySeq[seq]
		byType[ev.Type] = append(byType[ev.Type], ev)
	}
	rcv, moved, del, audit := byType[event.TypeParcelReceived], byType[event.TypeParcelMoved], byType[event.TypeParcelDelivered], byType[event.TypeAudit]
	if len(rcv) != 1 || len(moved) != 1 || len(del) != 1 || len(audit) != 1 {
		t.Fatalf("received %d, moved %d, delivered %d, audits %d; want one each", len(rcv), len(moved), len(del), len(audit))
	}
	id := rcv[0].ID
	if moved[0].ParcelID != id || moved[0].Location != "SHELF-A01" || moved[0].By != "dock-scanner" || moved[0].Station != "dock-1" {
		t.Fatalf("parcel.moved = %+v", moved[0])
	}
	if del[0].ParcelID != id || del[0].Recipient != "EMP-0042" || del[0].Proof == nil || del[0].Proof.Method != "badge" || del[0].Seq < moved[0].Seq {
		t.Fatalf("parcel.delivered = %+v", del[0])
	}
	if a := audit[0].Audit; a.Action != "custody" || a.Name != "parcel.delivered" || a.Outcome != "rejected" || a.Reason != "parcel_closed" ||
		audit[0].ParcelID != id {
		t.Fatalf("refusal = %+v %+v", audit[0], a)
	}

	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(s.dir, "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pst, err := st.ParcelByID(context.Background(), id)
	if err != nil || pst.State != store.StateDelivered || pst.LastEvent != del[0].ID || pst.Location != "SHELF-A01" {
		t.Fatalf("state on the box: %+v %v", pst, err)
	}
}

// TestTwoDLabelOverPTY reads a UPS MaxiCode message (ISO/IEC 15434, with
// its RS, GS and EOT) from a PTY scanner set to keep control characters:
// the parcel.received at the cloud has the carrier, the tracking number,
// the label's fields and, at a station without a scale, its weight.
func TestTwoDLabelOverPTY(t *testing.T) {
	s := newSetup(t, "mr-twod-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-twod-01/events")
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	devices := fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, control_chars: keep, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner}`, scanDev.Link)
	p := startDaemon(t, s.config(t, s.broker.URL(), devices))
	p.waitLog(t, "scanner connected", 10*time.Second)
	maxi := "[)>\x1e01\x1d96841706672\x1d840\x1d001\x1d1Z12345675\x1dUPSN\x1d12345E\x1d089\x1d\x1d1/1\x1d10.1\x1dY\x1d\x1dSALT LAKE CITY\x1dUT\x1e\x04"
	if err := scanDev.Scan(maxi); err != nil {
		t.Fatal(err)
	}
	msgs := sub.WaitFor(t, 15*time.Second, "the scan and its parcel", mqtttest.DistinctEvents(2))
	bySeq, _ := mqtttest.Delivered(t, msgs)
	scan, rcv := bySeq[1], bySeq[2]
	if string(scan.Barcode) != maxi {
		t.Fatalf("scan %q, want the message byte for byte", scan.Barcode)
	}
	pc := rcv.Parcel
	if rcv.Type != event.TypeParcelReceived || pc.Carrier != "ups" || pc.Tracking != "1Z12345675" || pc.Label == nil ||
		pc.Label.SCAC != "UPSN" || pc.Label.ShipTo.PostalCode != "841706672" || pc.Label.Package != "1/1" || pc.Label.Error != "" {
		t.Fatalf("parcel %+v label %+v", pc, pc.Label)
	}
	if w := pc.Weight; w == nil || w.Value != 10.1 || w.Unit != "lb" || w.Scale != "label" {
		t.Fatalf("weight %+v", w)
	}
}

// TestDirectoryCommands imports a directory into a buffer the running
// daemon uses, searches it with a misspelt name, refuses a bad file with
// its line and keeps the directory, and forgets a person.
func TestDirectoryCommands(t *testing.T) {
	s := newSetup(t, "mr-dir-01")
	cfg := s.config(t, s.broker.URL(), "  - {name: sim, kind: scanner, driver: sim, interval: 1s}")
	p := startDaemon(t, cfg)
	p.waitLog(t, "uplink connected", 10*time.Second)
	csvFile := filepath.Join(s.dir, "people.csv")
	os.WriteFile(csvFile, []byte("id,name,email,location,badges,delegates,active\n"+
		"E1,Jürgen Müller,jm@example.com,MS-2.14,EMP-0042,E2,true\n"+
		"E2,Anna Weiß,,MS-3.01,EMP-0077,,true\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := Main([]string{"directory", "import", "--config", cfg, csvFile}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "imported 2 people (2 active), directory version 1") {
		t.Fatalf("import: %d %s %s", code, out.String(), errOut.String())
	}
	bad := filepath.Join(s.dir, "bad.csv")
	os.WriteFile(bad, []byte("id,name,email,location,badges,delegates,active\nE1,X,,,,,true\nE1,Y,,,,,true\n"), 0o644)
	out.Reset()
	errOut.Reset()
	if code := Main([]string{"directory", "import", "--config", cfg, bad}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), `line 3: id "E1" again`) || !strings.Contains(errOut.String(), "the directory is unchanged") {
		t.Fatalf("bad import: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := Main([]string{"directory", "search", "--config", cfg, "mueller jurgen"}, &out, &errOut); code != 0 {
		t.Fatalf("search: %d %s", code, errOut.String())
	}
	var first struct {
		ID, Name, Location string
		Score              float64
	}
	if err := json.Unmarshal([]byte(strings.SplitN(out.String(), "\n", 2)[0]), &first); err != nil || first.ID != "E1" || first.Score < 0.9 || first.Location != "MS-2.14" {
		t.Fatalf("search found %q (%v)", out.String(), err)
	}
	out.Reset()
	if code := Main([]string{"directory", "forget", "--config", cfg, "E1"}, &out, &errOut); code != 0 {
		t.Fatalf("forget: %d %s", code, errOut.String())
	}
	out.Reset()
	Main([]string{"directory", "search", "--config", cfg, "Jürgen Müller"}, &out, &errOut)
	if strings.Contains(out.String(), "E1") {
		t.Fatalf("a forgotten person is still found: %s", out.String())
	}
	if code := Main([]string{"directory", "forget", "--config", cfg, "E1"}, &out, &errOut); code != 1 {
		t.Fatalf("forgetting an unknown id: exit %d", code)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestRecipientFromTheLabelAndErasure scans 2D labels that print their
// recipient's name over a PTY: one in the directory is matched (id and
// name in parcel.received), one nobody is waits as "none". After `directory
// forget`, the person's name is nowhere in the buffer's files, and the
// events that named them still name them by id.
func TestRecipientFromTheLabelAndErasure(t *testing.T) {
	s := newSetup(t, "mr-match-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-match-01/events")
	scanDev := serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	cfg := s.config(t, s.broker.URL(), fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, control_chars: keep, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner}`, scanDev.Link))
	csvFile := filepath.Join(s.dir, "people.csv")
	os.WriteFile(csvFile, []byte("id,name,email,location,badges,delegates,active\n"+
		"E1,Jürgen Müller,jm@example.com,MS-2.14,EMP-0042,,true\n"+
		"E2,Anna Weiß,,MS-3.01,EMP-0077,,true\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := Main([]string{"directory", "import", "--config", cfg, csvFile}, &out, &errOut); code != 0 {
		t.Fatalf("import: %d %s", code, errOut.String())
	}
	p := startDaemon(t, cfg)
	p.waitLog(t, "scanner connected", 10*time.Second)
	label := func(sscc, name string) string {
		return "[)>\x1e05\x1d00" + sscc + "\x1d4301" + name + "\x1d42127610115\x1e\x04"
	}
	for _, l := range []string{label("340123450000000017", "JUERGEN MUELLER"), label("340123450000000024", "Hans Unbekannt")} {
		if err := scanDev.Scan(l); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sub.WaitFor(t, 15*time.Second, "two scans and their parcels", mqtttest.DistinctEvents(4))
	bySeq, _ := mqtttest.Delivered(t, msgs)
	var received []event.Event
	for seq := int64(1); seq <= 4; seq++ {
		if bySeq[seq].Type == event.TypeParcelReceived {
			received = append(received, bySeq[seq])
		}
	}
	if len(received) != 2 {
		t.Fatalf("parcels received: %+v", received)
	}
	matched, unknown := received[0], received[1]
	if matched.RecipientID != "E1" || matched.RecipientName != "Jürgen Müller" || matched.RecipientMatch != "exact" ||
		matched.Parcel.Label.ShipTo.Name != "JUERGEN MUELLER" {
		t.Fatalf("the matched parcel %+v", matched)
	}
	if unknown.RecipientID != "" || unknown.RecipientMatch != "none" {
		t.Fatalf("the unknown recipient's parcel %+v", unknown)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	out.Reset()
	if code := Main([]string{"directory", "forget", "--config", cfg, "E1"}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "forgot E1 (name taken out of 2 events)") {
		t.Fatalf("forget: %d %s %s", code, out.String(), errOut.String())
	}
	for _, f := range []string{"buffer.db", "buffer.db-wal", "buffer.db-shm"} {
		b, err := os.ReadFile(filepath.Join(s.dir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, name := range []string{"Jürgen", "Müller", "JUERGEN", "MUELLER", "jm@example.com"} {
			if bytes.Contains(b, []byte(name)) {
				t.Errorf("%s still holds %q", f, name)
			}
		}
		if f == "buffer.db" && !bytes.Contains(b, []byte("Hans Unbekannt")) {
			t.Errorf("%s lost the name of a label nobody was found for", f)
		}
	}
	// The events that named E1 still do, by id; the rest is as it was.
	st, err := store.Open(context.Background(), store.Options{Path: filepath.Join(s.dir, "buffer.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.BySeq(context.Background(), 1, 4)
	if err != nil || len(recs) != 4 {
		t.Fatalf("events after forget: %d %v", len(recs), err)
	}
	bySeqAfter := map[int64]store.Record{}
	for _, r := range recs {
		bySeqAfter[r.Seq] = r
	}
	after, err := event.Decode(bySeqAfter[matched.Seq].Payload)
	if err != nil || after.ID != matched.ID || after.Seq != matched.Seq || after.RecipientID != "E1" || after.RecipientName != "" ||
		after.Parcel.Label.ShipTo.Name != "" || after.Parcel.Tracking != matched.Parcel.Tracking || after.RecipientMatch != "exact" {
		t.Fatalf("the matched parcel after forget: %+v %v", after, err)
	}
	scan, _ := event.Decode(bySeqAfter[1].Payload)
	if want := strings.ReplaceAll(label("340123450000000017", "JUERGEN MUELLER"), "JUERGEN MUELLER", strings.Repeat("*", 15)); string(scan.Barcode) != want {
		t.Fatalf("the label's scan after forget: %q", scan.Barcode)
	}
	if rec := bySeqAfter[unknown.Seq]; !bytes.Equal(rec.Payload, mustJSON(t, unknown)) {
		t.Fatalf("an event of nobody forgotten changed:\n%s", rec.Payload)
	}
}

func mustJSON(t *testing.T, ev event.Event) []byte {
	t.Helper()
	b, err := ev.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

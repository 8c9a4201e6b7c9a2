package station

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/waitfor"
)

func (r *rig) parcel(id string) store.Parcel {
	r.t.Helper()
	p, err := r.store.ParcelByID(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) waitState(id string, want store.State) store.Parcel {
	r.t.Helper()
	return waitfor.Value(r.t, 10*time.Second, fmt.Sprintf("parcel %s %s", id, want), func() store.Parcel { return r.parcel(id) },
		func(p store.Parcel) bool { return p.State == want })
}

func (r *rig) receiveTwo() (ups, usps event.Event) {
	r.t.Helper()
	r.scan(upsCode, 0, true)
	r.scan(uspsCode, time.Second, true)
	got := r.waitEvents(event.TypeParcelReceived, 2)
	return got[0], got[1]
}

func TestMoveLocationFirstOrParcelFirst(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, usps := r.receiveTwo()
	r.scan("ACT-MOVE", 10*time.Second, true)
	r.scan("SHELF-A01", 11*time.Second, true)
	r.scan(upsCode, 12*time.Second, true)
	// Parcel first, then its location.
	r.scan("ACT-MOVE", 13*time.Second, true)
	parcelScan := r.scan(uspsCode, 14*time.Second, true)
	r.scan("SHELF-B02", 15*time.Second, true)
	moved := r.waitEvents(event.TypeParcelMoved, 2)
	if moved[0].ParcelID != ups.ID || moved[0].Location != "SHELF-A01" || moved[1].ParcelID != usps.ID || moved[1].Location != "SHELF-B02" {
		t.Fatalf("moves = %+v", moved)
	}
	if moved[1].ScanID != parcelScan.ID {
		t.Fatalf("a parcel-first move names scan %s, want the parcel's %s", moved[1].ScanID, parcelScan.ID)
	}
	if moved[0].By != "dock-scanner" || moved[0].Station != "dock-1" {
		t.Fatalf("move lacks by/station: %+v", moved[0])
	}
	if p := r.parcel(ups.ID); p.State != store.StateStored || p.Location != "SHELF-A01" {
		t.Fatalf("ups parcel: %+v", p)
	}
	if n := len(r.events(event.TypeParcelReceived)); n != 2 {
		t.Fatalf("%d parcels received: a scan in move mode was taken as a receipt", n)
	}
	if m := r.st.Mode(); m.Mode != ModeMove || m.Location != "" {
		t.Fatalf("mode after parcel-first move: %+v", m)
	}
}

func TestDeliverByBadgeAndRefusals(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.BadgeIsProof = "", "", true })
	r.run()
	ups, usps := r.receiveTwo()
	r.scan("ACT-DELIVER", 10*time.Second, true)
	r.scan(upsCode, 11*time.Second, true) // no badge yet
	r.scan("EMP-0042", 12*time.Second, true)
	r.scan(upsCode, 13*time.Second, true)
	r.scan(upsCode, 14*time.Second, true)              // again: already delivered
	r.scan("1Z999AA10000000000", 15*time.Second, true) // never received
	r.scan(uspsCode, 16*time.Second, true)
	del := r.waitEvents(event.TypeParcelDelivered, 2)
	if del[0].ParcelID != ups.ID || del[0].Recipient != "EMP-0042" || del[0].Proof == nil || del[0].Proof.Method != "badge" ||
		del[0].Proof.Badge != "EMP-0042" || del[1].ParcelID != usps.ID {
		t.Fatalf("deliveries = %+v", del)
	}
	audits := r.waitEvents(event.TypeAudit, 3)
	var reasons []string
	for _, a := range audits {
		if a.Audit.Action != "custody" || a.Audit.Outcome != "rejected" || a.Audit.Name != "parcel.delivered" {
			t.Fatalf("refusal audit %+v", a.Audit)
		}
		reasons = append(reasons, a.Audit.Reason)
	}
	if fmt.Sprint(reasons) != "[badge_required parcel_closed unknown_parcel]" {
		t.Fatalf("refusals %v", reasons)
	}
	if p := r.parcel(ups.ID); p.State != store.StateDelivered || p.LastEvent != del[0].ID {
		t.Fatalf("a refusal changed the delivered parcel: %+v", p)
	}
	waitfor.True(t, 5*time.Second, "no scan left unresolved but the mode's", func() bool { return r.unresolved() == 2 })
	notices := r.st.Mode().Notices
	if notices[0].Code != NoticeDone || notices[1].Code != NoticeUnknownParcel || notices[2].Code != NoticeClosed || notices[2].State != "delivered" {
		t.Fatalf("notices (newest first) = %+v", notices[:3])
	}
}

func TestDeliverWithoutBadgeProofWaitsForThePage(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.BadgeIsProof = "", "", false })
	r.run()
	ups, _ := r.receiveTwo()
	r.scan("ACT-DELIVER", 10*time.Second, true)
	r.scan("EMP-0042", 11*time.Second, true)
	r.scan(upsCode, 12*time.Second, true)
	m := waitfor.Value(t, 5*time.Second, "the parcel awaits proof", r.st.Mode, func(m ModeView) bool { return len(m.Awaiting) == 1 })
	if a := m.Awaiting[0]; a.ParcelID != ups.ID || a.Badge != "EMP-0042" {
		t.Fatalf("awaiting %+v", a)
	}
	if n := len(r.events(event.TypeParcelDelivered)); n != 0 {
		t.Fatal("delivered on a badge the site does not take as proof")
	}
	r.st.Handed(ups.ID)
	if len(r.st.Mode().Awaiting) != 0 {
		t.Fatal("Handed kept the parcel awaiting")
	}
}

func TestModeFallsBackToReceiveWhenIdle(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer, c.ModeIdle = "", "", time.Second })
	r.run()
	r.scan("ACT-MOVE", 0, true)
	r.scan("SHELF-A01", 500*time.Millisecond, true)
	r.scan(upsCode, 5*time.Second, true) // long after: received, not moved
	got := r.waitEvents(event.TypeParcelReceived, 1)
	if got[0].Location != "" {
		t.Fatalf("the old mode's location went into the receipt: %+v", got[0])
	}
	if n := len(r.events(event.TypeParcelMoved)); n != 0 {
		t.Fatal("moved after the mode ended")
	}
	waitfor.True(t, 5*time.Second, "the mode's scans resolved", func() bool { return r.unresolved() == 0 })
	// With no scan at all, the clock ends it too.
	if err := r.st.SetMode(ModeDeliver); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 10*time.Second, "deliver mode ended by the clock", func() bool { return r.st.Mode().Mode == ModeReceive })
	if err := r.st.SetMode("fly"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

func TestOutForDeliveryWithRoundAndHeldRefused(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, usps := r.receiveTwo()
	held := event.Event{Appliance: "mr-test", Type: event.TypeParcelHeld, Time: r.t0, ParcelID: usps.ID, Reason: "on leave"}
	if _, err := r.store.Append(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	r.scan("ACT-OUT", 10*time.Second, true)
	r.scan("RND-NORTH", 11*time.Second, true)
	r.scan(upsCode, 12*time.Second, true)
	r.scan(uspsCode, 13*time.Second, true)
	out := r.waitEvents(event.TypeParcelOutForDelivery, 1)
	if out[0].ParcelID != ups.ID || out[0].Round != "RND-NORTH" {
		t.Fatalf("out for delivery: %+v", out[0])
	}
	a := r.waitEvents(event.TypeAudit, 1)
	if a[0].Audit.Reason != store.RefusedHeld || a[0].ParcelID != usps.ID {
		t.Fatalf("held parcel refusal: %+v", a[0])
	}
	r.scan("ACT-RETURN", 14*time.Second, true)
	r.scan(upsCode, 15*time.Second, true)
	r.waitState(ups.ID, store.StateReturned)
}

func TestRecoveryReplaysTheModeBeforeItsParcels(t *testing.T) {
	path := t.TempDir() + "/buffer.db"
	r := newRig(t, path, func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, usps := r.receiveTwo()
	r.stop()
	// Committed, never seen by the station: a power cut.
	r.scan("ACT-MOVE", 10*time.Second, false)
	r.scan("SHELF-C03", 11*time.Second, false)
	r.scan(upsCode, 12*time.Second, false)
	r.scan("ACT-DELIVER", 13*time.Second, false)
	r.scan("EMP-7", 14*time.Second, false)
	r.scan(uspsCode, 15*time.Second, false)
	r.store.Close()

	for round := range 2 { // a second restart changes nothing
		r2 := newRig(t, path, func(c *Config) { c.Scale, c.Printer, c.BadgeIsProof = "", "", true })
		r2.t0 = r.t0
		r2.run()
		if n := len(r2.events(event.TypeParcelReceived)); n != 2 {
			t.Fatalf("round %d: %d parcels received; the mode was lost", round, n)
		}
		if p := r2.parcel(ups.ID); p.State != store.StateStored || p.Location != "SHELF-C03" {
			t.Fatalf("round %d: ups %+v", round, p)
		}
		if p := r2.parcel(usps.ID); p.State != store.StateDelivered || p.Recipient != "EMP-7" {
			t.Fatalf("round %d: usps %+v", round, p)
		}
		if n := len(r2.events(event.TypeParcelMoved)) + len(r2.events(event.TypeParcelDelivered)); n != 2 {
			t.Fatalf("round %d: %d custody events, want 2", round, n)
		}
		r2.stop()
		r2.store.Close()
	}
}

func TestCodesAfterAHandOverAndLabelRescans(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, usps := r.receiveTwo()
	// The last parcel is handed over on the page right after receipt.
	del := event.Event{Appliance: "mr-test", Type: event.TypeParcelDelivered, Time: r.t0.Add(2 * time.Second), ParcelID: usps.ID,
		Proof: &event.Proof{Method: "clerk"}}
	if _, err := r.store.Append(context.Background(), del); err != nil {
		t.Fatal(err)
	}
	// The receiving label scanned again, in any case: no second parcel.
	r.scan(strings.ToUpper(ups.ID), 3*time.Second, true)
	r.scan(ups.ID, 4*time.Second, true)
	r.scan("EMP-0042", 5*time.Second, true) // would update the parcel just received: held instead
	r.scan(dhl(), 6*time.Second, true)
	got := r.waitEvents(event.TypeParcelReceived, 3)
	if len(got) != 3 || got[2].Recipient != "EMP-0042" {
		t.Fatalf("receipts %+v", got)
	}
	if p := r.parcel(usps.ID); p.State != store.StateDelivered || p.Recipient != "" {
		t.Fatalf("delivered parcel changed: %+v", p)
	}
	if n := len(r.events(event.TypeParcelUpdated)); n != 0 {
		t.Fatalf("%d updates", n)
	}
	notices := r.st.Mode().Notices
	if len(notices) < 2 || notices[0].Code != NoticeAlreadyReceived || notices[0].State != "received" {
		t.Fatalf("notices %+v", notices)
	}
}

func dhl() string { return "RB123456785GB" }

func TestPageModeOutlivesARestart(t *testing.T) {
	path := t.TempDir() + "/buffer.db"
	r := newRig(t, path, func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, _ := r.receiveTwo()
	if err := r.st.SetMode(ModeReturn); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, "return mode", func() bool { return r.st.Mode().Mode == ModeReturn })
	r.stop()
	r.scan(upsCode, 20*time.Second, false) // committed, never resolved: a power cut
	r.store.Close()

	r2 := newRig(t, path, func(c *Config) { c.Scale, c.Printer = "", "" })
	r2.t0 = r.t0
	r2.run()
	if p := r2.parcel(ups.ID); p.State != store.StateReturned {
		t.Fatalf("after the restart the scan was taken as %s, want returned", p.State)
	}
	if n := len(r2.events(event.TypeParcelReceived)); n != 2 {
		t.Fatalf("%d parcels received: the page's mode was lost", n)
	}
	if m := r2.st.Mode(); m.Mode != ModeReturn {
		t.Fatalf("mode after the restart: %s", m.Mode)
	}
	// Ending it clears the record: the next restart starts in receive.
	if err := r2.st.SetMode(ModeReceive); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, "receive mode", func() bool { return r2.st.Mode().Mode == ModeReceive })
	if _, ok, _ := r2.store.StationModeOf(context.Background(), "dock-1"); ok {
		t.Fatal("the ended mode is still recorded")
	}
}

func TestParcelFirstMovesAfterACrashBetweenThem(t *testing.T) {
	path := t.TempDir() + "/buffer.db"
	r := newRig(t, path, func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	ups, usps := r.receiveTwo()
	r.scan("ACT-MOVE", 10*time.Second, true)
	p1 := r.scan(upsCode, 11*time.Second, true)
	r.scan(uspsCode, 12*time.Second, true)
	waitfor.True(t, 5*time.Second, "two parcels wait for a location", func() bool { return r.st.Mode().Waiting == 2 })
	r.stop()
	// The location is committed, and the power goes after the first move
	// was committed (it resolves the first parcel's scan only).
	loc := r.scan("SHELF-D04", 13*time.Second, false)
	mv := event.Event{Appliance: "mr-test", Type: event.TypeParcelMoved, Time: loc.Time, Device: "dock-scanner", Station: "dock-1",
		ScanID: p1.ID, ParcelID: ups.ID, Location: "SHELF-D04", By: "dock-scanner", Resolves: []string{p1.ID}}
	if _, err := r.store.Append(context.Background(), mv); err != nil {
		t.Fatal(err)
	}
	r.store.Close()

	r2 := newRig(t, path, func(c *Config) { c.Scale, c.Printer = "", "" })
	r2.t0 = r.t0
	r2.run()
	if p := r2.parcel(usps.ID); p.State != store.StateStored || p.Location != "SHELF-D04" {
		t.Fatalf("the second parcel after the restart: %+v", p)
	}
	if n := len(r2.events(event.TypeParcelMoved)); n != 2 {
		t.Fatalf("%d moves, want 2", n)
	}
}

func TestManualEntryAndRoundCodesSwitchNothing(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	_, usps := r.receiveTwo()
	r.scan("RND-NORTH", 3*time.Second, true) // right after a parcel, in receive mode
	m, err := r.store.Append(context.Background(), event.Event{Appliance: "mr-test", Type: event.TypeScan, Time: r.t0.Add(4 * time.Second),
		Device: "page", Station: "dock-1", Manual: true, Barcode: []byte("ACT-MOVE")})
	if err != nil {
		t.Fatal(err)
	}
	r.st.Submit(m)
	waitfor.True(t, 5*time.Second, "both scans resolved", func() bool { return r.unresolved() == 0 })
	if r.st.Mode().Mode != ModeReceive {
		t.Fatal("a typed action code switched the mode")
	}
	if p := r.parcel(usps.ID); p.Location != "" {
		t.Fatalf("a round code became a location: %+v", p)
	}
	if n := len(r.events(event.TypeParcelUpdated)); n != 0 {
		t.Fatalf("%d updates", n)
	}
}

func TestTwoDLabelGivesCarrierTrackingAndWeight(t *testing.T) {
	r := newRig(t, "", func(c *Config) { c.Scale, c.Printer = "", "" })
	r.run()
	maxi := "]U0[)>\x1e01\x1d96841706672\x1d840\x1d001\x1d1Z12345675\x1dUPSN\x1d12345E\x1d089\x1d\x1d1/1\x1d10.1\x1dY\x1d\x1dSALT LAKE CITY\x1dUT\x1e\x04"
	r.scan(maxi, 0, true)
	r.scan("[)>\x1e01\x1d96841706672\x1d840", time.Second, true) // cut off
	got := r.waitEvents(event.TypeParcelReceived, 2)
	p := got[0].Parcel
	if p.Carrier != "ups" || p.Tracking != "1Z12345675" || p.Label == nil || p.Label.ShipTo.City != "SALT LAKE CITY" || p.Raw != maxi {
		t.Fatalf("2D parcel %+v label %+v", p, p.Label)
	}
	if w := p.Weight; w == nil || w.Value != 10.1 || w.Unit != "lb" || w.Grams != 4581.28 || w.Scale != "label" {
		t.Fatalf("weight from the label %+v", w)
	}
	if l := got[1].Parcel.Label; l == nil || !strings.Contains(l.Error, "truncated") || got[1].Parcel.Raw == "" {
		t.Fatalf("a cut-off label: %+v", got[1].Parcel)
	}
	// Two different labels that cannot be read are two parcels, not a
	// parcel and its duplicate.
	r.scan("[)>\x1e06\x1dKPO-1001\x1e\x04", 2*time.Second, true)
	r.scan("[)>\x1e06\x1dKPO-2002\x1e\x04", 3*time.Second, true)
	if got := r.waitEvents(event.TypeParcelReceived, 4); len(got) != 4 || r.st.Stats().Duplicates != 0 {
		t.Fatalf("%d parcels, %d duplicates", len(got), r.st.Stats().Duplicates)
	}
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// stroke draws one stroke with a finger on the element sel: a touch that
// starts at the first point, moves through the others and lifts. The
// points are fractions of the element's box.
func stroke(sel string, pts ...[2]float64) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		box, err := chromedp.Evaluate[[]float64](`(() => { const e = document.querySelector(`+"`"+sel+"`"+`);
			e.scrollIntoView({block: "center"}); const r = e.getBoundingClientRect();
			return [r.left, r.top, r.width, r.height]; })()`)(ctx, tg)
		if err != nil {
			return err
		}
		at := func(p [2]float64) []*input.TouchPoint {
			return []*input.TouchPoint{{X: box[0] + p[0]*box[2], Y: box[1] + p[1]*box[3]}}
		}
		if _, err := cdp.Call(ctx, tg, input.DispatchTouchEvent, input.DispatchTouchEventParams{Type: input.DispatchTouchEventTypeTouchStart, TouchPoints: at(pts[0])}); err != nil {
			return err
		}
		for _, p := range pts[1:] {
			if _, err := cdp.Call(ctx, tg, input.DispatchTouchEvent, input.DispatchTouchEventParams{Type: input.DispatchTouchEventTypeTouchMove, TouchPoints: at(p)}); err != nil {
				return err
			}
		}
		_, err = cdp.Call(ctx, tg, input.DispatchTouchEvent, input.DispatchTouchEventParams{Type: input.DispatchTouchEventTypeTouchEnd, TouchPoints: []*input.TouchPoint{}})
		return err
	})
}

// TestHandOverAndRoundInChromium drives the hand-over and the round views
// in a real Chromium on a touch-emulated 360×740 viewport against the real
// binary: a signature drawn by touch reaches the cloud as its hash and
// renders back the same strokes; a reload mid-signature keeps the parcels
// and the ticks; a round done while the box is out of reach is sent once
// it is back, exactly once per action however often the page retries.
func TestHandOverAndRoundInChromium(t *testing.T) {
	chrome := chromiumPath(t)
	s := newSetup(t, "mr-handover-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-handover-01/events")
	scanDev, webPort, devices := pageConfig(t, s, custodyCodes)
	cfgPath := s.config(t, s.broker.URL(), devices)
	p := startDaemon(t, cfgPath)
	p.waitLog(t, "status page", 10*time.Second)
	p.waitLog(t, "uplink connected", 10*time.Second)
	p.waitLog(t, "scanner connected", 10*time.Second)

	// Two parcels for EMP-0042 at the counter, three for the round.
	codes := []string{"EMP-0042", "1Z999AA10123456784", "EMP-0042", "9400111899223855718403",
		"EMP-0050", "PKG-ROUND-1", "EMP-0050", "PKG-ROUND-2", "EMP-0050", "PKG-ROUND-3"}
	for _, c := range codes {
		if err := scanDev.Scan(c); err != nil {
			t.Fatal(err)
		}
	}
	received := func(ms []mqtttest.Message) (out []event.Event) {
		for _, m := range ms {
			if ev, err := event.Decode(m.Payload); err == nil && ev.Type == event.TypeParcelReceived {
				out = append(out, ev)
			}
		}
		return out
	}
	msgs := sub.WaitFor(t, 20*time.Second, "five parcels", func(ms []mqtttest.Message) bool { return len(received(ms)) >= 5 })
	rcv := received(msgs)
	if rcv[0].Recipient != "EMP-0042" || rcv[4].Recipient != "EMP-0050" {
		t.Fatalf("recipients not attached: %+v", rcv)
	}

	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", webPort))
	base := "http://" + px.ln.Addr().String()
	b := newBrowser(t, chrome, p, "handover-failure.png", 360, 740)
	run, waitText, waitJS := b.run, b.waitText, b.waitJS
	// fits checks that a view is usable at 360 px: nothing wider than the
	// screen (a wider page is zoomed out on a handheld).
	fits := func(view string) chromedp.Action[chromedp.Void] {
		return waitJS(view+" fits 360 px", `document.documentElement.scrollWidth <= 360`)
	}
	run("touch phone", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile, chromedp.EmulateTouch))
	run("log in", b.login(base))

	// The counter finds a person by name in the directory.
	people := filepath.Join(s.dir, "people.csv")
	os.WriteFile(people, []byte("id,name,email,location,badges,delegates,active\nE42,Jürgen Müller,,MS-2.14,EMP-0042,,true\n"), 0o644)
	var out, errOut strings.Builder
	if code := Main([]string{"directory", "import", "--config", cfgPath, people}, &out, &errOut); code != 0 {
		t.Fatalf("directory import: %s", errOut.String())
	}
	run("find a person by name",
		chromedp.Navigate(base+"/#handover"),
		chromedp.WaitVisible(chromedp.CSS("#ho-who")),
		chromedp.SendKeys(chromedp.CSS("#ho-who"), "mueller jurgen\r"),
		chromedp.WaitVisible(chromedp.CSS(`#ho-people button[data-person="E42"]`)),
		chromedp.Click(chromedp.CSS(`#ho-people button[data-person="E42"]`)),
		waitText("#ho-msg", "Offene Sendungen für Jürgen Müller"),
		waitJS("two parcels listed", `document.querySelectorAll('#ho-parcels tbody tr').length === 2`))

	// The counter: the recipient's badge is scanned (keystrokes and Enter).
	run("find the recipient",
		chromedp.Navigate(base+"/#handover"),
		chromedp.WaitVisible(chromedp.CSS("#ho-who")),
		chromedp.SendKeys(chromedp.CSS("#ho-who"), "EMP-0042\r"),
		waitText("#ho-msg", "Offene Sendungen für EMP-0042"),
		waitJS("two parcels listed", `document.querySelectorAll('#ho-parcels tbody tr').length === 2`))
	first := rcv[0].ID
	run("tick one, choose signature, sign half",
		chromedp.Click(chromedp.CSS(`#ho-parcels input[data-id="`+first+`"]`)),
		chromedp.Click(chromedp.CSS(`#ho-methods button[data-method="signature"]`)),
		chromedp.WaitVisible(chromedp.CSS("#ho-canvas")),
		chromedp.ScrollIntoView(chromedp.CSS("#ho-canvas")),
		stroke("#ho-canvas", [2]float64{0.1, 0.5}, [2]float64{0.2, 0.2}, [2]float64{0.3, 0.8}, [2]float64{0.4, 0.3}),
		waitText("#ho-submit", "1 Sendung(en) übergeben"),
		fits("hand-over"))
	before, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`hoPad.path()`))
	if err != nil || !strings.HasPrefix(before, "M ") || strings.Count(before, "L ") < 3 {
		t.Fatalf("path after one stroke: %q %v", before, err)
	}
	// A reload mid-signature keeps the parcels, the tick and the stroke.
	run("reload",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS("#ho-canvas")),
		waitJS("the parcels are back", `document.querySelectorAll('#ho-parcels tbody tr').length === 2`),
		waitJS("the tick is back", `document.querySelector('#ho-parcels input[data-id="`+first+`"]').checked`),
		waitJS("the stroke is back", `hoPad.path() === `+fmt.Sprintf("%q", before)),
		chromedp.ScrollIntoView(chromedp.CSS("#ho-canvas")),
		stroke("#ho-canvas", [2]float64{0.5, 0.6}, [2]float64{0.7, 0.4}, [2]float64{0.9, 0.7}))
	signed, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`hoPad.path()`))
	if err != nil || !strings.HasPrefix(signed, before+" M ") {
		t.Fatalf("path after the second stroke: %q %v", signed, err)
	}
	run("hand over",
		chromedp.Click(chromedp.CSS("#ho-submit")),
		waitJS("sent", `document.querySelector('#ho-results li[data-state="sent"]') !== null`),
		waitJS("the stored signature shown", `document.querySelector('#ho-results li svg path') !== null`))
	stored, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('#ho-results li svg path').getAttribute('d')`))
	if err != nil || stored != signed {
		t.Fatalf("the stored signature renders %q, drawn %q (%v)", stored, signed, err)
	}
	b.screenshot("handover.png")
	sum := sha256.Sum256([]byte(signed))
	msgs = sub.WaitFor(t, 15*time.Second, "the delivery", func(ms []mqtttest.Message) bool {
		for _, m := range ms {
			if ev, err := event.Decode(m.Payload); err == nil && ev.Type == event.TypeParcelDelivered {
				return true
			}
		}
		return false
	})
	for _, m := range msgs {
		ev, _ := event.Decode(m.Payload)
		if ev.Type != event.TypeParcelDelivered {
			continue
		}
		if ev.ParcelID != first || ev.Proof == nil || ev.Proof.Method != "signature" || ev.Proof.SHA256 != hex.EncodeToString(sum[:]) ||
			ev.Proof.Size != len(signed) || ev.By != "clara" || ev.Recipient != "EMP-0042" {
			t.Fatalf("parcel.delivered at the cloud = %+v %+v", ev, ev.Proof)
		}
	}

	// The other parcel with its pickup PIN (the cloud sends it to the
	// recipient; here it is read off the parcel.received).
	second := rcv[1]
	if len(second.PickupPIN) != 6 {
		t.Fatalf("pickup PIN %q", second.PickupPIN)
	}
	run("PIN hand-over",
		chromedp.Click(chromedp.CSS("#ho-reset")), // the list is empty until the search below answers
		waitJS("no parcels listed", `document.querySelectorAll('#ho-parcels tbody tr').length === 0`),
		chromedp.SendKeys(chromedp.CSS("#ho-who"), "EMP-0042\r"),
		waitJS("one parcel left", `document.querySelectorAll('#ho-parcels tbody tr').length === 1`),
		chromedp.Click(chromedp.CSS(`#ho-methods button[data-method="pin"]`)),
		chromedp.Click(chromedp.CSS(`#ho-parcels input.ho-tick[data-id="`+second.ID+`"]`)),
		chromedp.SendKeys(chromedp.CSS(`#ho-parcels input.ho-pin[data-id="`+second.ID+`"]`), second.PickupPIN),
		chromedp.Click(chromedp.CSS("#ho-submit")),
		waitJS("sent", `document.querySelector('#ho-results li[data-state="sent"][data-parcel="`+second.ID+`"]') !== null`))
	if left, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`localStorage.getItem("mailroomd.outbox")`)); err != nil ||
		strings.Contains(left, second.PickupPIN) || strings.Contains(left, "M ") {
		t.Fatalf("the browser keeps a PIN or a signature it no longer needs: %s %v", left, err)
	}

	// The round: the box goes out of reach, three deliveries by badge are
	// done on the handheld, then it comes back.
	run("round view", chromedp.Navigate(base+"/#round"), chromedp.WaitVisible(chromedp.CSS("#rd-scan")),
		chromedp.Click(chromedp.CSS(`#rd-modes button[data-mode="deliver"]`)))
	px.cut()
	run("three deliveries offline",
		waitText("#notice", "Verbindung zum Gerät unterbrochen"),
		chromedp.SendKeys(chromedp.CSS("#rd-scan"), "EMP-0050\r"),
		waitText("#rd-msg", "Empfänger: EMP-0050"),
		chromedp.SendKeys(chromedp.CSS("#rd-scan"), "PKG-ROUND-1\r"),
		chromedp.SendKeys(chromedp.CSS("#rd-scan"), "PKG-ROUND-2\r"),
		chromedp.SendKeys(chromedp.CSS("#rd-scan"), "PKG-ROUND-3\r"),
		waitJS("three not sent", `document.querySelectorAll('#rd-outbox li[data-state="pending"]').length === 3`),
		waitText("#outbox-badge", "3 nicht gesendet"),
		fits("round"))
	b.screenshot("round-offline.png")
	// The requests as the page sends them, kept to send again below as a
	// page does whose answers were lost.
	run("keep the requests", chromedp.Evaluate[chromedp.Void](
		`window.sentBodies = outbox.filter((i) => i.view === "round").map((i) => JSON.stringify(i.body))`))
	time.Sleep(4 * time.Second) // at least one more try while out of reach
	px.restore()
	run("sent when back", waitJS("three sent", `document.querySelectorAll('#rd-outbox li[data-state="sent"]').length === 3`),
		chromedp.WaitNotVisible(chromedp.CSS("#outbox-badge")))
	// The page sends every action twice more, as after lost answers.
	replays, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`(async () => {
		let replayed = 0;
		for (let round = 0; round < 2; round++) {
			for (const body of window.sentBodies) {
				const r = await fetch("/api/custody", { method: "POST", credentials: "same-origin",
					headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf }, body });
				if ((await r.json()).replayed) replayed++;
			}
		}
		return replayed;
	})()`, chromedp.EvalAwaitPromise))
	if err != nil || replays != 6 {
		t.Fatalf("%d of 6 retries answered as replays (%v)", replays, err)
	}
	b.screenshot("round.png")

	time.Sleep(time.Second) // anything wrongly committed would be published by now
	bySeq, _ := mqtttest.Delivered(t, sub.Messages())
	gapless(t, bySeq)
	delivered := map[string]int{}
	for _, ev := range bySeq {
		if ev.Type == event.TypeParcelDelivered {
			delivered[ev.ParcelID]++
			if ev.ParcelID == second.ID && (ev.Proof.Method != "pin" || ev.Proof.Badge != "") {
				t.Fatalf("PIN delivery %+v %+v", ev, ev.Proof)
			}
			if ev.ParcelID != first && ev.ParcelID != second.ID && (ev.Proof.Method != "badge" || ev.Proof.Badge != "EMP-0050" || ev.Recipient != "EMP-0050") {
				t.Fatalf("round delivery %+v %+v", ev, ev.Proof)
			}
		}
	}
	if len(delivered) != 5 {
		t.Fatalf("deliveries by parcel %v, want 5 parcels", delivered)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Fatalf("parcel %s delivered %d times", id, n)
		}
	}
}

// TestRecipientTypeAheadAndNeedsRecipientInChromium: at the manual entry
// the clerk picks the recipient from the directory as they type (the
// event names the person by id, not by the text typed); a parcel for a
// name nobody has waits on the needs-recipient view until the clerk finds
// the person there, which the cloud gets as parcel.updated.
func TestRecipientTypeAheadAndNeedsRecipientInChromium(t *testing.T) {
	chrome := chromiumPath(t)
	s := newSetup(t, "mr-needs-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-needs-01/events")
	_, webPort, devices := pageConfig(t, s, custodyCodes)
	cfgPath := s.config(t, s.broker.URL(), devices)
	people := filepath.Join(s.dir, "people.csv")
	os.WriteFile(people, []byte("id,name,email,location,badges,delegates,active\n"+
		"E1,Jürgen Müller,,MS-2.14,EMP-0042,,true\nE2,Anna Weiß,,MS-3.01,EMP-0077,,true\n"), 0o644)
	var out, errOut strings.Builder
	if code := Main([]string{"directory", "import", "--config", cfgPath, people}, &out, &errOut); code != 0 {
		t.Fatalf("directory import: %s", errOut.String())
	}
	p := startDaemon(t, cfgPath)
	p.waitLog(t, "status page", 10*time.Second)
	p.waitLog(t, "uplink connected", 10*time.Second)
	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	b := newBrowser(t, chrome, p, "needs-failure.png", 360, 740)
	run, waitJS := b.run, b.waitJS
	run("log in", b.login(base))
	byType := eventsOfType
	received := byType(event.TypeParcelReceived)

	run("a parcel for a person picked as the name is typed",
		chromedp.Navigate(base+"/#status"),
		chromedp.WaitVisible(chromedp.CSS("#manual-tracking")),
		chromedp.SendKeys(chromedp.CSS("#manual-tracking"), "1Z999AA10123456784"),
		chromedp.SendKeys(chromedp.CSS("#manual-recipient"), "mueller jue"),
		chromedp.WaitVisible(chromedp.CSS(`#manual-suggest li[data-person="E1"]`)),
		chromedp.Click(chromedp.CSS(`#manual-suggest li[data-person="E1"]`)),
		waitJS("the name filled in", `document.querySelector('#manual-recipient').value === 'Jürgen Müller'`),
		chromedp.Click(chromedp.CSS("#manual-submit")))
	msgs := sub.WaitFor(t, 15*time.Second, "the parcel", func(ms []mqtttest.Message) bool { return len(received(ms)) >= 1 })
	if got := received(msgs)[0]; got.RecipientID != "E1" || got.RecipientMatch != "manual" || got.RecipientName != "Jürgen Müller" || got.Recipient != "" {
		t.Fatalf("the parcel picked for E1: %+v", got)
	}
	scans := byType(event.TypeScan)(msgs)
	if len(scans) != 1 || scans[0].Recipient != "" || scans[0].RecipientID != "E1" {
		t.Fatalf("the manual entry's scan: %+v", scans)
	}

	run("a parcel for a name nobody has",
		chromedp.SendKeys(chromedp.CSS("#manual-tracking"), "9400111899223855718403"),
		chromedp.SendKeys(chromedp.CSS("#manual-recipient"), "Frau Unbekannt"),
		chromedp.Click(chromedp.CSS("#manual-submit")))
	msgs = sub.WaitFor(t, 15*time.Second, "the second parcel", func(ms []mqtttest.Message) bool { return len(received(ms)) >= 2 })
	lost := received(msgs)[1]
	if lost.RecipientMatch != "none" || lost.RecipientID != "" || lost.Recipient != "Frau Unbekannt" {
		t.Fatalf("the parcel nobody fits: %+v", lost)
	}
	item := `#needs-list li[data-parcel="` + lost.ID + `"]`
	run("the clerk finds the person on the needs-recipient view",
		chromedp.Navigate(base+"/#needs"),
		chromedp.WaitVisible(chromedp.CSS(item)),
		waitJS("one parcel needs a recipient", `document.querySelector('#needs-count').textContent.trim() === '1'`),
		chromedp.SendKeys(chromedp.CSS(item+" input.needs-search"), "anna weiss"),
		chromedp.WaitVisible(chromedp.CSS(item+` .suggest li[data-person="E2"]`)),
		chromedp.Click(chromedp.CSS(item+` .suggest li[data-person="E2"]`)),
		waitJS("the list is empty", `document.querySelectorAll('#needs-list li[data-parcel]').length === 0`))
	updated := byType(event.TypeParcelUpdated)
	msgs = sub.WaitFor(t, 15*time.Second, "the assignment", func(ms []mqtttest.Message) bool { return len(updated(ms)) >= 1 })
	if got := updated(msgs)[0]; got.ParcelID != lost.ID || got.RecipientID != "E2" || got.RecipientMatch != "manual" || got.By != "clara" {
		t.Fatalf("the assignment: %+v", got)
	}
}

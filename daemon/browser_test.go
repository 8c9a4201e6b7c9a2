package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/drivers/serialtest"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/mqtttest"
)

// chromiumPath finds Debian's chromium. Without it the test fails: make
// test installs it, and CI must never skip the browser test.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: run `make deps` (installs Debian's chromium)")
	return ""
}

// proxy is a loopback TCP proxy whose link the test can cut and restore,
// as when the clerk's PC loses the network to the box.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	up     bool
	conns  []net.Conn
}

func startProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, up: true}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			up := p.up
			p.mu.Unlock()
			if !up {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.up = true
	p.mu.Unlock()
}

// browser is a headless Chromium for one test, with the steps the tests
// share.
type browser struct {
	t   *testing.T
	ctx context.Context
	p   *proc
	// failShot is the screenshot file written when a step fails.
	failShot string
}

// newBrowser starts Chromium with a German locale at the given window
// size; it is closed when the test ends.
func newBrowser(t *testing.T, chrome string, p *proc, failShot string, w, h int, extra ...chromedp.ExecAllocatorOption) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("headless", "new"), chromedp.WindowSize(w, h), chromedp.Flag("lang", "de-DE"),
		chromedp.Flag("accept-lang", "de-DE,de"))
	opts = append(opts, extra...)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(func() { tcancel(); cancel(); acancel() })
	return &browser{t: t, ctx: ctx, p: p, failShot: failShot}
}

// run does the steps of one part of a test; a failure ends the test with a
// screenshot and the daemon's log.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		png, _ := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		os.WriteFile(filepath.Join(artifactDir(b.t), b.failShot), png, 0o644)
		b.t.Fatalf("%s: %v\ndaemon log:\n%s", what, err, b.p.log.String())
	}
}

// until polls the page until ok holds or the step's time runs out.
func (b *browser) until(what string, ok func(ctx context.Context, tg *chromedp.Target) bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for !ok(ctx, tg) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		return nil
	})
}

// waitText waits until the visible element sel contains want.
func (b *browser) waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return b.until(fmt.Sprintf("%q in %s", want, sel), func(ctx context.Context, tg *chromedp.Target) bool {
		got, err := chromedp.TextContent(chromedp.CSS(sel), chromedp.NodeVisible)(ctx, tg)
		return err == nil && strings.Contains(got, want)
	})
}

// waitAttr waits until sel's attribute name is want.
func (b *browser) waitAttr(sel, name, want string) chromedp.Action[chromedp.Void] {
	return b.until(fmt.Sprintf("%s=%q on %s", name, want, sel), func(ctx context.Context, tg *chromedp.Target) bool {
		got, err := chromedp.AttributeValue(chromedp.CSS(sel), name)(ctx, tg)
		return err == nil && got.Value == want
	})
}

// waitJS waits until the expression is true.
func (b *browser) waitJS(what, expr string) chromedp.Action[chromedp.Void] {
	return b.until(what, func(ctx context.Context, tg *chromedp.Target) bool {
		ok, err := chromedp.Evaluate[bool](expr)(ctx, tg)
		return err == nil && ok
	})
}

// login signs the clerk clara in on the page at base and waits for the
// page to show the link state in German.
func (b *browser) login(base string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-submit")),
		chromedp.SendKeys(chromedp.CSS("#user"), "clara"),
		chromedp.SendKeys(chromedp.CSS("#password"), "clerk-password"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		b.waitText("#link-state", "Verbunden"))
}

// screenshot writes the page to var/test-artifacts.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifactDir(b.t), name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// pageConfig is the devices section of the browser tests: a PTY scanner
// at station dock-1, extra configuration, and the page on a free loopback
// port for the clerk clara (password clerk-password).
func pageConfig(t *testing.T, s *setup, extra string) (scanDev *serialtest.Scanner, webPort int, devices string) {
	scanDev = serialtest.New(t, filepath.Join(s.dir, "ttyScanner"))
	hash, _ := bcrypt.GenerateFromPassword([]byte("clerk-password"), bcrypt.MinCost)
	webPort = mqtttest.FreePort(t)
	devices = fmt.Sprintf(`  - {name: dock-scanner, kind: scanner, driver: serial-line, port: %s, reconnect_max: 200ms}
stations:
  - {name: dock-1, scanner: dock-scanner}
%s
web:
  listen: 127.0.0.1:%d
  users:
    - {name: clara, role: clerk, password_hash: "%s"}`, scanDev.Link, extra, webPort, hash)
	return scanDev, webPort, devices
}

// artifactDir is where screenshots go: $TEST_ARTIFACTS, or var/test-artifacts.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "var", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStatusPageInChromium(t *testing.T) {
	chrome := chromiumPath(t)
	s := newSetup(t, "mr-web-01")
	sub := s.broker.Subscribe(t, "cloud", "mailroom/v1/mr-web-01/events")
	scanDev, webPort, devices := pageConfig(t, s, "")
	p := startDaemon(t, s.config(t, s.broker.URL(), devices))
	p.waitLog(t, "status page", 10*time.Second)
	p.waitLog(t, "uplink connected", 10*time.Second)
	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", webPort))
	base := "http://" + px.ln.Addr().String()

	b := newBrowser(t, chrome, p, "status-page-failure.png", 1100, 1400)
	ctx, run, waitText, waitAttr := b.ctx, b.run, b.waitText, b.waitAttr

	// Log in; a wrong password first.
	run("wrong password",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-submit")),
		chromedp.SendKeys(chromedp.CSS("#user"), "clara"),
		chromedp.SendKeys(chromedp.CSS("#password"), "wrong"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		waitText("#login-error", "falsch"))
	run("log in",
		chromedp.SendKeys(chromedp.CSS("#user"), "clara"),
		chromedp.SendKeys(chromedp.CSS("#password"), "clerk-password"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		waitText("#link-state", "Verbunden"),
		waitText("[data-t=devices]", "Geräte"),
		// The test's client certificate expires within a day: the alert
		// has a German headline above the box's own text.
		waitText("#alerts", "Client-Zertifikat läuft bald ab"),
		waitText("#alerts", "the client certificate expires on"))

	// A scan on the PTY appears without a reload.
	if err := scanDev.Scan("1Z999AA10123456784"); err != nil {
		t.Fatal(err)
	}
	run("scan appears", waitText("#events tbody", "1Z999AA10123456784"), waitText("#events tbody", "ups"))

	// A refused manual entry is explained in the clerk's language (blanks
	// pass the browser's own check; the box says what is wrong).
	run("manual entry refused",
		chromedp.SendKeys(chromedp.CSS("#manual-tracking"), "   "),
		chromedp.Click(chromedp.CSS("#manual-submit")),
		waitText("#manual-result", "Nicht erfasst: Bitte eine Sendungsnummer"))

	// A manual entry goes through the same path and reaches the broker.
	run("manual entry",
		chromedp.Clear(chromedp.CSS("#manual-tracking")),
		chromedp.SendKeys(chromedp.CSS("#manual-tracking"), "9400111899223855718403"),
		chromedp.SendKeys(chromedp.CSS("#manual-recipient"), "Frau Müller"),
		chromedp.SendKeys(chromedp.CSS("#manual-weight"), "1.2"),
		chromedp.Click(chromedp.CSS("#manual-submit")),
		waitText("#manual-result", "Erfasst"),
		waitText("#events tbody", "9400111899223855718403"))
	msgs := sub.WaitFor(t, 15*time.Second, "the manual parcel", func(ms []mqtttest.Message) bool {
		for _, m := range ms {
			if ev, err := event.Decode(m.Payload); err == nil && ev.Type == event.TypeParcelReceived && ev.Manual {
				return true
			}
		}
		return false
	})
	for _, m := range msgs {
		ev, _ := event.Decode(m.Payload)
		if ev.Type == event.TypeParcelReceived && ev.Manual {
			if ev.Parcel.Carrier != "usps" || ev.Recipient != "Frau Müller" || ev.Parcel.Weight == nil || ev.Parcel.Weight.Grams != 1200 {
				t.Fatalf("manual parcel at the broker = %+v %+v", ev, ev.Parcel)
			}
		}
	}

	// The language switch.
	run("switch to English", chromedp.Click(chromedp.CSS("#lang-en")), waitText("[data-t=devices]", "Devices"),
		waitText("#link-state", "Connected"), waitText("#manual-result", "Recorded as no."), waitAttr("#lang-en", "aria-pressed", "true"),
		waitText("#alerts", "Client certificate expires soon"))

	// The link to the box drops: a notice; it comes back: updates resume.
	px.cut()
	run("notice on drop", waitText("#notice", "Connection to the box lost"))
	px.restore()
	run("back", chromedp.WaitNotVisible(chromedp.CSS("#notice")))
	scanDev.Scan("RB123456785GB")
	run("scan after reconnect", waitText("#events tbody", "RB123456785GB"))

	// While the cloud is out of reach a parcel scanned is recorded, and
	// its row says so as a good state, not a warning; once sent, "sent".
	s.broker.Stop()
	p.waitLog(t, "uplink down", 15*time.Second)
	scanDev.Scan("9400111899223855718410")
	row := `Array.from(document.querySelectorAll('#events tbody tr')).find(tr => tr.textContent.includes('9400111899223855718410'))`
	run("recorded while offline", b.waitJS("recorded, being sent", row+`?.cells[5].className === 'recorded' && `+row+`.cells[5].textContent === 'recorded, being sent' && `+row+`.cells[5].title.startsWith('Safely recorded on the box')`))
	s.broker.Start()
	run("sent once back", b.waitJS("sent", row+`?.cells[5].className === 'ok' && `+row+`.cells[5].textContent === 'sent'`))

	// A duplicate scan is no row of its own: the list shows parcels only.
	// The next parcel is the marker that the duplicate was handled.
	scanDev.Scan("RB123456785GB")
	scanDev.Scan("1Z12345E0305271684")
	run("marker parcel", waitText("#events tbody", "1Z12345E0305271684"))
	body, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS("#events tbody")))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(body, "RB123456785GB"); n != 1 {
		t.Fatalf("the parcel RB123456785GB is listed %d times after a duplicate scan, want once:\n%s", n, body)
	}
	// At 1280 px the time and station of a parcel stay on one line.
	run("1280 px", chromedp.EmulateViewport(1280, 900))
	oneLine, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`Array.from(document.querySelectorAll('#events tbody tr')).every(tr =>
		tr.cells.length < 2 || [0, 1].every(i => getComputedStyle(tr.cells[i]).whiteSpace === 'nowrap'))`))
	if err != nil {
		t.Fatal(err)
	}
	if !oneLine {
		t.Fatal("time or station wraps in the recent parcels at 1280 px")
	}

	b.screenshot("status-page.png")
	if strings.Contains(p.log.String(), "clerk-password") {
		t.Fatal("a password appears in the daemon log")
	}
}

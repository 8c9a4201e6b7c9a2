package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/health"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/station"
	"github.com/mailroomd/mailroomd/internal/store"
	"github.com/mailroomd/mailroomd/internal/uplink"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeStore struct {
	mu     sync.Mutex
	events []store.Stored
	broken bool
}

func (f *fakeStore) Stats(context.Context) (store.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s store.Stats
	for _, e := range f.events {
		if !e.Sent {
			s.Pending++
		}
	}
	return s, nil
}

func (f *fakeStore) Recent(_ context.Context, limit int, _ ...event.Type) ([]store.Stored, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Stored
	for i := len(f.events) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, f.events[i])
	}
	return out, nil
}

func (f *fakeStore) Check(context.Context) error {
	if f.broken {
		return errors.New("buffer closed")
	}
	return nil
}

type fakeHealth struct{}

func (fakeHealth) Active() []health.Condition {
	return []health.Condition{{Key: "uplink.disconnected", Severity: health.Critical, Message: "cloud unreachable"}}
}
func (fakeHealth) Devices() []health.DeviceStatus {
	return []health.DeviceStatus{{Name: "dock-printer", Kind: "printer", State: health.DeviceConnected}}
}

type fakeLink struct{}

func (fakeLink) State() uplink.LinkState {
	return uplink.LinkState{Connected: true, Broker: "mqtts://b:8883"}
}

type fakeActions struct {
	mu      sync.Mutex
	manual  []intake.Manual
	tests   []string
	reprint []string
	modes   []string
	handed  []string
}

func (f *fakeActions) Manual(_ context.Context, m intake.Manual) (event.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.manual = append(f.manual, m)
	return event.Event{ID: "id-1", Seq: int64(len(f.manual))}, nil
}
func (f *fakeActions) Reprint(st, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reprint = append(f.reprint, st+"/"+id)
	return nil
}
func (f *fakeActions) SetMode(st, mode string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modes = append(f.modes, st+"/"+mode)
	return nil
}
func (f *fakeActions) Modes() map[string]station.ModeView { return map[string]station.ModeView{} }
func (f *fakeActions) Handed(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handed = append(f.handed, id)
}
func (f *fakeActions) DeviceTest(_ context.Context, d string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tests = append(f.tests, d)
	return "test label queued", nil
}

type rig struct {
	t       *testing.T
	srv     *Server
	base    string
	actions *fakeActions
	store   *fakeStore
	fails   []string
	mu      sync.Mutex
}

func hash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func start(t *testing.T) *rig { return startWith(t, nil) }

func startWith(t *testing.T, mod func(*Options)) *rig {
	t.Helper()
	r := &rig{t: t, actions: &fakeActions{}, store: &fakeStore{}}
	opts := Options{Listen: "127.0.0.1:0", Appliance: "mr-test", Version: "test",
		Users: []User{{Name: "clara", Role: RoleClerk, PasswordHash: hash(t, "clerk-password")},
			{Name: "adam", Role: RoleAdmin, PasswordHash: hash(t, "admin-password")}},
		MaxFailures: 3, Lockout: time.Minute, FailureDelay: time.Millisecond,
		Store: r.store, Health: fakeHealth{}, Link: fakeLink{}, Actions: r.actions,
		Stations: []StationRef{{Name: "dock-1", HasPrinter: true}},
		Metrics:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("mailroomd_up 1\n")) }),
		OnLoginFailure: func(user, _ string, locked bool) {
			r.mu.Lock()
			r.fails = append(r.fails, user)
			r.mu.Unlock()
		}}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv)
	r.srv, r.base = srv, "http://"+srv.Addr()
	return r
}

// serve makes srv listen and serve until the test ends; a Run error then
// fails the test.
func serve(t testing.TB, srv *Server) {
	t.Helper()
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// client is a browser-like HTTP client with its own cookies.
func (r *rig) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DisableKeepAlives: true}
	r.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login submits the login form as a browser does and returns the response.
func (r *rig) login(c *http.Client, user, pw string) *http.Response {
	r.t.Helper()
	return r.loginB(r.t, c, user, pw)
}

func newJar() http.CookieJar {
	jar, _ := cookiejar.New(nil)
	return jar
}

func (r *rig) loginB(t testing.TB, c *http.Client, user, pw string) *http.Response {
	t.Helper()
	resp, err := c.Get(r.base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindSubmatch(body)
	if m == nil {
		t.Fatalf("login form without CSRF field:\n%s", body)
	}
	resp, err = c.PostForm(r.base+"/login", url.Values{"user": {user}, "password": {pw}, "csrf": {string(m[1])}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// get returns the response of a GET with its body read and closed.
func (r *rig) get(c *http.Client, path string) *http.Response {
	r.t.Helper()
	resp, err := c.Get(r.base + path)
	if err != nil {
		r.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (r *rig) csrf(c *http.Client) string {
	r.t.Helper()
	resp, err := c.Get(r.base + "/api/session")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ CSRF, Role string }
	json.NewDecoder(resp.Body).Decode(&s)
	return s.CSRF
}

// postBody sends a POST as a logged-in page would and returns the answer's
// status and body.
func (r *rig) postBody(c *http.Client, path, csrf, body string) (int, string) {
	r.t.Helper()
	resp := r.post(c, path, csrf, body)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// post sends a POST; the answer's body is read and kept in the response.
func (r *rig) post(c *http.Client, path, csrf, body string) *http.Response {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func TestLoginRightAndWrongPassword(t *testing.T) {
	r := start(t)
	c := r.client()
	if resp := r.get(c, "/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("page without login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := r.login(c, "clara", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	if resp := r.login(c, "nobody", "clerk-password"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", resp.StatusCode)
	}
	resp := r.login(c, "clara", "clerk-password")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right password: %d", resp.StatusCode)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie = %+v, want HttpOnly SameSite=Strict", cookie)
	}
	if resp := r.get(c, "/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("page after login: %d", resp.StatusCode)
	}
	if len(r.fails) != 2 {
		t.Fatalf("failed logins counted %d, want 2", len(r.fails))
	}
	// Logging out ends the session.
	r.post(c, "/logout", r.csrf(c), "{}")
	if resp := r.get(c, "/api/status"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status after logout: %d", resp.StatusCode)
	}
}

func TestLockoutAfterRepeatedFailures(t *testing.T) {
	r := start(t)
	c := r.client()
	for i := 0; i < 2; i++ {
		if resp := r.login(c, "clara", "guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, resp.StatusCode)
		}
	}
	if resp := r.login(c, "clara", "guess"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third failure: %d, want 429 (locked)", resp.StatusCode)
	}
	// Locked: even the right password is refused now.
	if resp := r.login(c, "clara", "clerk-password"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password while locked: %d", resp.StatusCode)
	}
	// Another user is not affected.
	if resp := r.login(r.client(), "adam", "admin-password"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("other user: %d", resp.StatusCode)
	}
}

func TestCSRFAndRoles(t *testing.T) {
	r := start(t)
	clerk, admin := r.client(), r.client()
	r.login(clerk, "clara", "clerk-password")
	r.login(admin, "adam", "admin-password")
	tok := r.csrf(clerk)
	body := `{"station":"dock-1","tracking":"1Z999AA10123456784","recipient":"EMP-1","weight":1.5,"unit":"kg"}`
	if resp := r.post(clerk, "/api/manual", "", body); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("manual entry without CSRF token: %d", resp.StatusCode)
	}
	if resp := r.post(clerk, "/api/manual", "forged", body); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("manual entry with a wrong token: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", r.base+"/api/manual", strings.NewReader(body))
	req.Header.Set("X-CSRF-Token", tok)
	req.Header.Set("Origin", "https://evil.example")
	if resp, _ := clerk.Do(req); resp.Body.Close() != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin manual entry: %d", resp.StatusCode)
	}
	if len(r.actions.manual) != 0 {
		t.Fatal("a refused request reached the daemon")
	}
	if resp := r.post(clerk, "/api/manual", tok, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("manual entry: %d", resp.StatusCode)
	}
	m := r.actions.manual[0]
	if m.Station != "dock-1" || m.Code != "1Z999AA10123456784" || m.Recipient != "EMP-1" || m.Weight == nil || m.Weight.Grams != 1500 {
		t.Fatalf("manual entry = %+v %+v", m, m.Weight)
	}
	// Each refusal names what is wrong by a stable code the page translates.
	for _, bad := range []struct{ body, code string }{
		{`{"station":"nope","tracking":"X"}`, "unknown_station"},
		{`{"station":"dock-1","tracking":"  "}`, "tracking_required"},
		{`{"station":"dock-1","tracking":"X","recipient":"` + strings.Repeat("r", 129) + `"}`, "recipient_too_long"},
		{`{"station":"dock-1","tracking":"X","weight":2,"unit":"stone"}`, "bad_weight"},
		{`{"station":"dock-1","tracking":"X","weight":-2,"unit":"kg"}`, "bad_weight"},
		{`{not json`, "malformed"},
		{`{"station":"dock-1","tracking":"X","recipient":"` + strings.Repeat("r", 9000) + `"}`, "malformed"}, // over 8 KiB
		{`{"station":"dock-1","tracking":"X","recipient":"` + strings.Repeat("ä", 129) + `"}`, "recipient_too_long"},
	} {
		status, body := r.postBody(clerk, "/api/manual", tok, bad.body)
		var got struct{ Error, Code string }
		if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusBadRequest || got.Code != bad.code || got.Error == "" {
			t.Errorf("manual %s: %d %s, want 400 with code %s", bad.body, status, body, bad.code)
		}
	}
	if len(r.actions.manual) != 1 {
		t.Fatalf("refused entries reached the intake: %+v", r.actions.manual)
	}
	// Lengths are counted in characters: 128 of "ä" (256 bytes) are taken.
	if status, body := r.postBody(clerk, "/api/manual", tok, `{"station":"dock-1","tracking":"`+strings.Repeat("ä", 128)+`"}`); status != http.StatusOK {
		t.Fatalf("a tracking number of 128 characters: %d %s", status, body)
	}
	r.actions.manual = r.actions.manual[:1]
	if resp := r.post(clerk, "/api/reprint", tok, `{"station":"dock-1","parcel_id":"p1"}`); resp.StatusCode != http.StatusOK || r.actions.reprint[0] != "dock-1/p1" {
		t.Fatalf("reprint by a clerk: %d %v", resp.StatusCode, r.actions.reprint)
	}
	if resp := r.post(clerk, "/api/device-test", tok, `{"device":"dock-printer"}`); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("device test by a clerk: %d", resp.StatusCode)
	}
	if resp := r.post(admin, "/api/device-test", r.csrf(admin), `{"device":"dock-printer"}`); resp.StatusCode != http.StatusOK || len(r.actions.tests) != 1 {
		t.Fatalf("device test by an admin: %d", resp.StatusCode)
	}
	// A session's token does not work for another session.
	if resp := r.post(admin, "/api/reprint", tok, `{"station":"dock-1","parcel_id":"p1"}`); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another session's token: %d", resp.StatusCode)
	}
}

func TestSecurityHeadersAndOpenEndpoints(t *testing.T) {
	r := start(t)
	c := r.client()
	for _, path := range []string{"/login", "/healthz", "/readyz", "/metrics", "/static/app.js"} {
		resp, err := c.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s without login: %d", path, resp.StatusCode)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, resp.Header)
		}
	}
	for _, path := range []string{"/", "/api/status", "/api/stream", "/api/session"} {
		resp := r.get(c, path)
		if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without login: %d", path, resp.StatusCode)
		}
	}
	r.store.broken = true
	if resp := r.get(c, "/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with a broken store: %d", resp.StatusCode)
	}
}

func TestLanguageFromAcceptLanguage(t *testing.T) {
	for _, tc := range []struct{ header, cookie, want string }{
		{"de-DE,de;q=0.9,en;q=0.8", "", "de"}, {"en-US,en;q=0.9", "", "en"}, {"fr-FR,de;q=0.5,en;q=0.4", "", "de"},
		{"", "", "en"}, {"de-DE", "en", "en"},
	} {
		req, _ := http.NewRequest("GET", "/", nil)
		req.Header.Set("Accept-Language", tc.header)
		if tc.cookie != "" {
			req.AddCookie(&http.Cookie{Name: "lang", Value: tc.cookie})
		}
		if got := lang(req); got != tc.want {
			t.Errorf("lang(%q, cookie %q) = %s, want %s", tc.header, tc.cookie, got, tc.want)
		}
	}
}

func TestStreamPushesStatus(t *testing.T) {
	r := start(t)
	c := r.client()
	r.login(c, "clara", "clerk-password")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.base+"/api/stream", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	next := func() Status {
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var s Status
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
		t.Fatal("stream ended")
		return Status{}
	}
	first := next()
	if first.Appliance != "mr-test" || !first.Link.Connected || len(first.Alerts) != 1 || len(first.Chart.Scans) != 24 {
		t.Fatalf("first status = %+v", first)
	}
	r.store.mu.Lock()
	r.store.events = append(r.store.events, store.Stored{Event: event.Event{ID: "e1", Seq: 1, Type: event.TypeParcelReceived,
		Station: "dock-1", Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z999AA10123456784",
			Weight: &event.Weight{Value: 2.5, Unit: "lb", Stable: true}}}})
	r.store.mu.Unlock()
	for {
		s := next()
		if len(s.Events) == 1 {
			if e := s.Events[0]; e.Carrier != "ups" || e.Weight != "2.5 lb" || e.Sent || s.Queue.Pending != 1 {
				t.Fatalf("pushed row = %+v, queue %+v", e, s.Queue)
			}
			break
		}
	}
}

func TestHistoryChart(t *testing.T) {
	h := NewHistory()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	h.Scan(now.Add(-10 * time.Minute))
	h.Scan(now.Add(-50 * time.Minute))
	h.Scan(now.Add(-70 * time.Minute))
	h.Scan(now.Add(-30 * time.Hour)) // outside the chart
	h.Pending(now.Add(-2*time.Hour), 7)
	h.Pending(now.Add(-2*time.Hour), 3)
	c, lastHour := h.chart(now)
	if lastHour != 2 || len(c.Scans) != 24 || c.Scans[23] != 1 || c.Scans[22] != 2 || c.Pending[21] != 7 {
		t.Fatalf("chart %v pending %v last hour %d", c.Scans, c.Pending, lastHour)
	}
}

func TestHTTPSWithSelfSignedCertificate(t *testing.T) {
	dir := t.TempDir()
	cert, fp, fresh, err := SelfSigned(dir, "0.0.0.0:8443", time.Now())
	if err != nil || !fresh || len(fp) != 95 {
		t.Fatalf("SelfSigned = %q %v %v", fp, fresh, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "web-selfsigned.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	_, fp2, fresh2, err := SelfSigned(dir, "0.0.0.0:8443", time.Now())
	if err != nil || fresh2 || fp2 != fp {
		t.Fatalf("second start made a new certificate: %q %v %v", fp2, fresh2, err)
	}

	srv, err := New(Options{Listen: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Users: []User{{Name: "clara", Role: RoleClerk, PasswordHash: hash(t, "clerk-password")}},
		Store: &fakeStore{}, Health: fakeHealth{}, Link: fakeLink{}, Actions: &fakeActions{}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv)

	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r := &rig{t: t, srv: srv, base: "https://" + srv.Addr()}
	resp := r.login(c, "clara", "clerk-password")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login over HTTPS: %d", resp.StatusCode)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && !ck.Secure {
			t.Fatal("session cookie not Secure over HTTPS")
		}
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no HSTS over HTTPS")
	}
	// Plain HTTP on the HTTPS port is answered, as docs/configuration.md
	// says: 400 and a sentence, no redirect, no page.
	plain, err := http.Get("http://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(plain.Body)
	plain.Body.Close()
	if plain.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Client sent an HTTP request to an HTTPS server.") {
		t.Fatalf("plain HTTP on the HTTPS port: %d %q", plain.StatusCode, body)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:80": true, "[::1]:8080": true,
		":8443": false, "0.0.0.0:8443": false, "192.168.1.5:8443": false, "mailroom.local:8443": false} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

// FuzzManualEntry feeds arbitrary bodies to the manual entry check: it
// never panics, and what it accepts is within bounds.
func FuzzManualEntry(f *testing.F) {
	f.Add([]byte(`{"station":"dock-1","tracking":"1Z999AA10123456784","recipient":"EMP-1","weight":1.5,"unit":"kg"}`))
	f.Add([]byte(`{"station":"dock-1","tracking":"","weight":-1}`))
	f.Add([]byte(`{not json`))
	srv, err := New(Options{Listen: "127.0.0.1:0", Store: &fakeStore{}, Health: fakeHealth{}, Link: fakeLink{},
		Actions: &fakeActions{}, Stations: []StationRef{{Name: "dock-1"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := srv.parseManual(context.Background(), body)
		if err != nil {
			return
		}
		if m.Code == "" || len(m.Code) > 128 || len(m.Recipient) > 128 || m.Station != "dock-1" ||
			(m.Weight != nil && (m.Weight.Value <= 0 || m.Weight.Value > 1e6)) {
			t.Fatalf("accepted %+v from %q", m, body)
		}
	})
}

// TestCSRFOriginMustMatchExactly: a valid token is not enough when the
// Origin is "null", another scheme, another port or another host.
func TestCSRFOriginMustMatchExactly(t *testing.T) {
	r := start(t)
	clerk := r.client()
	r.login(clerk, "clara", "clerk-password")
	tok := r.csrf(clerk)
	host := strings.TrimPrefix(r.base, "http://")
	_, port, _ := net.SplitHostPort(host)
	body := `{"station":"dock-1","tracking":"1Z999AA10123456784"}`
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"null", http.StatusForbidden},
		{"https://" + host, http.StatusForbidden},          // another scheme
		{"http://127.0.0.1:1", http.StatusForbidden},       // another port
		{"http://localhost:" + port, http.StatusForbidden}, // another host name
		{"http://" + host + "/path", http.StatusForbidden}, // not an origin
		{"http://user@" + host, http.StatusForbidden},      // not an origin
		{"http://" + strings.ToUpper(host), http.StatusOK}, // host names are case-insensitive
		{"http://" + host, http.StatusOK},
	} {
		req, _ := http.NewRequest("POST", r.base+"/api/manual", strings.NewReader(body))
		req.Header.Set("X-CSRF-Token", tok)
		req.Header.Set("Origin", tc.origin)
		resp, err := clerk.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Origin %q: %d, want %d", tc.origin, resp.StatusCode, tc.want)
		}
	}
	if n := len(r.actions.manual); n != 2 {
		t.Fatalf("%d manual entries reached the daemon, want 2 (the matching origins only)", n)
	}
}

// TestHostNamesGuardANetworkListen: on a non-loopback address only IP
// addresses and the configured names reach the page.
func TestHostNamesGuardANetworkListen(t *testing.T) {
	srv, err := New(Options{Listen: "192.0.2.10:8443", Appliance: "mr-test", HostNames: []string{"mailroom.example.com"},
		Store: &fakeStore{}, Health: fakeHealth{}, Link: fakeLink{}, Actions: &fakeActions{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want int
	}{
		{"192.0.2.10:8443", http.StatusOK},
		{"[2001:db8::1]:8443", http.StatusOK},
		{"mailroom.example.com:8443", http.StatusOK},
		{"MAILROOM.example.com.", http.StatusOK},
		{"attacker.example:8443", http.StatusMisdirectedRequest},
		{"mailroom.example.com.attacker.example", http.StatusMisdirectedRequest},
	} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Host %q: %d, want %d", tc.host, rec.Code, tc.want)
		}
	}
	// On loopback too: a foreign name pointed at 127.0.0.1 is refused.
	lo, err := New(Options{Listen: "127.0.0.1:8080", Appliance: "mr-test",
		Store: &fakeStore{}, Health: fakeHealth{}, Link: fakeLink{}, Actions: &fakeActions{}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{"127.0.0.1:8080": 200, "localhost:8080": 200, "[::1]:8080": 200,
		"attacker.example:8080": http.StatusMisdirectedRequest, "192.0.2.10:8080": http.StatusMisdirectedRequest} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		lo.Handler().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("loopback listen, Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}

// TestRecentListsParcelsOnly: badge and location scans at a station, and
// the scans behind parcels, are not rows of their own; a scan of a scanner
// at no station is.
func TestRecentListsParcelsOnly(t *testing.T) {
	r := start(t)
	now := time.Now()
	r.store.events = []store.Stored{
		{Event: event.Event{ID: "s1", Seq: 1, Type: event.TypeScan, Time: now, Station: "dock-1", Barcode: []byte("EMP-0042")}},
		{Event: event.Event{ID: "s2", Seq: 2, Type: event.TypeScan, Time: now, Station: "dock-1", Barcode: []byte("1Z999AA10123456784")}},
		{Event: event.Event{ID: "p1", Seq: 3, Type: event.TypeParcelReceived, Time: now, Station: "dock-1", ScanID: "s2",
			Parcel: &event.Parcel{Carrier: "ups", Tracking: "1Z999AA10123456784"}}},
		{Event: event.Event{ID: "s3", Seq: 4, Type: event.TypeScan, Time: now, Station: "dock-1", Barcode: []byte("SHELF-B07")}},
		{Event: event.Event{ID: "s4", Seq: 5, Type: event.TypeScan, Time: now, Device: "loose-scanner", Barcode: []byte("RAW-1")}},
	}
	st := r.srv.snapshot(context.Background())
	var ids []string
	for _, e := range st.Events {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"s4", "p1"}) {
		t.Fatalf("rows %v, want [s4 p1]: the station-less scan and the parcel only", ids)
	}
}

// TestSessionsSurviveANewPage: the page of the next config, sharing the
// Auth, keeps the clerks signed in; a user the new config no longer has is
// signed out.
func TestSessionsSurviveANewPage(t *testing.T) {
	auth := NewAuth(nil)
	users := []User{{Name: "clara", Role: RoleClerk, PasswordHash: hash(t, "clerk-password")}}
	newPage := func(users []User) *Server {
		srv, err := New(Options{Listen: "127.0.0.1:0", Appliance: "mr-test", Users: users, Auth: auth, FailureDelay: time.Millisecond,
			Store: &fakeStore{}, Health: fakeHealth{}, Link: fakeLink{}, Actions: &fakeActions{}})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	first := newPage(users)
	serve(t, first)
	r := &rig{t: t, srv: first, base: "http://" + first.Addr()}
	c := r.client()
	if resp := r.login(c, "clara", "clerk-password"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	u, _ := url.Parse(r.base)
	cookies := c.Jar.Cookies(u)
	ask := func(srv *Server) int {
		req := httptest.NewRequest("GET", "/api/session", nil)
		req.Host = "127.0.0.1"
		for _, ck := range cookies {
			req.AddCookie(ck)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	if code := ask(newPage(users)); code != http.StatusOK {
		t.Fatalf("the next config's page: %d, want 200 (still signed in)", code)
	}
	if code := ask(newPage([]User{{Name: "adam", Role: RoleAdmin, PasswordHash: hash(t, "admin-password")}})); code != http.StatusUnauthorized {
		t.Fatalf("a config without clara: %d, want 401", code)
	}
	if code := ask(newPage(users)); code != http.StatusUnauthorized {
		t.Fatalf("after clara was removed once: %d, want 401 (the session ended)", code)
	}
}

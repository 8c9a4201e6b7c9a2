// Package web serves the clerk status page (live devices, link, queue,
// scans and alerts, manual entry and reprint, in German and English), the
// Prometheus metrics and the health endpoints. The page and its assets are
// embedded in the binary and load nothing from elsewhere.
//
// Access: /healthz, /readyz and /metrics need no login (they carry no
// personal data and are meant for monitoring; keep web.listen on a
// management network or loopback if that matters). Everything else needs a
// session; state-changing requests also need the session's CSRF token.
package web

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mailroomd/mailroomd/internal/barcode"
	"github.com/mailroomd/mailroomd/internal/directory"
	"github.com/mailroomd/mailroomd/internal/event"
	"github.com/mailroomd/mailroomd/internal/intake"
	"github.com/mailroomd/mailroomd/internal/station"
)

//go:embed assets
var assets embed.FS

// Actions are what clerks and admins can do from the page.
type Actions interface {
	// Manual commits a typed-in code through the same path as a scan.
	Manual(ctx context.Context, m intake.Manual) (event.Event, error)
	// Reprint queues the label of a recent parcel again.
	Reprint(station, parcelID string) error
	// DeviceTest exercises a device (a test label on a printer) and says
	// what happened.
	DeviceTest(ctx context.Context, device string) (string, error)
	// SetMode switches a station's scan mode.
	SetMode(station, mode string) error
	// Modes returns every station's scan mode, by station name.
	Modes() map[string]station.ModeView
	// Handed tells the stations that a parcel was handed over from the page.
	Handed(parcelID string)
}

// Options configure the server.
type Options struct {
	Listen    string
	TLS       *tls.Config // nil serves plain HTTP
	Appliance string
	Site      string
	Version   string
	Users     []User
	// SessionTTL, MaxFailures and Lockout govern logins.
	SessionTTL  time.Duration
	MaxFailures int
	Lockout     time.Duration
	// Auth is the sign-in state, kept across the pages of successive
	// configs; nil makes a new one.
	Auth *Auth
	// HostNames are the host names (besides IP addresses) under which a
	// page on a non-loopback address may be reached; a request naming
	// another host is refused (DNS rebinding).
	HostNames []string
	// FailureDelay slows down every failed login.
	FailureDelay time.Duration
	Store        Store
	Health       Health
	Link         Link
	Actions      Actions
	// Custody reads and writes parcel states; Delivery is the hand-over
	// policy and Codes the internal barcode rules the handheld page uses.
	Custody Custody
	// People is the recipient directory; nil serves no search.
	People People
	// Photos are the photo settings; a nil Photos.Keeper takes no photos.
	Photos Photos
	// PrivacyID: events name a person of the directory by their id alone
	// (directory.privacy "id"), without their display name.
	PrivacyID bool
	Delivery  Delivery
	Codes     []CodeRule
	Stations  []StationRef
	History   *History
	// Metrics serves /metrics; nil serves none.
	Metrics http.Handler
	// OnLoginFailure is called after each failed login, with whether it
	// locked the user out.
	OnLoginFailure func(user, remote string, locked bool)
	// Changed receives a value whenever the status may have changed (a
	// commit); the page is updated at most every PushInterval otherwise.
	Changed      <-chan struct{}
	PushInterval time.Duration
	Now          func() time.Time
	Log          *slog.Logger
}

// Server is the web server of one daemon.
type Server struct {
	opts     Options
	users    map[string]*User
	sessions *sessions
	limiter  *limiter
	decoy    *decoy
	loopback bool // listening on a loopback address only
	mux      *http.ServeMux
	page     *template.Template
	login    *template.Template

	pins *pinFailures
	// badges recognises recipient codes (nil: no recipient rule is
	// configured, any code is taken as a badge).
	badges *barcode.Classifier

	mu      sync.Mutex
	latest  []byte
	waiters map[chan struct{}]struct{}

	srv *http.Server
	ln  net.Listener
}

// New returns a server; Run serves it.
func New(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.History == nil {
		opts.History = NewHistory()
	}
	if opts.PushInterval <= 0 {
		opts.PushInterval = time.Second
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 5
	}
	if opts.Lockout <= 0 {
		opts.Lockout = 15 * time.Minute
	}
	if opts.Auth == nil {
		opts.Auth = NewAuth(opts.Now)
	}
	opts.Auth.configure(opts.SessionTTL, opts.MaxFailures, opts.Lockout)
	s := &Server{opts: opts, users: map[string]*User{},
		sessions: opts.Auth.sessions, limiter: opts.Auth.limiter, pins: opts.Auth.pins,
		waiters: map[chan struct{}]struct{}{}}
	for i := range opts.Users {
		u := opts.Users[i]
		s.users[u.Name] = &u
	}
	s.decoy = newDecoy(opts.Users)
	var rules []barcode.Rule
	for _, c := range opts.Codes {
		if c.Kind == string(barcode.KindRecipient) {
			rules = append(rules, barcode.Rule{Kind: barcode.KindRecipient, Prefix: c.Prefix, Pattern: c.Pattern})
		}
	}
	if len(rules) > 0 {
		var err error
		if s.badges, err = barcode.NewClassifier(rules); err != nil {
			return nil, fmt.Errorf("web: recipient codes: %w", err)
		}
	}
	s.loopback = IsLoopback(opts.Listen)
	var err error
	if s.page, err = template.ParseFS(assets, "assets/index.html"); err != nil {
		return nil, err
	}
	if s.login, err = template.ParseFS(assets, "assets/login.html"); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics)
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginSubmit)
	mux.HandleFunc("POST /logout", s.need(RoleClerk, true, s.logout))
	mux.HandleFunc("GET /{$}", s.need(RoleClerk, false, s.index))
	mux.HandleFunc("GET /api/session", s.need(RoleClerk, false, s.session))
	mux.HandleFunc("GET /api/status", s.need(RoleClerk, false, s.status))
	mux.HandleFunc("GET /api/stream", s.need(RoleClerk, false, s.stream))
	mux.HandleFunc("POST /api/manual", s.need(RoleClerk, true, s.manual))
	mux.HandleFunc("POST /api/reprint", s.need(RoleClerk, true, s.reprint))
	mux.HandleFunc("POST /api/device-test", s.need(RoleAdmin, true, s.deviceTest))
	if opts.Custody != nil {
		mux.HandleFunc("GET /api/parcels/find", s.need(RoleClerk, false, s.findParcel))
		mux.HandleFunc("GET /api/parcels", s.need(RoleClerk, false, s.recipientParcels))
		mux.HandleFunc("GET /api/parcels/{id}/signature", s.need(RoleClerk, false, s.signature))
		mux.HandleFunc("GET /api/waiting", s.need(RoleClerk, false, s.waiting))
		mux.HandleFunc("GET /api/needs-recipient", s.need(RoleClerk, false, s.needsRecipient))
		if opts.Photos.Keeper != nil {
			mux.HandleFunc("POST /api/parcels/{id}/photos", s.need(RoleClerk, true, s.photo))
		}
		mux.HandleFunc("POST /api/custody", s.need(RoleClerk, true, s.custody))
		mux.HandleFunc("POST /api/mode", s.need(RoleClerk, true, s.setMode))
		mux.HandleFunc("GET /api/report.csv", s.need(RoleAdmin, false, s.report))
	}
	if opts.People != nil {
		mux.HandleFunc("GET /api/people", s.need(RoleClerk, false, s.people))
	}
	s.mux = mux
	return s, nil
}

// Handler returns the server's handler with its security headers.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer a browser sends
		// "Origin: null" on the page's own form posts, which the CSRF check
		// refuses; other sites still get neither referrer nor origin.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(self), microphone=(), geolocation=()") // the page photographs labels
		if s.opts.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !s.hostAllowed(r.Host) {
			http.Error(w, "unknown host name: add it to web.host_names in the box's configuration", http.StatusMisdirectedRequest)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// Listen opens the listening socket, so that a bad address fails at start.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("web: listen on %s: %w", s.opts.Listen, err)
	}
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.ln = ln
	return nil
}

// Close releases the listener of a server that Listen opened but Run did
// not serve (Run closes it itself when it returns).
func (s *Server) Close() error {
	if s.ln == nil {
		return nil
	}
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close status page listener: %w", err)
	}
	return nil
}

// Addr is the address the server listens on, once Listen succeeded.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is cancelled, pushing status updates to open pages.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelDebug)}
	pushDone := make(chan struct{})
	pctx, pcancel := context.WithCancel(ctx)
	go func() { defer close(pushDone); s.pusher(pctx) }()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	pcancel()
	<-pushDone
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(sctx) // open event streams end with their request contexts
	s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// pusher rebuilds the status on every change (at most every 250 ms) and at
// least every PushInterval, and wakes the open streams when it changed.
func (s *Server) pusher(ctx context.Context) {
	t := time.NewTicker(s.opts.PushInterval)
	defer t.Stop()
	for {
		b, err := json.Marshal(s.snapshot(ctx))
		if err == nil {
			s.mu.Lock()
			if string(b) != string(s.latest) {
				s.latest = b
				for w := range s.waiters {
					select {
					case w <- struct{}{}:
					default:
					}
				}
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for w := range s.waiters {
				close(w)
				delete(s.waiters, w)
			}
			s.mu.Unlock()
			return
		case <-t.C:
		case <-s.opts.Changed:
			select { // let a burst of commits settle into one push
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.opts.Store.Check(ctx); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

const sessionCookie = "mailroomd_session"

type handler func(w http.ResponseWriter, r *http.Request, sess *session)

// need wraps h so that it runs only for a session of at least role; with
// csrf it also requires the session's CSRF token and a same-origin request.
func (s *Server) need(role Role, csrf bool, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var sess *session
		var token string
		if c, err := r.Cookie(sessionCookie); err == nil {
			token = c.Value
			sess = s.sessions.get(token)
		}
		// A session of a user this config no longer has ends here; one whose
		// role changed acts with the new role.
		if sess != nil {
			u, ok := s.users[sess.user]
			if !ok {
				s.sessions.drop(token)
				sess = nil
			} else if u.Role != sess.role {
				cp := *sess
				cp.role = u.Role
				sess = &cp
			}
		}
		if sess == nil {
			if strings.HasPrefix(r.URL.Path, "/api/") {
				jsonError(w, http.StatusUnauthorized, "login required")
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if csrf && !s.csrfOK(r, sess.csrf) {
			s.opts.Log.Warn("request refused: missing or wrong CSRF token, or another origin", "user", sess.user, "path", r.URL.Path)
			jsonError(w, http.StatusForbidden, "missing or wrong CSRF token, or a request from another origin")
			return
		}
		if role == RoleAdmin && sess.role != RoleAdmin {
			jsonErrorCode(w, http.StatusForbidden, "admin_required", "this needs the admin role")
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) csrfOK(r *http.Request, want string) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && !s.sameOrigin(o, r.Host) {
		return false
	}
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return sameToken(got, want)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	jsonErrorCode(w, status, "", msg)
}

// jsonErrorCode answers with an error; a non-empty code is a stable name
// for it that the page translates.
func jsonErrorCode(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	body := map[string]string{"error": msg}
	if code != "" {
		body["code"] = code
	}
	json.NewEncoder(w).Encode(body)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// lang picks de or en: the lang cookie first, then Accept-Language.
func lang(r *http.Request) string {
	if c, err := r.Cookie("lang"); err == nil && (c.Value == "de" || c.Value == "en") {
		return c.Value
	}
	best, bestQ := "en", -1.0
	for _, part := range strings.Split(r.Header.Get("Accept-Language"), ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		base := strings.ToLower(strings.SplitN(tag, "-", 2)[0])
		if (base == "de" || base == "en") && q > bestQ {
			best, bestQ = base, q
		}
	}
	return best
}

func (s *Server) secure() bool { return s.opts.TLS != nil }

// sameOrigin reports whether a request's Origin header names this page
// exactly: the scheme it is served with, the host the request was sent to,
// and the same port (a default port written or not). "null" and anything
// unparsable never match.
func (s *Server) sameOrigin(origin, host string) bool {
	scheme, port := "http", "80"
	if s.secure() {
		scheme, port = "https", "443"
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != scheme || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return false
	}
	oh, op := splitHostPort(u.Host, port)
	hh, hp := splitHostPort(host, port)
	return oh != "" && strings.EqualFold(oh, hh) && op == hp
}

// splitHostPort splits host[:port], with def where no port is written.
func splitHostPort(hostport, def string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return strings.Trim(h, "[]"), p
	}
	return strings.Trim(hostport, "[]"), def
}

// hostAllowed reports whether a request's Host header may reach the page:
// an IP address (on a loopback listen, a loopback address), "localhost",
// or one of the names in Options.HostNames. Any other name is how a DNS
// rebinding attack reaches a page, loopback ones included, from a foreign
// site.
func (s *Server) hostAllowed(host string) bool {
	h, _ := splitHostPort(host, "")
	if ip := net.ParseIP(h); ip != nil {
		return !s.loopback || ip.IsLoopback()
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	for _, n := range s.opts.HostNames {
		if strings.EqualFold(strings.TrimSuffix(h, "."), n) {
			return true
		}
	}
	return false
}

func (s *Server) index(w http.ResponseWriter, r *http.Request, sess *session) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	s.page.Execute(w, map[string]any{"Lang": lang(r), "Appliance": s.opts.Appliance})
}

var loginText = map[string]map[string]string{
	"en": {"title": "Sign in", "user": "User", "password": "Password", "submit": "Sign in",
		"bad": "Wrong user name or password.", "locked": "Too many failed attempts. Try again later.", "expired": "Please sign in again."},
	"de": {"title": "Anmelden", "user": "Benutzer", "password": "Passwort", "submit": "Anmelden",
		"bad": "Benutzername oder Passwort falsch.", "locked": "Zu viele Fehlversuche. Bitte später erneut versuchen.", "expired": "Bitte erneut anmelden."},
}

const loginCSRFCookie = "mailroomd_login"

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, "", http.StatusOK)
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, msgKey string, code int) {
	l := lang(r)
	token := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: token, Path: "/login", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(), MaxAge: 3600})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	t := loginText[l]
	s.login.Execute(w, map[string]any{"Lang": l, "T": t, "Msg": t[msgKey], "CSRF": token, "Appliance": s.opts.Appliance})
}

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(loginCSRFCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), c.Value) || !s.csrfOK(r, c.Value) {
		s.renderLogin(w, r, "expired", http.StatusForbidden)
		return
	}
	name, password := r.PostFormValue("user"), r.PostFormValue("password")
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	if s.limiter.locked(name) {
		s.failed(name, remote, false)
		s.renderLogin(w, r, "locked", http.StatusTooManyRequests)
		return
	}
	u := s.users[name]
	if !s.decoy.check(u, password) {
		locked := s.limiter.fail(name)
		s.failed(name, remote, locked)
		time.Sleep(s.opts.FailureDelay)
		if locked {
			s.renderLogin(w, r, "locked", http.StatusTooManyRequests)
			return
		}
		s.renderLogin(w, r, "bad", http.StatusUnauthorized)
		return
	}
	s.limiter.succeed(name)
	token, _ := s.sessions.create(u.Name, u.Role)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(), MaxAge: int(s.opts.SessionTTL.Seconds())})
	s.opts.Log.Info("login", "user", u.Name, "role", string(u.Role), "remote", remote)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) failed(name, remote string, locked bool) {
	// The password is never logged; the name only as typed, for auditing.
	// A name that is no user may be a password typed into the wrong
	// field: it is logged as typed_user, which the daemon's log redacts
	// (log.personal_data), while a real user's name is logged as such.
	if _, known := s.users[name]; known {
		s.opts.Log.Warn("login failed", "user", name, "remote", remote, "locked_out", locked)
	} else {
		s.opts.Log.Warn("login failed", "typed_user", name, "remote", remote, "locked_out", locked)
	}
	if s.opts.OnLoginFailure != nil {
		s.opts.OnLoginFailure(name, remote, locked)
	}
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(), MaxAge: -1})
	s.opts.Log.Info("logout", "user", sess.user)
	writeJSON(w, map[string]bool{"ok": true})
}

func (s *Server) session(w http.ResponseWriter, r *http.Request, sess *session) {
	out := map[string]any{"user": sess.user, "role": sess.role, "csrf": sess.csrf, "lang": lang(r)}
	if s.opts.Photos.Keeper != nil {
		out["photo_long_edge"], out["photo_max_bytes"] = s.opts.Photos.LongEdge, s.opts.Photos.Keeper.MaxSize
	}
	writeJSON(w, out)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, _ *session) {
	writeJSON(w, s.snapshot(r.Context()))
}

// stream sends the status as Server-Sent Events: one "status" event now and
// one after every change, until the client goes away.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, _ *session) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	wake := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[wake] = struct{}{}
	latest := s.latest
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, wake)
		s.mu.Unlock()
	}()
	if latest == nil {
		latest, _ = json.Marshal(s.snapshot(r.Context()))
	}
	fmt.Fprint(w, "retry: 2000\n\n")
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		if latest != nil {
			if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", latest); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case _, open := <-wake:
			if !open {
				return
			}
			s.mu.Lock()
			latest = s.latest
			s.mu.Unlock()
		case <-keepalive.C:
			latest = nil
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// ManualRequest is the body of POST /api/manual.
type ManualRequest struct {
	Station   string `json:"station"`
	Tracking  string `json:"tracking"`
	Recipient string `json:"recipient"`
	// RecipientID is a person of the directory the clerk chose.
	RecipientID string  `json:"recipient_id"`
	Weight      float64 `json:"weight"`
	Unit        string  `json:"unit"`
}

var gramsPer = map[string]float64{"g": 1, "kg": 1000, "lb": 453.59237, "oz": 28.349523125}

func (s *Server) manual(w http.ResponseWriter, r *http.Request, sess *session) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8192))
	if err != nil {
		jsonErrorCode(w, http.StatusBadRequest, "malformed", "malformed request: "+err.Error())
		return
	}
	m, err := s.parseManual(r.Context(), body)
	if err != nil {
		code := "malformed"
		var ee *entryError
		if errors.As(err, &ee) {
			code = ee.code
		}
		jsonErrorCode(w, http.StatusBadRequest, code, err.Error())
		return
	}
	ev, err := s.opts.Actions.Manual(r.Context(), m)
	if err != nil {
		jsonErrorCode(w, http.StatusServiceUnavailable, "refused", "not recorded: "+err.Error())
		return
	}
	s.opts.Log.Info("manual entry", "user", sess.user, "station", m.Station, "seq", ev.Seq, "id", ev.ID)
	writeJSON(w, map[string]any{"id": ev.ID, "seq": ev.Seq})
}

// entryError is a manual entry the page refuses. code is a stable name for
// what is wrong (tracking_required, recipient_too_long, unknown_station,
// bad_weight) that the page says in the clerk's language.
type entryError struct{ code, msg string }

func (e *entryError) Error() string { return e.msg }

// parseManual checks a manual entry request and turns it into an intake
// entry; the error says what is wrong.
func (s *Server) parseManual(ctx context.Context, body []byte) (intake.Manual, error) {
	var req ManualRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return intake.Manual{}, fmt.Errorf("malformed request: %w", err)
	}
	req.Tracking, req.Recipient = strings.TrimSpace(req.Tracking), strings.TrimSpace(req.Recipient)
	req.RecipientID = strings.TrimSpace(req.RecipientID)
	switch {
	case req.Tracking == "" || utf8.RuneCountInString(req.Tracking) > 128:
		return intake.Manual{}, &entryError{"tracking_required", "a tracking number of 1 to 128 characters is required"}
	case utf8.RuneCountInString(req.Recipient) > 128:
		return intake.Manual{}, &entryError{"recipient_too_long", "the recipient is longer than 128 characters"}
	case !s.hasStation(req.Station):
		return intake.Manual{}, &entryError{"unknown_station", "unknown station " + strconv.Quote(req.Station)}
	case req.RecipientID != "" && !s.isPerson(ctx, req.RecipientID):
		return intake.Manual{}, &entryError{"unknown_person", "no active person with that id in the directory"}
	}
	m := intake.Manual{Station: req.Station, Code: req.Tracking, Recipient: req.Recipient, RecipientID: req.RecipientID, At: s.opts.Now()}
	if m.RecipientID != "" {
		e, _ := s.person(ctx, m.RecipientID)
		m.Recipient, m.RecipientID, m.RecipientMatch = "", e.ID, directory.MatchManual
	} else if x := s.directory(ctx); x != nil && x.Len() > 0 && m.Recipient != "" {
		// A name typed in that is one person's is committed as that person,
		// so that the text itself is never recorded nor sent.
		if e, how, score := x.Resolve(m.Recipient); how == directory.MatchExact || how == directory.MatchFuzzy {
			m.Recipient, m.RecipientID, m.RecipientMatch, m.RecipientScore = "", e.ID, how, score
		}
	}
	if req.Weight != 0 {
		per, ok := gramsPer[req.Unit]
		if !ok || req.Weight < 0 || req.Weight > 1e6 {
			return intake.Manual{}, &entryError{"bad_weight", "the weight must be a positive number in g, kg, lb or oz"}
		}
		m.Weight = &event.Weight{Value: req.Weight, Unit: req.Unit, Grams: float64(int64(req.Weight*per*100+0.5)) / 100, Stable: true}
	}
	return m, nil
}

// isPerson reports whether id is an active person of the directory.
func (s *Server) isPerson(ctx context.Context, id string) bool {
	_, ok := s.person(ctx, id)
	return ok
}

func (s *Server) hasStation(name string) bool {
	for _, st := range s.opts.Stations {
		if st.Name == name {
			return true
		}
	}
	return false
}

func (s *Server) reprint(w http.ResponseWriter, r *http.Request, sess *session) {
	var req struct {
		Station  string `json:"station"`
		ParcelID string `json:"parcel_id"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		jsonError(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return
	}
	if err := s.opts.Actions.Reprint(req.Station, req.ParcelID); err != nil {
		jsonError(w, http.StatusNotFound, err.Error())
		return
	}
	s.opts.Log.Info("reprint", "user", sess.user, "station", req.Station, "parcel", req.ParcelID)
	writeJSON(w, map[string]bool{"ok": true})
}

func (s *Server) deviceTest(w http.ResponseWriter, r *http.Request, sess *session) {
	var req struct {
		Device string `json:"device"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		jsonError(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return
	}
	msg, err := s.opts.Actions.DeviceTest(r.Context(), req.Device)
	s.opts.Log.Info("device test", "user", sess.user, "device", req.Device, "result", msg, "err", err)
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, map[string]string{"result": msg})
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

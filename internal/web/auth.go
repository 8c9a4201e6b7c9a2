package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Role names what a user may do.
type Role string

// Roles.
const (
	RoleClerk Role = "clerk" // view, manual entry, reprint
	RoleAdmin Role = "admin" // also device tests
)

// User is a login; only its bcrypt hash is known.
type User struct {
	Name         string
	Role         Role
	PasswordHash string
}

// HashPassword returns the bcrypt hash of a password, for the config.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), 12)
	return string(h), err
}

type session struct {
	user    string
	role    Role
	csrf    string
	expires time.Time
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Auth is the sign-in state of a status page: its sessions and its failed
// sign-ins. A daemon keeps one Auth for the status pages of successive
// configs, so that a config switch neither signs clerks out nor lifts a
// lockout; a restart does both (it is kept in memory only).
type Auth struct {
	sessions *sessions
	limiter  *limiter
	// pins counts wrong pickup PINs per parcel, across the pages of
	// successive configs.
	pins *pinFailures
}

// NewAuth returns an empty sign-in state; now may be nil for time.Now.
func NewAuth(now func() time.Time) *Auth {
	if now == nil {
		now = time.Now
	}
	return &Auth{sessions: &sessions{m: map[string]*session{}, now: now},
		limiter: &limiter{now: now, m: map[string]*failures{}}, pins: &pinFailures{}}
}

// configure sets the session lifetime and the lockout rule of a page.
func (a *Auth) configure(ttl time.Duration, maxFailures int, lockout time.Duration) {
	a.sessions.mu.Lock()
	a.sessions.ttl = ttl
	a.sessions.mu.Unlock()
	a.limiter.mu.Lock()
	a.limiter.max, a.limiter.window = maxFailures, lockout
	a.limiter.mu.Unlock()
}

// sessions holds the logged-in sessions, in memory: a restart logs
// everyone out.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func (s *sessions) create(user string, role Role) (token string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	token = randomToken()
	sess = &session{user: user, role: role, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[token] = sess
	return token, sess
}

func (s *sessions) get(token string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[token]
	if !ok {
		return nil
	}
	if s.now().After(sess.expires) {
		delete(s.m, token)
		return nil
	}
	return sess
}

func (s *sessions) drop(token string) {
	s.mu.Lock()
	delete(s.m, token)
	s.mu.Unlock()
}

// limiter counts failed logins per user name and locks a name out after
// max failures within window, for window.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	m      map[string]*failures
}

type failures struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

// locked reports whether name is locked out now.
func (l *limiter) locked(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[name]
	return ok && l.now().Before(f.lockedUntil)
}

// fail records a failure and reports whether it locked the name.
func (l *limiter) fail(name string) (lockedNow bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f, ok := l.m[name]
	if !ok || now.Sub(f.first) > l.window {
		f = &failures{first: now}
		l.m[name] = f
	}
	f.count++
	if f.count >= l.max {
		f.lockedUntil = now.Add(l.window)
		f.count, f.first = 0, now
		return true
	}
	return false
}

func (l *limiter) succeed(name string) {
	l.mu.Lock()
	delete(l.m, name)
	l.mu.Unlock()
}

// decoy is the hash an unknown user name is checked against, so that a
// wrong name takes as long as a wrong password: the configured user's hash
// of the highest bcrypt cost itself (the comparison's outcome is thrown
// away), so it costs exactly what a wrong password for that user costs,
// and nothing is computed in advance. Without users a hash of the default
// cost is made on first use.
type decoy struct {
	once sync.Once
	hash []byte
}

// newDecoy returns the decoy for users.
func newDecoy(users []User) *decoy {
	d := &decoy{}
	best := -1
	for _, u := range users {
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && c > best {
			best, d.hash = c, []byte(u.PasswordHash)
		}
	}
	return d
}

func (d *decoy) get() []byte {
	d.once.Do(func() {
		if d.hash == nil {
			d.hash, _ = bcrypt.GenerateFromPassword([]byte(randomToken()), bcrypt.DefaultCost)
		}
	})
	return d.hash
}

// check compares password with u's hash, or with the decoy for an unknown
// user, and reports whether it matched.
func (d *decoy) check(u *User, password string) bool {
	if u == nil {
		bcrypt.CompareHashAndPassword(d.get(), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil
}

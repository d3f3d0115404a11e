package webmail

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one logged-in browser. Sessions live on the server (the cookie
// holds a random id only), so that logout and expiry end them for certain.
type session struct {
	key     [32]byte // SHA-256 of the cookie's id: a leaked map dump or timing gives no ids
	user    string   // the login name as typed (for logs and the admin check)
	mailbox string   // the continuity mailbox the Authenticator named
	csrf    string   // the synchronizer token every POST must carry
	created time.Time
	seen    time.Time // last request
}

// sessions is the in-memory session store.
type sessions struct {
	idle, max time.Duration
	limit     int
	now       func() time.Time
	onChange  func(n int)

	mu        sync.Mutex
	m         map[[32]byte]*session
	lastSweep time.Time
}

func newSessions(idle, max time.Duration, limit int, now func() time.Time, onChange func(int)) *sessions {
	return &sessions{idle: idle, max: max, limit: limit, now: now, onChange: onChange, m: map[[32]byte]*session{}}
}

// randomToken returns 256 random bits, base64url-encoded.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashID(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// create starts a session and returns its cookie id.
func (s *sessions) create(user, mailbox string) (string, *session) {
	id := randomToken()
	now := s.now()
	ss := &session{key: hashID(id), user: user, mailbox: mailbox, csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	s.sweepLocked(now, true)
	if len(s.m) >= s.limit {
		// Evict the least recently used: a flood of logins must not grow
		// memory without bound; its price is the oldest idle user's session.
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		delete(s.m, oldest.key)
	}
	s.m[ss.key] = ss
	n := len(s.m)
	s.mu.Unlock()
	s.onChange(n)
	return id, ss
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) >= s.idle || now.Sub(ss.created) >= s.max
}

// get returns the live session of a cookie id and marks it used, nil if there
// is none or it expired.
func (s *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	now := s.now()
	k := hashID(id)
	s.mu.Lock()
	ss := s.m[k]
	if ss != nil && s.expired(ss, now) {
		delete(s.m, k)
		ss = nil
	}
	if ss != nil {
		ss.seen = now
	}
	changed := s.sweepLocked(now, false)
	n := len(s.m)
	s.mu.Unlock()
	if changed || ss == nil {
		s.onChange(n)
	}
	return ss
}

// sweepLocked drops expired sessions, at most once a minute unless forced, so
// that the gauge of live sessions stays true without a goroutine.
func (s *sessions) sweepLocked(now time.Time, force bool) bool {
	if !force && now.Sub(s.lastSweep) < time.Minute {
		return false
	}
	s.lastSweep = now
	changed := false
	for k, ss := range s.m {
		if s.expired(ss, now) {
			delete(s.m, k)
			changed = true
		}
	}
	return changed
}

// remove ends a session (logout).
func (s *sessions) remove(ss *session) {
	s.mu.Lock()
	delete(s.m, ss.key)
	n := len(s.m)
	s.mu.Unlock()
	s.onChange(n)
}

// count returns the number of sessions kept, sweeping the expired first.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now(), true)
	return len(s.m)
}

// tokenOK compares a submitted CSRF token with the expected one in constant
// time.
func tokenOK(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

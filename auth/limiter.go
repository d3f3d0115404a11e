package auth

import (
	"container/list"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Login rate limiting. Failed logins are counted per client address and per user name
// (unknown names too, so the limiter says nothing about which users exist):
//
//   - The first FreeFailures failures cost nothing. After that each attempt waits
//     BaseDelay, doubling with every further failure, up to MaxDelay.
//   - MaxFailures failures lock the key out: attempts are refused outright for Lockout, after
//     which the count starts again from zero.
//   - A key's count is forgotten once Window passes without a failure.
//   - A successful login clears the user's count. It does not clear the address's count, or
//     an attacker with one valid account could reset it between guesses.
//   - Attempts in flight (allowed, not yet reported) count as failures, so that opening many
//     connections at once does not buy more guesses before the lockout.
//
// IPv6 clients are counted per /64, the smallest block a site is given.
//
// With the defaults a user name gets at most 10 guesses per 15 minutes however many
// addresses try it, and an address at most 30 per 15 minutes however many users it tries.
// The per-address numbers are higher because several honest users can share one NAT address.

// LimitPolicy is the policy for one kind of key (client address or user name).
type LimitPolicy struct {
	FreeFailures int           // failures without a delay
	BaseDelay    time.Duration // delay after the first failure past FreeFailures
	MaxDelay     time.Duration // the doubling stops here
	MaxFailures  int           // this many failures lock the key out
	Window       time.Duration // a count is forgotten after this long without a failure
	Lockout      time.Duration // how long a locked-out key is refused
}

// Default policies; see the comment above.
var (
	DefaultUserPolicy = LimitPolicy{
		FreeFailures: 3, BaseDelay: time.Second, MaxDelay: 60 * time.Second,
		MaxFailures: 10, Window: 15 * time.Minute, Lockout: 15 * time.Minute,
	}
	DefaultAddrPolicy = LimitPolicy{
		FreeFailures: 5, BaseDelay: time.Second, MaxDelay: 60 * time.Second,
		MaxFailures: 30, Window: 15 * time.Minute, Lockout: 15 * time.Minute,
	}
)

// DefaultMaxEntries bounds each of the limiter's two tables (addresses, users). An entry
// takes about 220 bytes (measured with short keys), so both full tables hold about 45 MB.
// The bound has a price: a key is forgotten once MaxEntries newer keys were seen, so an
// attacker who spends that many attempts on other keys frees a locked-out one early.
const DefaultMaxEntries = 100_000

// LimiterOptions configures a Limiter. Zero fields take the defaults.
type LimiterOptions struct {
	PerAddr LimitPolicy // zero value: DefaultAddrPolicy
	PerUser LimitPolicy // zero value: DefaultUserPolicy
	// MaxEntries bounds each table; when full, the key idle longest is forgotten.
	MaxEntries int
	// Clock gives the time. Nil is time.Now.
	Clock func() time.Time
}

// Limiter rate-limits logins. It is safe for concurrent use.
type Limiter struct {
	opts  LimiterOptions
	mu    sync.Mutex
	addrs *limitTable
	users *limitTable
}

// NewLimiter returns a Limiter.
func NewLimiter(opts LimiterOptions) *Limiter {
	if opts.PerAddr == (LimitPolicy{}) {
		opts.PerAddr = DefaultAddrPolicy
	}
	if opts.PerUser == (LimitPolicy{}) {
		opts.PerUser = DefaultUserPolicy
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Limiter{
		opts:  opts,
		addrs: newLimitTable(opts.PerAddr, opts.MaxEntries),
		users: newLimitTable(opts.PerUser, opts.MaxEntries),
	}
}

// Allow is asked before checking a password. ok false means refuse the attempt without
// checking (locked out, or too many attempts in flight); wait is then how long until trying
// again makes sense. ok true means go ahead, after waiting wait (zero for the first few
// failures). Every allowed attempt must be followed by Failure or Success.
func (l *Limiter) Allow(clientIP, user string) (wait time.Duration, ok bool) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	ea := l.addrs.get(a, now, true)
	eu := l.users.get(u, now, true)
	wa, oka := l.addrs.check(ea, now)
	wu, oku := l.users.check(eu, now)
	switch {
	case !oka && !oku:
		return max(wa, wu), false
	case !oka:
		return wa, false
	case !oku:
		return wu, false
	}
	ea.attempt(now)
	eu.attempt(now)
	return max(wa, wu), true
}

// Failure records a failed login.
func (l *Limiter) Failure(clientIP, user string) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.fail(l.addrs.get(a, now, true), now)
	l.users.fail(l.users.get(u, now, true), now)
}

// Success records a successful login: the user's count is cleared; the address's attempt is
// no longer in flight.
func (l *Limiter) Success(clientIP, user string) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.addrs.get(a, now, false); e != nil && e.pending > 0 {
		e.pending--
	}
	l.users.remove(u)
}

// Len returns the number of addresses and user names the limiter holds.
func (l *Limiter) Len() (addrs, users int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addrs.ll.Len(), l.users.ll.Len()
}

// addrKey normalises a client address: the IP without port or zone, IPv4-mapped IPv6 as IPv4,
// IPv6 cut to its /64. Anything unparsable is used as given.
func addrKey(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

func userKey(s string) string { return strings.ToLower(s) }

// limitTable is one LRU-bounded table of keys.
type limitTable struct {
	p   LimitPolicy
	max int
	m   map[string]*list.Element // of *limitEntry
	ll  *list.List               // front: most recently used
}

type limitEntry struct {
	key         string
	failures    int
	pending     int // allowed and not yet reported
	lastAttempt time.Time
	lastFailure time.Time
	lockedUntil time.Time
}

func newLimitTable(p LimitPolicy, max int) *limitTable {
	return &limitTable{p: p, max: max, m: map[string]*list.Element{}, ll: list.New()}
}

// get returns key's entry, creating it if create, after expiring what is stale.
func (t *limitTable) get(key string, now time.Time, create bool) *limitEntry {
	if el, ok := t.m[key]; ok {
		t.ll.MoveToFront(el)
		e := el.Value.(*limitEntry)
		t.expire(e, now)
		return e
	}
	if !create {
		return nil
	}
	for t.ll.Len() >= t.max {
		old := t.ll.Back()
		t.ll.Remove(old)
		delete(t.m, old.Value.(*limitEntry).key)
	}
	e := &limitEntry{key: key}
	t.m[key] = t.ll.PushFront(e)
	return e
}

func (t *limitTable) remove(key string) {
	if el, ok := t.m[key]; ok {
		t.ll.Remove(el)
		delete(t.m, key)
	}
}

// expire starts the count again after a lockout ends or after Window without a failure.
// Attempts in flight are forgotten after Window without an attempt: a caller that never
// reported them must not lock a key forever.
func (t *limitTable) expire(e *limitEntry, now time.Time) {
	if !e.lockedUntil.IsZero() {
		if now.Before(e.lockedUntil) {
			return
		}
		e.failures, e.pending, e.lockedUntil = 0, 0, time.Time{}
		return
	}
	if e.failures > 0 && now.Sub(e.lastFailure) >= t.p.Window {
		e.failures = 0
	}
	if e.pending > 0 && now.Sub(e.lastAttempt) >= t.p.Window {
		e.pending = 0
	}
}

func (e *limitEntry) attempt(now time.Time) {
	e.pending++
	e.lastAttempt = now
}

// check applies the policy to an entry before an attempt.
func (t *limitTable) check(e *limitEntry, now time.Time) (time.Duration, bool) {
	if now.Before(e.lockedUntil) {
		return e.lockedUntil.Sub(now), false
	}
	n := e.failures + e.pending
	if n >= t.p.MaxFailures {
		// Only attempts in flight stand between this key and the lockout: come back when
		// they are done.
		return t.p.BaseDelay, false
	}
	return t.p.delay(n), true
}

// delay is the wait before an attempt that follows n failures.
func (p LimitPolicy) delay(n int) time.Duration {
	if n < p.FreeFailures {
		return 0
	}
	d := p.BaseDelay
	for i := p.FreeFailures; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	return min(d, p.MaxDelay)
}

func (t *limitTable) fail(e *limitEntry, now time.Time) {
	if e.pending > 0 {
		e.pending--
	}
	e.failures++
	e.lastFailure = now
	if e.failures >= t.p.MaxFailures {
		e.lockedUntil = now.Add(t.p.Lockout)
	}
}

package auth

import (
	"container/heap"
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
//
// A table holds only keys with something to count (failures, attempts in flight, a lockout):
// a refused attempt adds nothing, and a key is dropped as soon as its count runs out. The
// bound never drops a key that still counts, or an attacker could free a locked-out user by
// spending attempts on other names. When a table is full of such keys, a new key is refused
// (as if rate limited) until the oldest count runs out, after Window or Lockout: the limiter
// fails closed. Filling a table takes MaxEntries failed attempts within one Window, each from
// an address that has not used up its own MaxFailures, nearly all of them with a password
// hashed.
const DefaultMaxEntries = 100_000

// LimiterOptions configures a Limiter. Zero fields take the defaults.
type LimiterOptions struct {
	PerAddr LimitPolicy // zero value: DefaultAddrPolicy
	PerUser LimitPolicy // zero value: DefaultUserPolicy
	// MaxEntries bounds each table; when full, new keys are refused (see DefaultMaxEntries).
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
// checking (locked out, too many attempts in flight, or no room to count a new key); wait is
// then how long until trying again makes sense. ok true means go ahead, after waiting wait
// (zero for the first few failures). Every allowed attempt must be followed by Failure or
// Success.
//
// A refused attempt changes nothing: it costs the client no password hashing, so it must not
// be a cheap way to fill the tables either.
func (l *Limiter) Allow(clientIP, user string) (wait time.Duration, ok bool) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	ea := l.addrs.get(a, now)
	eu := l.users.get(u, now)
	wa, oka := l.addrs.check(ea, now)
	wu, oku := l.users.check(eu, now)
	if !oka || !oku {
		switch {
		case oka:
			wa = 0
		case oku:
			wu = 0
		}
		return max(wa, wu), false
	}
	// Both tables must have room before either gets the attempt, or a refusal would leave
	// half an attempt in flight.
	var fa, fu time.Duration
	if ea == nil {
		fa, oka = l.addrs.room(now)
	}
	if eu == nil {
		fu, oku = l.users.room(now)
	}
	if !oka || !oku {
		return max(fa, fu), false
	}
	l.addrs.attempt(ea, a, now)
	l.users.attempt(eu, u, now)
	return max(wa, wu), true
}

// Failure records a failed login.
func (l *Limiter) Failure(clientIP, user string) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.fail(a, now)
	l.users.fail(u, now)
}

// Success records a successful login: the user's failures and lockout are cleared; the
// attempt is no longer in flight. The user's other attempts in flight stay counted: they may
// be an attacker's, racing the user, and each will still be reported, which then finds its
// entry and needs no room in a full table.
func (l *Limiter) Success(clientIP, user string) {
	now := l.opts.Clock()
	a, u := addrKey(clientIP), userKey(user)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.addrs.get(a, now); e != nil && e.pending > 0 {
		e.pending--
		l.addrs.update(e)
	}
	if e := l.users.get(u, now); e != nil {
		e.failures, e.lastFailure, e.lockedUntil = 0, time.Time{}, time.Time{}
		if e.pending > 0 {
			e.pending--
		}
		l.users.update(e)
	}
}

// Len returns the number of addresses and user names the limiter holds: those with failures,
// attempts in flight or a lockout.
func (l *Limiter) Len() (addrs, users int) {
	now := l.opts.Clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.sweep(now)
	l.users.sweep(now)
	return len(l.addrs.m), len(l.users.m)
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

// limitTable is one bounded table of keys. It holds only entries with something to count;
// they are also kept in a heap by the time their count runs out (end), so that the stale ones
// are dropped in order without a scan, and a full table knows when it will have room.
type limitTable struct {
	p    LimitPolicy
	max  int
	m    map[string]*limitEntry
	ends endHeap
}

type limitEntry struct {
	key         string
	failures    int
	pending     int // allowed and not yet reported
	lastAttempt time.Time
	lastFailure time.Time
	lockedUntil time.Time
	end         time.Time // when expire would make the entry clean; see update
	index       int       // in limitTable.ends
}

func newLimitTable(p LimitPolicy, max int) *limitTable {
	return &limitTable{p: p, max: max, m: map[string]*limitEntry{}}
}

// sweep drops the entries whose count has run out by now.
func (t *limitTable) sweep(now time.Time) {
	for len(t.ends) > 0 && !t.ends[0].end.After(now) {
		t.remove(t.ends[0])
	}
}

// get returns key's entry after expiring what is stale, or nil if key has nothing to count.
// It never creates one: only an allowed attempt or a failure does (attempt, fail).
func (t *limitTable) get(key string, now time.Time) *limitEntry {
	t.sweep(now)
	e := t.m[key]
	if e == nil {
		return nil
	}
	t.expire(e, now)
	if !t.update(e) {
		return nil
	}
	return e
}

// room reports whether a new key fits; if not, wait is how long until the first entry's count
// runs out. A lockout, or an attempt in flight, is never dropped: a dropped lockout would give an
// attacker MaxFailures fresh guesses for the price of filling the table. But refusing every new
// key whenever the table is full would let whoever fills it with failures (cheap from an IPv6
// /48's many /64s) lock every honest user out; so a full table makes room by dropping, among
// evictSample entries (Go's map order is random), the unlocked one with the fewest failures: the
// flood's own one-failure entries go first, and a partly guessed user survives unless the table
// is full of keys with as many failures, which costs the attacker that many guesses per key.
// Only a table of lockouts and attempts in flight refuses new keys.
func (t *limitTable) room(now time.Time) (wait time.Duration, ok bool) {
	t.sweep(now)
	if len(t.m) < t.max {
		return 0, true
	}
	var victim *limitEntry
	n := 0
	for _, e := range t.m {
		if e.lockedUntil.IsZero() && e.pending == 0 && (victim == nil || e.failures < victim.failures) {
			victim = e
		}
		if n++; n == evictSample {
			break
		}
	}
	if victim != nil {
		t.remove(victim)
		return 0, true
	}
	return t.ends[0].end.Sub(now), false
}

// evictSample is how many entries a full table looks at for one to drop.
const evictSample = 64

// add puts a new, still clean entry for key into the table; the caller has checked room and
// must record something in it and call update.
func (t *limitTable) add(key string) *limitEntry {
	e := &limitEntry{key: key, index: -1}
	t.m[key] = e
	return e
}

// update files e under its new end, or drops it if nothing is left to count. It reports
// whether e is still in the table.
func (t *limitTable) update(e *limitEntry) bool {
	e.end = time.Time{}
	switch {
	case !e.lockedUntil.IsZero():
		e.end = e.lockedUntil
	default:
		if e.failures > 0 {
			e.end = e.lastFailure.Add(t.p.Window)
		}
		if e.pending > 0 {
			e.end = later(e.end, e.lastAttempt.Add(t.p.Window))
		}
	}
	if e.end.IsZero() {
		t.remove(e)
		return false
	}
	if e.index < 0 {
		heap.Push(&t.ends, e)
	} else {
		heap.Fix(&t.ends, e.index)
	}
	return true
}

func (t *limitTable) remove(e *limitEntry) {
	if e.index >= 0 {
		heap.Remove(&t.ends, e.index)
	}
	delete(t.m, e.key)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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

// attempt records an allowed attempt on e, or on a new entry for key if e is nil (the caller
// has checked room).
func (t *limitTable) attempt(e *limitEntry, key string, now time.Time) {
	if e == nil {
		e = t.add(key)
	}
	e.pending++
	e.lastAttempt = now
	t.update(e)
}

// check applies the policy to an entry before an attempt; nil is a key with nothing counted.
func (t *limitTable) check(e *limitEntry, now time.Time) (time.Duration, bool) {
	if e == nil {
		return t.p.delay(0), true
	}
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

// fail records a failure for key. The attempt's entry is normally there, holding it in flight;
// it is not only if the caller took longer than Window to report. A new entry is then made if
// there is room; if there is none, the failure is not counted, which loses less than dropping
// an entry that counts would.
func (t *limitTable) fail(key string, now time.Time) {
	e := t.get(key, now)
	if e == nil {
		if _, ok := t.room(now); !ok {
			return
		}
		e = t.add(key)
	}
	if e.pending > 0 {
		e.pending--
	}
	e.failures++
	e.lastFailure = now
	if e.failures >= t.p.MaxFailures {
		e.lockedUntil = now.Add(t.p.Lockout)
	}
	t.update(e)
}

// endHeap orders entries by end, soonest first (container/heap).
type endHeap []*limitEntry

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i].end.Before(h[j].end) }
func (h endHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *endHeap) Push(x any) {
	e := x.(*limitEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *endHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}

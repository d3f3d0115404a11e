package auth

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestLimitPolicyDelay(t *testing.T) {
	p := DefaultUserPolicy
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, 60 * time.Second, 60 * time.Second, 60 * time.Second}
	for n, w := range want {
		if got := p.delay(n); got != w {
			t.Errorf("delay after %d failures = %v, want %v", n, got, w)
		}
	}
	if got := p.delay(1000); got != p.MaxDelay {
		t.Errorf("delay(1000) = %v", got)
	}
}

// TestLimiterUserGrowthAndLockout walks one user through the default policy: free attempts,
// a doubling delay, the lockout, and the fresh start after it.
func TestLimiterUserGrowthAndLockout(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	p := DefaultUserPolicy
	for i := range p.MaxFailures {
		ip := fmt.Sprintf("192.0.2.%d", i) // a new address each time: only the user counts
		wait, ok := l.Allow(ip, "Alice")
		if !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		if want := p.delay(i); wait != want {
			t.Errorf("attempt %d: wait %v, want %v", i+1, wait, want)
		}
		clock.Advance(wait)
		l.Failure(ip, "alice")
	}
	wait, ok := l.Allow("198.51.100.1", "ALICE")
	if ok || wait != p.Lockout {
		t.Fatalf("after %d failures: Allow = %v, %v; want refused for %v", p.MaxFailures, wait, ok, p.Lockout)
	}
	if _, ok := l.Allow("198.51.100.1", "bob"); !ok {
		t.Error("another user is refused from a fresh address")
	}
	clock.Advance(p.Lockout - time.Second)
	if wait, ok := l.Allow("198.51.100.1", "alice"); ok || wait != time.Second {
		t.Errorf("1s before the lockout ends: %v, %v", wait, ok)
	}
	clock.Advance(time.Second)
	if wait, ok := l.Allow("198.51.100.1", "alice"); !ok || wait != 0 {
		t.Errorf("after the lockout: %v, %v; want a fresh start", wait, ok)
	}
}

func TestLimiterWindowForgets(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	for range 5 {
		l.Allow("192.0.2.1", "alice")
		l.Failure("192.0.2.1", "alice")
	}
	if wait, _ := l.Allow("192.0.2.1", "alice"); wait == 0 {
		t.Fatal("no delay after 5 failures")
	}
	l.Failure("192.0.2.1", "alice")
	clock.Advance(DefaultUserPolicy.Window)
	if wait, ok := l.Allow("192.0.2.1", "alice"); !ok || wait != 0 {
		t.Errorf("after a quiet window: %v, %v", wait, ok)
	}
}

// TestLimiterSuccess: success clears the user, not the address.
func TestLimiterSuccess(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	ip := "192.0.2.7"
	for range 6 {
		l.Allow(ip, "alice")
		l.Failure(ip, "alice")
	}
	l.Allow(ip, "alice")
	l.Success(ip, "alice")
	if wait, ok := l.Allow("203.0.113.9", "alice"); !ok || wait != 0 {
		t.Errorf("user after success: %v, %v", wait, ok)
	}
	l.Success("203.0.113.9", "alice")
	// The address had 6 failures (free 5): its delay stays.
	if wait, ok := l.Allow(ip, "carol"); !ok || wait != DefaultAddrPolicy.delay(6) {
		t.Errorf("address after a success: %v, %v; want %v", wait, ok, DefaultAddrPolicy.delay(6))
	}
}

// TestLimiterAddressLockout: one address trying many users is stopped by the per-address
// count, and an IPv6 attacker cannot escape it by changing the low 64 bits.
func TestLimiterAddressLockout(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	var failed []time.Time
	for i := range DefaultAddrPolicy.MaxFailures {
		ip := fmt.Sprintf("[2001:db8:1:2::%x]:%d", i, 40000+i)
		wait, ok := l.Allow(ip, fmt.Sprintf("user%d", i))
		if !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		clock.Advance(wait)
		l.Failure(ip, fmt.Sprintf("user%d", i))
		failed = append(failed, clock.Now())
	}
	if _, ok := l.Allow("2001:db8:1:2:ffff::1", "newuser"); ok {
		t.Error("same /64 not locked out")
	}
	if _, ok := l.Allow("2001:db8:1:3::1", "newuser"); !ok {
		t.Error("a neighbouring /64 is locked out")
	}
	// The delays add up to more than Window: the first users' failures have run out and
	// they are gone. Left are the others and newuser, in flight.
	users := 1
	for _, f := range failed {
		if clock.Now().Sub(f) < DefaultUserPolicy.Window {
			users++
		}
	}
	if users == DefaultAddrPolicy.MaxFailures+1 {
		t.Fatal("no failure has run out: the test does not test the expiry")
	}
	if a, u := l.Len(); a != 2 || u != users {
		t.Errorf("Len = %d, %d; want 2, %d", a, u, users)
	}
}

// TestLimiterInFlight: attempts allowed but not yet reported count, so parallel connections
// do not buy extra guesses.
func TestLimiterInFlight(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	var waits []time.Duration
	refused := 0
	for i := range 20 {
		wait, ok := l.Allow(fmt.Sprintf("192.0.2.%d", i), "alice")
		if !ok {
			refused++
			continue
		}
		waits = append(waits, wait)
	}
	if len(waits) != DefaultUserPolicy.MaxFailures || refused != 20-DefaultUserPolicy.MaxFailures {
		t.Fatalf("allowed %d in flight, refused %d", len(waits), refused)
	}
	if waits[DefaultUserPolicy.FreeFailures] == 0 {
		t.Errorf("in-flight attempts got no growing delay: %v", waits)
	}
	// Never reported: forgotten after the window.
	clock.Advance(DefaultUserPolicy.Window)
	if _, ok := l.Allow("192.0.2.1", "alice"); !ok {
		t.Error("unreported attempts lock the user for good")
	}
}

// lockUser fails user MaxFailures times from ip (fewer than the address's MaxFailures) and
// checks the lockout took.
func lockUser(t *testing.T, l *Limiter, ip, user string) {
	t.Helper()
	for i := range DefaultUserPolicy.MaxFailures {
		if _, ok := l.Allow(ip, user); !ok {
			t.Fatalf("%s: attempt %d refused", user, i+1)
		}
		l.Failure(ip, user)
	}
	if wait, ok := l.Allow("192.0.2.250", user); ok || wait != DefaultUserPolicy.Lockout {
		t.Fatalf("%s not locked out: %v, %v", user, wait, ok)
	}
}

// lockAddr fails ip MaxFailures times, each with a user of its own.
func lockAddr(t *testing.T, l *Limiter, ip string) {
	t.Helper()
	for i := range DefaultAddrPolicy.MaxFailures {
		user := fmt.Sprintf("lock-%s-%d", ip, i)
		if _, ok := l.Allow(ip, user); !ok {
			t.Fatalf("%s: attempt %d refused", ip, i+1)
		}
		l.Failure(ip, user)
	}
	if _, ok := l.Allow(ip, "someone"); ok {
		t.Fatalf("%s not locked out", ip)
	}
}

// TestLimiterRefusedAddsNothing: a refused attempt costs the attacker no hashing, so it must
// not cost the limiter memory either, or refused attempts with made-up names would be a free
// way to fill the tables and push a lockout out.
func TestLimiterRefusedAddsNothing(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	lockAddr(t, l, "203.0.113.66")
	lockUser(t, l, "198.18.0.1", "alice")
	a0, u0 := l.Len()
	for i := range 1000 {
		if _, ok := l.Allow("203.0.113.66", fmt.Sprintf("random%d", i)); ok {
			t.Fatal("locked address allowed")
		}
		if _, ok := l.Allow(fmt.Sprintf("10.0.%d.%d", i>>8, i&0xff), "alice"); ok {
			t.Fatal("locked user allowed")
		}
	}
	if a, u := l.Len(); a != a0 || u != u0 {
		t.Errorf("refused attempts grew the tables from %d, %d to %d, %d entries", a0, u0, a, u)
	}
}

// TestLimiterBoundKeepsLockout is the attack on the table bound: lock a user out and guess
// another one's password a few times, then flood the limiter with other keys, refused and
// allowed, until the tables are full many times over. The lockout must survive, and so must
// the partly guessed user's failures; what gives way is the flood's own one-failure keys, so
// that new honest users still get in.
func TestLimiterBoundKeepsLockout(t *testing.T) {
	clock := newFakeClock()
	const capacity = 64
	l := NewLimiter(LimiterOptions{Clock: clock.Now, MaxEntries: capacity})
	lockUser(t, l, "198.18.0.1", "victim")
	lockAddr(t, l, "203.0.113.66")
	guessed := DefaultUserPolicy.MaxFailures - 1
	for i := range guessed {
		ip := fmt.Sprintf("198.18.1.%d", i)
		if _, ok := l.Allow(ip, "alice"); !ok {
			t.Fatal("alice refused before her lockout")
		}
		l.Failure(ip, "alice")
	}

	// Refused attempts from a locked address, each with a new user name.
	for i := range 10_000 {
		if _, ok := l.Allow("203.0.113.66", fmt.Sprintf("u%d", i)); ok {
			t.Fatal("locked address allowed")
		}
	}
	if _, ok := l.Allow("192.0.2.3", "victim"); ok {
		t.Fatal("refused attempts with other names freed the locked-out user")
	}

	// Allowed attempts that fail, from new addresses with new names: each adds a key
	// holding a failure to both tables, which fill and then give up the flood's keys.
	filled := false
	for i := range 10_000 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff)
		user := fmt.Sprintf("g%d", i)
		if _, ok := l.Allow(ip, user); !ok {
			t.Fatalf("attempt %d of the flood refused: a full table locks new users out", i)
		}
		a, u := l.Len()
		if a > capacity || u > capacity {
			t.Fatalf("tables grew to %d, %d entries", a, u)
		}
		filled = filled || u == capacity
		l.Failure(ip, user)
	}
	if !filled {
		t.Fatal("the flood never filled the table: the test does not test the bound")
	}
	if wait, ok := l.Allow("192.0.2.3", "victim"); ok || wait != DefaultUserPolicy.Lockout {
		t.Fatalf("after the flood the victim gets %v, %v; want refused for %v", wait, ok, DefaultUserPolicy.Lockout)
	}
	if e := l.users.get("alice", clock.Now()); e == nil || e.failures != guessed {
		t.Fatalf("after the flood alice's failures are %+v, want %d", e, guessed)
	}

	// Once the lockout has ended, the victim may try again.
	clock.Advance(max(DefaultUserPolicy.Window, DefaultUserPolicy.Lockout, DefaultAddrPolicy.Window, DefaultAddrPolicy.Lockout))
	if wait, ok := l.Allow("192.0.2.5", "victim"); !ok || wait != 0 {
		t.Errorf("after the lockout the victim gets %v, %v", wait, ok)
	}
}

// TestLimiterEviction: a full table drops an unlocked key with the fewest failures to make
// room for a new one, never a lockout, never a key with an attempt in flight; a table of
// nothing but those refuses new keys until one runs out.
func TestLimiterEviction(t *testing.T) {
	clock := newFakeClock()
	const capacity = 8
	l := NewLimiter(LimiterOptions{Clock: clock.Now, MaxEntries: capacity})
	fail := func(ip, user string, n int) {
		t.Helper()
		for range n {
			if _, ok := l.Allow(ip, user); !ok {
				t.Fatalf("%s %s refused", ip, user)
			}
			l.Failure(ip, user)
		}
	}
	lockUser(t, l, "198.18.0.1", "locked")
	fail("192.0.2.1", "many", 5)
	for i := range capacity - 2 {
		fail(fmt.Sprintf("192.0.2.%d", 10+i), fmt.Sprintf("one%d", i), 1)
	}
	if _, u := l.Len(); u != capacity {
		t.Fatalf("%d users, want %d", u, capacity)
	}
	// New users come in, each in place of a one-failure key.
	for i := range capacity - 2 {
		fail(fmt.Sprintf("192.0.3.%d", i), fmt.Sprintf("late%d", i), 2)
		if _, u := l.Len(); u != capacity {
			t.Fatalf("%d users, want %d", u, capacity)
		}
	}
	if _, ok := l.Allow("192.0.2.4", "locked"); ok {
		t.Error("the locked user was evicted")
	}
	if e := l.users.get("many", clock.Now()); e == nil || e.failures != 5 {
		t.Errorf("the user with the most failures was evicted: %+v", e)
	}
	for i := range capacity - 2 {
		if e := l.users.get(fmt.Sprintf("one%d", i), clock.Now()); e != nil {
			t.Errorf("one%d kept over keys with more failures: %+v", i, e)
		}
	}

	// A table of lockouts refuses new keys; once they run out it takes them again.
	l = NewLimiter(LimiterOptions{Clock: clock.Now, MaxEntries: 2})
	lockUser(t, l, "198.18.0.1", "a")
	lockUser(t, l, "198.18.0.2", "b")
	if wait, ok := l.Allow("192.0.2.9", "c"); ok || wait <= 0 {
		t.Fatalf("a new user with the table full of lockouts: %v, %v", wait, ok)
	}
	clock.Advance(max(DefaultUserPolicy.Window, DefaultUserPolicy.Lockout))
	if _, ok := l.Allow("192.0.2.9", "c"); !ok {
		t.Fatal("a new user refused after the lockouts ended")
	}
}

// TestLimiterForgetsCleanKeys: a key with nothing left to count takes no room.
func TestLimiterForgetsCleanKeys(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now})
	l.Allow("192.0.2.1", "alice")
	l.Success("192.0.2.1", "alice")
	if a, u := l.Len(); a != 0 || u != 0 {
		t.Errorf("after a success: Len = %d, %d", a, u)
	}
	l.Allow("192.0.2.1", "alice")
	l.Failure("192.0.2.1", "alice")
	clock.Advance(DefaultUserPolicy.Window)
	l.Allow("192.0.2.2", "bob") // any access tidies up what has expired
	l.Success("192.0.2.2", "bob")
	if a, u := l.Len(); a != 0 || u != 0 {
		t.Errorf("after the window: Len = %d, %d", a, u)
	}
}

// invariants verifies the table's invariants: the map and the heap hold the same entries, the
// heap is ordered, every entry still has something to count, and the bound holds.
func (t *limitTable) invariants() error {
	if len(t.m) != len(t.ends) || len(t.m) > t.max {
		return fmt.Errorf("%d keys, %d in the heap, max %d", len(t.m), len(t.ends), t.max)
	}
	for i, e := range t.ends {
		switch {
		case e.index != i:
			return fmt.Errorf("%q: index %d at %d", e.key, e.index, i)
		case t.m[e.key] != e:
			return fmt.Errorf("%q in the heap, not in the map", e.key)
		case i > 0 && e.end.Before(t.ends[(i-1)/2].end):
			return fmt.Errorf("heap out of order at %d", i)
		case e.failures == 0 && e.pending == 0 && e.lockedUntil.IsZero():
			return fmt.Errorf("%q has nothing to count", e.key)
		}
	}
	return nil
}

// TestLimiterRandom drives a small limiter with random attempts, reports and clock steps,
// checking the tables' invariants after each step and that no locked-out user is ever let in
// before its lockout ends, unless a correct password (an attempt allowed before the lockout)
// cleared it.
func TestLimiterRandom(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now, MaxEntries: 16})
	rng := rand.New(rand.NewPCG(1, 2))
	type attempt struct{ ip, user string }
	var inFlight []attempt
	lockedUntil := map[string]time.Time{}
	allowed, refused, locks := 0, 0, 0
	for step := range 50_000 {
		switch r := rng.IntN(10); {
		case r < 5:
			// Skewed towards low numbers, so that some users and addresses are locked
			// out while many others fill the tables.
			ip := fmt.Sprintf("192.0.2.%d", rng.IntN(rng.IntN(60)+1))
			user := fmt.Sprintf("user%d", rng.IntN(rng.IntN(60)+1))
			_, ok := l.Allow(ip, user)
			if ok && clock.Now().Before(lockedUntil[user]) {
				t.Fatalf("step %d: %s let in, locked out until %v", step, user, lockedUntil[user])
			}
			if ok {
				allowed++
				inFlight = append(inFlight, attempt{ip, user})
			} else {
				refused++
			}
		case r < 8 && len(inFlight) > 0:
			i := rng.IntN(len(inFlight))
			a := inFlight[i]
			inFlight = append(inFlight[:i], inFlight[i+1:]...)
			if rng.IntN(5) == 0 {
				l.Success(a.ip, a.user)
				delete(lockedUntil, a.user)
				break
			}
			l.Failure(a.ip, a.user)
			if e := l.users.m[a.user]; e != nil && !e.lockedUntil.IsZero() {
				if !lockedUntil[a.user].Equal(e.lockedUntil) {
					locks++
				}
				lockedUntil[a.user] = e.lockedUntil
			}
		default:
			clock.Advance(time.Duration(rng.IntN(30)) * time.Second)
		}
		if err := l.addrs.invariants(); err != nil {
			t.Fatalf("step %d: addresses: %v", step, err)
		}
		if err := l.users.invariants(); err != nil {
			t.Fatalf("step %d: users: %v", step, err)
		}
	}
	t.Logf("allowed %d, refused %d, %d lockouts", allowed, refused, locks)
	if allowed < 1000 || refused < 1000 || locks < 30 {
		t.Errorf("allowed %d, refused %d, %d lockouts: the mix does not exercise them", allowed, refused, locks)
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"192.0.2.1:993":        "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"[2001:db8::1]:993":    "2001:db8::/64",
		"2001:db8:0:0:ffff::1": "2001:db8::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not an address":       "not an address",
		"":                     "",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

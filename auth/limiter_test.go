package auth

import (
	"fmt"
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
	for i := range DefaultAddrPolicy.MaxFailures {
		ip := fmt.Sprintf("[2001:db8:1:2::%x]:%d", i, 40000+i)
		wait, ok := l.Allow(ip, fmt.Sprintf("user%d", i))
		if !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		clock.Advance(wait)
		l.Failure(ip, fmt.Sprintf("user%d", i))
	}
	if _, ok := l.Allow("2001:db8:1:2:ffff::1", "newuser"); ok {
		t.Error("same /64 not locked out")
	}
	if _, ok := l.Allow("2001:db8:1:3::1", "newuser"); !ok {
		t.Error("a neighbouring /64 is locked out")
	}
	if a, u := l.Len(); a != 2 || u != DefaultAddrPolicy.MaxFailures+1 {
		t.Errorf("Len = %d, %d", a, u)
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

func TestLimiterBound(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterOptions{Clock: clock.Now, MaxEntries: 100})
	// The first user is locked out, then 100 other keys push it out of the table.
	for range DefaultUserPolicy.MaxFailures {
		l.Allow("192.0.2.1", "victim")
		l.Failure("192.0.2.1", "victim")
	}
	if _, ok := l.Allow("192.0.2.2", "victim"); ok {
		t.Fatal("victim not locked out")
	}
	for i := range 10_000 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff)
		user := fmt.Sprintf("u%d", i)
		l.Allow(ip, user)
		l.Failure(ip, user)
		if a, u := l.Len(); a > 100 || u > 100 {
			t.Fatalf("tables grew to %d, %d entries", a, u)
		}
	}
	if a, u := l.Len(); a != 100 || u != 100 {
		t.Errorf("Len = %d, %d; want 100, 100", a, u)
	}
	// Documented consequence of the bound: the oldest entry is gone.
	if _, ok := l.Allow("192.0.2.3", "victim"); !ok {
		t.Error("evicted entry still refuses")
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

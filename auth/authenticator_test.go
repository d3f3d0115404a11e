package auth

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestAuthenticator(t *testing.T) (*Authenticator, *fakeClock, *syncBuffer, *[]time.Duration) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "Alice@Example.org:"+cheapHash(t, "hunter2")+"\n")
	clock := newFakeClock()
	log, logs := testLogger()
	f, err := NewFile(path, FileOptions{Logger: log, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var slept []time.Duration
	a := NewAuthenticator(f, AuthenticatorOptions{
		Limiter: NewLimiter(LimiterOptions{Clock: clock.Now}),
		Logger:  log,
		Sleep: func(ctx context.Context, d time.Duration) error {
			slept = append(slept, d)
			clock.Advance(d)
			return ctx.Err()
		},
	})
	return a, clock, logs, &slept
}

func TestLogin(t *testing.T) {
	a, _, logs, slept := newTestAuthenticator(t)
	ctx := context.Background()
	mb, err := a.Login(ctx, "192.0.2.1", "alice@EXAMPLE.org", "hunter2")
	if err != nil || mb != "alice@example.org" {
		t.Fatalf("Login = %q, %v", mb, err)
	}
	// Wrong password and unknown user: the same error.
	_, err1 := a.Login(ctx, "192.0.2.1", "alice@example.org", "wrong-pw-1")
	_, err2 := a.Login(ctx, "192.0.2.1", "mallory@example.org", "wrong-pw-2")
	if !errors.Is(err1, ErrBadCredentials) || !errors.Is(err2, ErrBadCredentials) || err1.Error() != err2.Error() {
		t.Errorf("wrong password: %v; unknown user: %v", err1, err2)
	}
	out := logs.String()
	if !strings.Contains(out, "login failed") || !strings.Contains(out, "user=mallory@example.org") || !strings.Contains(out, "client_ip=192.0.2.1") {
		t.Errorf("failures not logged with user and address:\n%s", out)
	}
	for _, pw := range []string{"hunter2", "wrong-pw-1", "wrong-pw-2"} {
		if strings.Contains(out, pw) {
			t.Errorf("log shows password %q:\n%s", pw, out)
		}
	}
	if len(*slept) != 0 {
		t.Errorf("slept %v for the first failures", *slept)
	}
}

func TestLoginRateLimited(t *testing.T) {
	a, clock, logs, slept := newTestAuthenticator(t)
	ctx := context.Background()
	user := "alice@example.org"
	for i := range DefaultUserPolicy.MaxFailures {
		_, err := a.Login(ctx, "192.0.2.1", user, "guess")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60}
	if len(*slept) != len(want) {
		t.Fatalf("slept %v", *slept)
	}
	for i, w := range want {
		if (*slept)[i] != w*time.Second {
			t.Errorf("delay %d = %v, want %v", i, (*slept)[i], w*time.Second)
		}
	}
	// Locked: even the right password is refused, without saying whether it was right.
	_, err := a.Login(ctx, "203.0.113.5", user, "hunter2")
	if !errors.Is(err, ErrRateLimited) || errors.Is(err, ErrBadCredentials) {
		t.Fatalf("locked out: %v", err)
	}
	if !strings.Contains(logs.String(), "rate limited") || strings.Contains(logs.String(), "hunter2") {
		t.Errorf("log:\n%s", logs)
	}
	clock.Advance(DefaultUserPolicy.Lockout)
	if mb, err := a.Login(ctx, "203.0.113.5", user, "hunter2"); err != nil || mb != user {
		t.Errorf("after the lockout: %q, %v", mb, err)
	}
}

func TestLoginCancelledDuringDelay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:"+cheapHash(t, "pw")+"\n")
	f, err := NewFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := NewLimiter(LimiterOptions{PerUser: LimitPolicy{
		FreeFailures: 0, BaseDelay: time.Hour, MaxDelay: time.Hour, MaxFailures: 100, Window: time.Hour, Lockout: time.Hour,
	}})
	a := NewAuthenticator(f, AuthenticatorOptions{Limiter: lim}) // the real sleep
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = a.Login(ctx, "192.0.2.1", "alice", "pw")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("Login = %v after %v", err, time.Since(start))
	}
}

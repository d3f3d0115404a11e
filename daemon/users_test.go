package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/auth"
)

// A passwd-file missing at start is read once it exists: on the first login
// after retryInterval, or at once on Reload.
func TestUsersMissingFileLoadsLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	var logs bytes.Buffer
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	u := newUsers(path, slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	if _, ok := u.Verify("alice@example.com", "pw"); ok {
		t.Fatal("login without a passwd-file")
	}
	if !strings.Contains(logs.String(), "cannot read the passwd-file") || !strings.Contains(logs.String(), "login refused: the passwd-file is not loaded") {
		t.Errorf("log:\n%s", logs.String())
	}
	writeUsers(t, path, map[string]string{"alice@example.com": "pw"})
	advance(time.Second)
	if mb, ok := u.Verify("alice@example.com", "pw"); !ok || mb != "alice@example.com" {
		t.Fatalf("after the file appeared: %q %v", mb, ok)
	}

	// Reload with a broken file keeps the users loaded before.
	if err := os.WriteFile(path, []byte("broken line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.Reload(); err == nil || !errors.Is(err, auth.ErrLine) {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if _, ok := u.Verify("alice@example.com", "pw"); !ok {
		t.Error("a failed reload dropped the users")
	}

	// Reload loads a file that was missing without waiting for a login.
	path2 := filepath.Join(t.TempDir(), "users")
	u2 := newUsers(path2, slog.New(slog.DiscardHandler), nil)
	if err := u2.Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}
	writeUsers(t, path2, map[string]string{"bob@example.com": "pw"})
	if err := u2.Reload(); err != nil {
		t.Fatal(err)
	}
	if u2.file.Load() == nil {
		t.Error("Reload did not load the file")
	}
}

// A rate-limited login is a temporary failure for the servers (POP3
// "-ERR [SYS/TEMP]"), not a wrong password.
func TestLoginAuthRateLimitIsTemporary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]string{"alice@example.com": "pw"})
	lim := auth.NewLimiter(auth.LimiterOptions{PerUser: auth.LimitPolicy{MaxFailures: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, Window: time.Hour, Lockout: time.Hour}})
	a := loginAuth{auth.NewAuthenticator(newUsers(path, slog.New(slog.DiscardHandler), nil), auth.AuthenticatorOptions{Limiter: lim})}
	ctx := context.Background()
	if mb, err := a.Login(ctx, "127.0.0.1", "Alice@example.com", "pw"); err != nil || mb != "alice@example.com" {
		t.Fatalf("good login: %q %v", mb, err)
	}
	_, err := a.Login(ctx, "127.0.0.1", "alice@example.com", "wrong")
	var tmp interface{ Temporary() bool }
	if !errors.Is(err, auth.ErrBadCredentials) || errors.As(err, &tmp) {
		t.Fatalf("wrong password: %v", err)
	}
	_, err = a.Login(ctx, "127.0.0.1", "alice@example.com", "pw")
	if !errors.Is(err, auth.ErrRateLimited) || !errors.As(err, &tmp) || !tmp.Temporary() {
		t.Fatalf("locked out: %v, want a temporary ErrRateLimited", err)
	}
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifelinemail/lifeline/auth"
)

// users is the passwd-file as the IMAP and POP3 logins see it.
//
// A passwd-file that is missing or malformed when `lifeline serve` starts
// does not stop it: the milter must journal mail whatever happens to the
// continuity mailbox's users. Every login then fails, each with a log line
// that says why, and the file is tried again at most once per retryInterval
// when a login asks, and on SIGHUP; once read, auth.File re-reads it on every
// change by itself. `lifeline check-config` reports the file's problems.
type users struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	file atomic.Pointer[auth.File]

	mu      sync.Mutex // guards the fields below, and one load at a time
	lastTry time.Time
	lastErr error
}

// retryInterval paces the attempts to read a passwd-file that could not be
// read, as auth.File paces its checks for a changed one.
const retryInterval = time.Second

// newUsers reads the passwd-file at path if it can. clock paces the retries;
// nil is time.Now.
func newUsers(path string, log *slog.Logger, clock func() time.Time) *users {
	if clock == nil {
		clock = time.Now
	}
	u := &users{path: path, log: log, now: clock}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.loadLocked()
	return u
}

// loadLocked tries to read the file; it logs a failure once per distinct error.
func (u *users) loadLocked() *auth.File {
	u.lastTry = u.now()
	f, err := auth.NewFile(u.path, auth.FileOptions{Logger: u.log})
	if err != nil {
		if u.lastErr == nil || u.lastErr.Error() != err.Error() {
			u.log.Error("cannot read the passwd-file: every IMAP and POP3 login fails until it can be read (create users with `lifeline passwd`)",
				"passwd_file", u.path, "err", err)
		}
		u.lastErr = err
		return nil
	}
	u.lastErr = nil
	u.file.Store(f)
	return f
}

// Verify implements auth.Verifier.
func (u *users) Verify(user, password string) (string, bool) {
	f := u.file.Load()
	if f == nil {
		u.mu.Lock()
		if f = u.file.Load(); f == nil && u.now().Sub(u.lastTry) >= retryInterval {
			f = u.loadLocked()
		}
		lastErr := u.lastErr
		u.mu.Unlock()
		if f == nil {
			u.log.Warn("login refused: the passwd-file is not loaded", "passwd_file", u.path, "err", lastErr)
			return "", false
		}
	}
	return f.Verify(user, password)
}

// Reload re-reads the file now (SIGHUP). On error the users loaded before
// stay in use.
func (u *users) Reload() error {
	if f := u.file.Load(); f != nil {
		if err := f.Reload(); err != nil {
			return fmt.Errorf("passwd-file: %w", err)
		}
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.file.Load() != nil {
		return nil
	}
	if u.loadLocked() == nil {
		return fmt.Errorf("passwd-file: %w", u.lastErr)
	}
	return nil
}

// loginAuth adapts auth.Authenticator to the servers' Authenticator: a rate
// limit is a temporary failure, which POP3 answers "-ERR [SYS/TEMP]"
// (RFC 3206 §4) so that a client does not ask its user for a new password
// that would not be checked anyway.
type loginAuth struct{ a *auth.Authenticator }

func (l loginAuth) Login(ctx context.Context, clientIP, user, password string) (string, error) {
	mb, err := l.a.Login(ctx, clientIP, user, password)
	if errors.Is(err, auth.ErrRateLimited) {
		return "", temporaryError{err}
	}
	return mb, err
}

type temporaryError struct{ error }

func (e temporaryError) Temporary() bool { return true }
func (e temporaryError) Unwrap() error   { return e.error }

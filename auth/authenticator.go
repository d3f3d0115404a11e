package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"
)

// Errors of Authenticator.Login. Neither says whether the user name or the password was
// wrong; servers answer both with one generic text (RFC 9051 §6.2.3 "NO [AUTHENTICATIONFAILED]",
// RFC 1939 "-ERR").
var (
	ErrBadCredentials = errors.New("authentication failed")
	ErrRateLimited    = errors.New("too many failed logins: try again later")
)

// Verifier checks a password; *File is one.
type Verifier interface {
	Verify(user, password string) (canonicalUser string, ok bool)
}

// AuthenticatorOptions configures an Authenticator.
type AuthenticatorOptions struct {
	// Limiter rate-limits attempts. Nil makes one with the defaults.
	Limiter *Limiter
	// Logger receives one line per failed or refused login, with the user and client
	// address, never the password. Nil discards.
	Logger *slog.Logger
	// Sleep waits out the limiter's delay; nil waits on a timer. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Authenticator checks logins for the IMAP and POP3 servers: rate limit, then password.
type Authenticator struct {
	users   Verifier
	limiter *Limiter
	log     *slog.Logger
	sleep   func(ctx context.Context, d time.Duration) error
}

// NewAuthenticator returns an Authenticator over users.
func NewAuthenticator(users Verifier, opts AuthenticatorOptions) *Authenticator {
	if opts.Limiter == nil {
		opts.Limiter = NewLimiter(LimiterOptions{})
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	return &Authenticator{users: users, limiter: opts.Limiter, log: opts.Logger, sleep: opts.Sleep}
}

// maxLoggedUser bounds the user name in a log line: a client that pastes its password into
// the user field should not find all of it in the log, nor should a megabyte of garbage.
const maxLoggedUser = 128

// LogUser returns the user name of a login attempt as it may be logged: cut to 128 bytes
// (at a character boundary) with "..." added. Every log line that names a login's user goes
// through it, the servers' too.
func LogUser(user string) string {
	if len(user) <= maxLoggedUser {
		return user
	}
	n := maxLoggedUser
	for n > 0 && !utf8.RuneStart(user[n]) {
		n--
	}
	return user[:n] + "..."
}

// Login checks user's password for a client at clientIP (an IP address, with or without a
// port). It returns the canonical user name, which names the mailbox. A failure is
// ErrBadCredentials or ErrRateLimited (wrapped: test with errors.Is), or ctx's error if ctx
// ends while the limiter's delay is waited out. The delay is served before the password is
// checked, so a guess is answered no sooner.
func (a *Authenticator) Login(ctx context.Context, clientIP, user, password string) (mailbox string, err error) {
	logUser := LogUser(user)
	wait, ok := a.limiter.Allow(clientIP, user)
	if !ok {
		a.log.Warn("login refused: rate limited", "user", logUser, "client_ip", clientIP, "retry_after", wait.Round(time.Second))
		return "", fmt.Errorf("%w (retry after %s)", ErrRateLimited, wait.Round(time.Second))
	}
	if wait > 0 {
		if err := a.sleep(ctx, wait); err != nil {
			// Counted as a failure: dropping the connection during the delay must not
			// be a free way out of it.
			a.limiter.Failure(clientIP, user)
			a.log.Info("login abandoned during delay", "user", logUser, "client_ip", clientIP, "delay", wait)
			return "", err
		}
	}
	name, ok := a.users.Verify(user, password)
	if !ok {
		a.limiter.Failure(clientIP, user)
		a.log.Warn("login failed", "user", logUser, "client_ip", clientIP, "delay", wait)
		return "", ErrBadCredentials
	}
	a.limiter.Success(clientIP, user)
	return name, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

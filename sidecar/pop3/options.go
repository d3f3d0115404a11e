package pop3

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// Authenticator checks a user's credentials (package auth implements it over a
// Dovecot-style passwd-file). clientIP is the client's address without port,
// for rate limiting. It returns the continuity mailbox the user may read.
//
// An error means the login failed; the client hears "-ERR [AUTH]" and never
// the cause. An error with a method Temporary() bool that returns true (a
// passwd-file that cannot be read, a rate limit) is answered "-ERR [SYS/TEMP]"
// instead (RFC 3206 §4).
type Authenticator = sidecar.Authenticator

// ServingChecker decides whether Lifeline serves a mailbox now (DESIGN.md,
// `serve = "outage"`): during an outage of the user's mailbox server only. When
// it does not, text tells the user why ("your mailbox server is up, use it").
type ServingChecker = sidecar.ServingChecker

// Defaults used by New for zero Options fields.
const (
	// DefaultIdleTimeout is RFC 1939 §3's autologout timer: at least 10 minutes.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxLineLength bounds one command line, CRLF included. RFC 2449 §4
	// allows 255 octets for commands; SASL responses (RFC 5034 §4) are longer.
	DefaultMaxLineLength = 4096
	// DefaultMaxConnections bounds the connections open at once, so that a
	// flood of sockets cannot exhaust the process's file descriptors, which
	// the milter in the same process needs too.
	DefaultMaxConnections = 1000
	// DefaultMaxConnectionsPerClient bounds the connections open at once from
	// one client address (an IPv6 /64). A POP3 client uses one connection
	// per account (RFC 1939 §8 locks the maildrop to one session).
	DefaultMaxConnectionsPerClient = 10
	// maxErrors is how many failed commands (unknown, malformed, overlong,
	// failed logins) a session may make before the server hangs up.
	maxErrors = 10
)

// Options configure a Server. Store, Journal and Auth are required.
type Options struct {
	// Store is the users' views: which messages a user sees, and where QUIT
	// hides the ones deleted with DELE. Required.
	Store *userview.Store

	// Journal streams message bodies (RETR, TOP) and gives UIDVALIDITY for
	// UIDL. Required.
	Journal journal.Journal

	// Auth checks USER/PASS and AUTH PLAIN credentials. Required.
	Auth Authenticator

	// Serving tells whether a mailbox is served now. Nil serves always.
	Serving ServingChecker

	// TLSConfig enables STLS (RFC 2595) on Serve and is required by ServeTLS
	// (implicit TLS, port 995 style). A MinVersion below TLS 1.2 is raised to
	// TLS 1.2. Nil: no TLS; plaintext logins then work on loopback only.
	TLSConfig *tls.Config

	// Logger receives structured logs, with one "conn" attribute on every line
	// of a connection. Passwords and message bodies are never logged. Nil
	// discards logs.
	Logger *slog.Logger

	// Registerer is where metrics are registered. Nil uses a private registry.
	// Two Servers on one Registerer share their collectors.
	Registerer prometheus.Registerer

	// Panics, when not nil, is incremented for every recovered panic instead of
	// a lifeline_panics_total{component="pop3"} counter created on Registerer.
	Panics prometheus.Counter

	// Hostname is named in the greeting. "" means os.Hostname().
	Hostname string

	// IdleTimeout closes a session that sends no command for this long, and
	// bounds each write to the client. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration

	// MaxLineLength bounds a command line. Zero means DefaultMaxLineLength.
	MaxLineLength int

	// MaxConnections is the most connections open at once; a connection over
	// it hears "-ERR [SYS/TEMP] too many connections" (RFC 2449 §8, RFC 3206
	// §4) and is closed. It counts a connection from accept until it closes,
	// logged in or not. Zero means DefaultMaxConnections; negative means no
	// limit.
	MaxConnections int

	// MaxConnectionsPerClient is the most connections open at once from one
	// client address, IPv6 addresses counted per /64 (package connlimit);
	// refused like MaxConnections. Zero means DefaultMaxConnectionsPerClient;
	// negative means no limit.
	MaxConnectionsPerClient int
}

func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("pop3: Options.Store is required"))
	}
	if o.Journal == nil {
		errs = append(errs, errors.New("pop3: Options.Journal is required"))
	}
	if o.Auth == nil {
		errs = append(errs, errors.New("pop3: Options.Auth is required"))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, errors.New("pop3: Options.IdleTimeout must not be negative"))
	}
	if o.MaxLineLength < 0 || (o.MaxLineLength > 0 && o.MaxLineLength < 64) {
		errs = append(errs, errors.New("pop3: Options.MaxLineLength must be 0 or at least 64"))
	}
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	o.Hostname = sidecar.Hostname(o.Hostname)
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxLineLength == 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxConnectionsPerClient == 0 {
		o.MaxConnectionsPerClient = DefaultMaxConnectionsPerClient
	}
	o.TLSConfig = sidecar.ServerTLS(o.TLSConfig)
	return o, nil
}

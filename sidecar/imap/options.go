package imap

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
// for rate limiting. It returns the continuity mailbox the user may read. It
// is the same interface as pop3.Authenticator, so one value serves both.
//
// An error means the login failed; the client hears "NO [AUTHENTICATIONFAILED]"
// and never the cause. An error with a method Temporary() bool that returns
// true (a passwd-file that cannot be read, a rate limit) is answered
// "NO [UNAVAILABLE]" instead (RFC 5530 §3).
type Authenticator = sidecar.Authenticator

// ServingChecker decides whether Lifeline serves a mailbox now (DESIGN.md,
// `serve = "outage"`): during an outage of the user's mailbox server only. When
// it does not, text tells the user why ("your mailbox server is up, use it");
// the login fails with "NO [UNAVAILABLE] text". Same interface as
// pop3.ServingChecker.
type ServingChecker = sidecar.ServingChecker

// Defaults used by New for zero Options fields.
const (
	// DefaultIdleTimeout is RFC 3501 §5.4's autologout timer: at least 30
	// minutes of inactivity in the authenticated state. It also bounds an IDLE
	// (RFC 2177 §3: clients re-issue IDLE at least every 29 minutes).
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultPollInterval is how often a mailbox that some session IDLEs on is
	// checked for new mail (the journal has no change notification).
	DefaultPollInterval = time.Second
	// DefaultSearchMaxBytes bounds the message bytes one SEARCH reads for
	// BODY, TEXT and header criteria that the stored summary cannot answer.
	DefaultSearchMaxBytes = 256 << 20
	// DefaultMaxAppendSize is the APPENDLIMIT (RFC 7889) for APPEND to Sent.
	DefaultMaxAppendSize = 64 << 20
	// DefaultStructureCacheSize is how many parsed MIME structures of messages
	// journaled without one are kept.
	DefaultStructureCacheSize = 256
	// DefaultMaxConnections bounds the connections open at once, so that a
	// flood of sockets cannot exhaust the process's file descriptors, which
	// the milter in the same process needs too.
	DefaultMaxConnections = 1000
	// DefaultMaxConnectionsPerClient bounds the connections open at once from
	// one client address (an IPv6 /64): Thunderbird opens about 5 per
	// account, and a household behind one NAT has a few accounts.
	DefaultMaxConnectionsPerClient = 20
)

// Options configure a Server. Store, Journal and Auth are required.
type Options struct {
	// Store is the users' views: per message flags, and which messages the
	// user expunged. Required.
	Store *userview.Store

	// Journal holds the mail: INBOX is the journal mailbox named by the
	// Authenticator, Sent the journal mailbox "<mailbox>/Sent". Required.
	Journal journal.Journal

	// Auth checks LOGIN and AUTHENTICATE PLAIN credentials. Required.
	Auth Authenticator

	// Serving tells whether a mailbox is served now. Nil serves always.
	Serving ServingChecker

	// TLSConfig enables STARTTLS (RFC 3501 §6.2.1) on Serve and is required by
	// ServeTLS (implicit TLS, port 993 style, RFC 8314 §3.3). A MinVersion
	// below TLS 1.2 is raised to TLS 1.2. Nil: no TLS; plaintext logins then
	// work on loopback only.
	TLSConfig *tls.Config

	// Logger receives structured logs, with one "conn" attribute on every line
	// of a connection. Passwords and message bodies are never logged. Nil
	// discards logs.
	Logger *slog.Logger

	// Registerer is where metrics are registered. Nil uses a private registry.
	// Two Servers on one Registerer share their collectors, and
	// lifeline_logins_total is shared with package pop3.
	Registerer prometheus.Registerer

	// Panics, when not nil, is incremented for every recovered panic instead of
	// a lifeline_panics_total{component="imap"} counter created on Registerer.
	Panics prometheus.Counter

	// Hostname is named in the BYE sent at shutdown. "" means os.Hostname().
	Hostname string

	// IdleTimeout closes a connection that sends nothing for this long,
	// including during IDLE. Zero means DefaultIdleTimeout; RFC 3501 §5.4 asks
	// for at least 30 minutes once logged in.
	IdleTimeout time.Duration

	// PollInterval is how often the journal is asked whether a mailbox that a
	// session IDLEs on has new mail; one poller per mailbox serves all its
	// idling sessions. Zero means DefaultPollInterval.
	PollInterval time.Duration

	// SearchMaxBytes bounds how many message bytes one SEARCH command reads
	// from the journal (BODY, TEXT, and HEADER of fields that the stored
	// summary does not hold). A SEARCH that would read more fails with
	// "NO [LIMIT]". Zero means DefaultSearchMaxBytes; negative means no limit.
	SearchMaxBytes int64

	// MaxAppendSize is the largest message APPEND accepts (announced as
	// APPENDLIMIT, RFC 7889). Zero means DefaultMaxAppendSize.
	MaxAppendSize int64

	// StructureCacheSize is how many MIME structures parsed on demand (for
	// messages journaled before the journal stored them) are cached. Zero
	// means DefaultStructureCacheSize.
	StructureCacheSize int

	// MaxConnections is the most connections open at once; a connection over
	// it hears "* BYE Too many connections" (RFC 9051 §7.1.5) and is closed.
	// It counts a connection from accept until it closes, logged in or not.
	// Zero means DefaultMaxConnections; negative means no limit.
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
		errs = append(errs, errors.New("imap: Options.Store is required"))
	}
	if o.Journal == nil {
		errs = append(errs, errors.New("imap: Options.Journal is required"))
	}
	if o.Auth == nil {
		errs = append(errs, errors.New("imap: Options.Auth is required"))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, errors.New("imap: Options.IdleTimeout must not be negative"))
	}
	if o.PollInterval < 0 {
		errs = append(errs, errors.New("imap: Options.PollInterval must not be negative"))
	}
	if o.MaxAppendSize < 0 || o.MaxAppendSize > 1<<32-1 {
		errs = append(errs, errors.New("imap: Options.MaxAppendSize must be between 0 and 4 GiB"))
	}
	if o.StructureCacheSize < 0 {
		errs = append(errs, errors.New("imap: Options.StructureCacheSize must not be negative"))
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
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.SearchMaxBytes == 0 {
		o.SearchMaxBytes = DefaultSearchMaxBytes
	}
	if o.MaxAppendSize == 0 {
		o.MaxAppendSize = DefaultMaxAppendSize
	}
	if o.StructureCacheSize == 0 {
		o.StructureCacheSize = DefaultStructureCacheSize
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

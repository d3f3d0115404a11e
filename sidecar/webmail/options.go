package webmail

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/sidecar/webmail/mailview"
)

// Servers maps a continuity mailbox to its mailbox server (addrmap.Map), for
// the outage banner.
type Servers interface {
	ServerOf(mailbox string) (server string, ok bool)
}

// Defaults used by New for zero Options fields.
const (
	// DefaultSessionIdle logs a user out after this long without a request,
	// like IMAP's autologout timer (RFC 9051 §5.4).
	DefaultSessionIdle = 30 * time.Minute
	// DefaultSessionMax ends a session this long after login, however busy.
	DefaultSessionMax = 12 * time.Hour
	// DefaultPageSize is how many messages one list page shows.
	DefaultPageSize = 50
	// DefaultSearchMaxBytes bounds the message bytes one text search reads.
	DefaultSearchMaxBytes = 64 << 20
	// DefaultMaxUpload bounds one compose form, attachments included.
	DefaultMaxUpload = 25 << 20
	// DefaultMaxSessions bounds the sessions kept in memory.
	DefaultMaxSessions = 10000
	// DefaultSendTimeout bounds one submission to the relay.
	DefaultSendTimeout = time.Minute
)

// Options configure a Server. Store, Journal and Auth are required.
type Options struct {
	// Store is the users' views, shared with IMAP and POP3. Required.
	Store *userview.Store
	// Journal holds the mail: the inbox is the journal mailbox named by the
	// Authenticator, Sent the journal mailbox "<mailbox>/Sent" (as in IMAP).
	// Required.
	Journal journal.Journal
	// Auth checks logins; the daemon passes the one IMAP and POP3 use, so
	// that they share one rate limit. Required.
	Auth sidecar.Authenticator
	// Serving tells whether a mailbox is served now. Nil serves always.
	Serving sidecar.ServingChecker

	// Control is the outage state and its controls (the admin API's), for
	// the banner and the admin page. Nil: no banner, no admin page.
	Control admin.Control
	// Servers maps a mailbox to its mailbox server for the banner. Nil: no
	// banner.
	Servers Servers
	// Admins are the login names (or mailboxes) that may open the admin
	// page, compared case-insensitively.
	Admins []string

	// Relay submits composed mail. A zero Addr disables sending: the compose
	// page then says so.
	Relay mailview.Relay

	// TLSConfig enables ServeTLS. A MinVersion below TLS 1.2 is raised. Nil:
	// plain HTTP, which is served to loopback clients only.
	TLSConfig *tls.Config

	Logger *slog.Logger
	// Registerer is where metrics are registered. Nil uses a private
	// registry. lifeline_logins_total is shared with IMAP and POP3.
	Registerer prometheus.Registerer
	// Panics, when not nil, counts recovered panics instead of a
	// lifeline_panics_total{component="webmail"} child on Registerer.
	Panics prometheus.Counter

	SessionIdle    time.Duration // zero: DefaultSessionIdle
	SessionMax     time.Duration // zero: DefaultSessionMax
	MaxSessions    int           // zero: DefaultMaxSessions
	PageSize       int           // zero: DefaultPageSize
	SearchMaxBytes int64         // zero: DefaultSearchMaxBytes; negative: no limit
	MaxUpload      int64         // zero: DefaultMaxUpload
	SendTimeout    time.Duration // zero: DefaultSendTimeout

	// Now is the clock; nil is time.Now. Tests move it to expire sessions.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("webmail: Options.Store is required"))
	}
	if o.Journal == nil {
		errs = append(errs, errors.New("webmail: Options.Journal is required"))
	}
	if o.Auth == nil {
		errs = append(errs, errors.New("webmail: Options.Auth is required"))
	}
	if o.SessionIdle < 0 || o.SessionMax < 0 || o.MaxSessions < 0 || o.PageSize < 0 || o.MaxUpload < 0 || o.SendTimeout < 0 {
		errs = append(errs, errors.New("webmail: Options durations and sizes must not be negative"))
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
	if o.SessionIdle == 0 {
		o.SessionIdle = DefaultSessionIdle
	}
	if o.SessionMax == 0 {
		o.SessionMax = DefaultSessionMax
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.SearchMaxBytes == 0 {
		o.SearchMaxBytes = DefaultSearchMaxBytes
	}
	if o.MaxUpload == 0 {
		o.MaxUpload = DefaultMaxUpload
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = DefaultSendTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	admins := make([]string, 0, len(o.Admins))
	for _, a := range o.Admins {
		admins = append(admins, strings.ToLower(strings.TrimSpace(a)))
	}
	o.Admins = admins
	o.TLSConfig = sidecar.ServerTLS(o.TLSConfig)
	return o, nil
}

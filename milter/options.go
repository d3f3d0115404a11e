package milter

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
)

// Resolver maps an envelope recipient to the continuity mailboxes it belongs to
// and the configured mailbox server that serves it (see DESIGN.md, "Addresses
// and mailboxes"). mailer and host are Postfix's {rcpt_mailer} and {rcpt_host}
// macros for this recipient ("" when the MTA did not send them). A recipient of a
// foreign domain maps to no mailbox and server "".
//
// Resolve is called once per RCPT TO from the connection's goroutine; it must be
// safe for concurrent use by many connections and must not block on the network.
type Resolver interface {
	Resolve(rcpt, mailer, host string) (mailboxes []string, server string)
}

// OutageChecker tells whether a mailbox server is in outage (health.Monitor
// implements it). InOutage is called for each recipient with a mailbox server
// at every end-of-message, from many connections at once: it must be safe for
// concurrent use and cheap (an atomic load), and must not block.
type OutageChecker interface {
	InOutage(server string) bool
}

// ErrorAction is what the milter answers the MTA when a message could not be
// journaled.
type ErrorAction int

const (
	// Accept lets the MTA deliver the message anyway: Lifeline never stops the
	// mail flow (DESIGN.md, "The flow of one message", step 4). The message is
	// then missing from the journal; the failure is counted and logged.
	Accept ErrorAction = iota
	// TempFail answers SMFIR_TEMPFAIL, so that the MTA rejects the message with
	// a 4xx reply and the sending client retries later (RFC 5321 §4.2.5).
	TempFail
)

func (a ErrorAction) String() string {
	switch a {
	case Accept:
		return "accept"
	case TempFail:
		return "tempfail"
	default:
		return fmt.Sprintf("ErrorAction(%d)", int(a))
	}
}

// Defaults used by New for zero Options fields.
const (
	DefaultSpoolThreshold   int64 = 1 << 20 // 1 MiB
	DefaultProgressInterval       = 5 * time.Second
	DefaultWriteTimeout           = 10 * time.Second
)

// Options configure a Server. Only Journal is required.
type Options struct {
	// Journal receives every message at end-of-message. Required.
	Journal journal.Journal

	// Resolver maps each RCPT TO to its continuity mailboxes and mailbox
	// server. Nil means every recipient maps to no mailbox (the message is
	// still journaled, but lands in no continuity mailbox).
	Resolver Resolver

	// Outage tells which mailbox servers are in outage. At end-of-message
	// each recipient whose server is in outage is journaled in state custody
	// and taken away from the MTA (SMFIR_DELRCPT, or SMFIR_DISCARD when every
	// recipient is Lifeline's); see custody.go. Nil means no server is ever in
	// outage: every recipient is journaled as mta.
	Outage OutageChecker

	// Logger receives structured logs; every line of one MTA connection carries
	// the same "conn" attribute. Message bodies and credentials are never
	// logged. Nil discards logs.
	Logger *slog.Logger

	// Registerer is where the milter's metrics are registered. Nil uses a
	// private registry (metrics are then collected but not exported).
	// Registering twice on the same Registerer (two Servers) reuses the
	// already registered collectors.
	Registerer prometheus.Registerer

	// Panics, when not nil, is incremented for every recovered panic instead
	// of a lifeline_panics_total{component="milter"} counter that New would
	// otherwise create on Registerer. cmd/lifeline passes the child of its own
	// process-wide lifeline_panics_total vector here so that the metric is
	// registered once.
	Panics prometheus.Counter

	// OnJournalError decides the answer when a message cannot be journaled
	// (Append failed, the spool file could not be written, or a callback
	// panicked): Accept (the default) or TempFail. Either way the failure is
	// counted in lifeline_milter_messages_total and logged. It applies only
	// while none of the message's recipients is in outage: then the answer is
	// always TEMPFAIL, because Lifeline may only take custody of a message
	// whose custody record is durable (DESIGN.md, step 3).
	OnJournalError ErrorAction

	// SpoolThreshold is how many bytes of one message are kept in memory
	// before the rest spills into a temporary file in SpoolDir. Zero means
	// DefaultSpoolThreshold (1 MiB); a negative value spools every message to
	// disk.
	SpoolThreshold int64

	// SpoolDir is the directory for spool files; "" means os.TempDir(). Spool
	// files are created with mode 0600 and, where the OS allows it, unlinked
	// right after creation, so that they vanish even if the process dies.
	SpoolDir string

	// ReadTimeout bounds each read from the MTA. Zero (the default) means no
	// limit: the MTA only writes when its SMTP client does, and an idle SMTP
	// session must not break the milter connection.
	ReadTimeout time.Duration

	// WriteTimeout bounds each write to the MTA. Zero means
	// DefaultWriteTimeout (10 s).
	WriteTimeout time.Duration

	// ProgressInterval is how often the milter sends SMFIR_PROGRESS while a
	// journal write is in flight at end-of-message, so that the MTA's content
	// timeout (Postfix milter_content_timeout, 300 s by default) restarts
	// instead of firing. Zero means DefaultProgressInterval (5 s); a negative
	// value disables progress messages. Progress needs milter protocol
	// version 6; with older MTAs it is not sent.
	ProgressInterval time.Duration

	// Clock returns the current time for Envelope.Received and
	// Recipient.Updated. Nil means time.Now. Latencies are always measured
	// with the monotonic clock.
	Clock func() time.Time
}

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Journal == nil {
		errs = append(errs, errors.New("milter: Options.Journal is required"))
	}
	if o.OnJournalError != Accept && o.OnJournalError != TempFail {
		errs = append(errs, fmt.Errorf("milter: Options.OnJournalError: unknown action %d", int(o.OnJournalError)))
	}
	if o.ReadTimeout < 0 {
		errs = append(errs, errors.New("milter: Options.ReadTimeout must not be negative"))
	}
	if o.WriteTimeout < 0 {
		errs = append(errs, errors.New("milter: Options.WriteTimeout must not be negative"))
	}
	if len(errs) > 0 {
		return o, errors.Join(errs...)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.SpoolThreshold == 0 {
		o.SpoolThreshold = DefaultSpoolThreshold
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o, nil
}

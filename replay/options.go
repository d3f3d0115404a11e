package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is one mailbox server that replay delivers to.
type Server struct {
	Name string // the name custody recipients carry in Recipient.Server
	// Network and Address of its LMTP service: "tcp" and "HOST:PORT" or
	// "unix" and a socket path. Unused in smtp mode.
	Network, Address string
}

// Outage tells whether a server is in outage; health.Monitor implements it.
type Outage interface {
	InOutage(server string) bool
}

// Notifier receives events; *notify.Notifier implements it. Notify must not
// block for long.
type Notifier interface {
	Notify(ctx context.Context, ev notify.Event)
}

// Modes.
const (
	ModeLMTP = "lmtp" // deliver to each server's LMTP, to the mailbox addresses
	ModeSMTP = "smtp" // re-inject into the MTA over SMTP, to the RCPT TO addresses
)

// Options configures a Replayer.
type Options struct {
	// Journal holds the custody queue and records each outcome. Required.
	Journal journal.Journal
	// Servers are the mailbox servers to replay to; custody recipients of
	// any other server are left alone.
	Servers []Server
	// Outage pauses a server's replay while it reports true. Nil: never.
	Outage Outage

	// Mode is ModeLMTP (default) or ModeSMTP.
	Mode string
	// Reinject is the MTA's milter-free SMTP service for ModeSMTP:
	// "tcp:HOST:PORT" or "unix:/path".
	Reinject string

	// Concurrency is the number of parallel transactions (and connections)
	// per server. Default 10 (see config.Replay).
	Concurrency int
	// Rate caps the transactions (messages) per second per server; 0 means
	// no cap.
	Rate float64

	// RetryMin is the delay before the first retry; it doubles with each
	// attempt up to RetryMax, jittered by ±25 %. Defaults 30s and 30m.
	RetryMin, RetryMax time.Duration
	// GiveUpAfter fails a recipient that is still getting temporary errors
	// after this long of retrying: from its first replay attempt, as the
	// backoff schedule counts it (Replayer.retried), not from its arrival as
	// Postfix's maximal_queue_lifetime does. Default 5 days.
	GiveUpAfter time.Duration

	// DSN sends an RFC 3464 delivery status notification to the envelope
	// sender on each permanent failure, through Submit.
	DSN bool
	// Submit is the SMTP service DSNs are sent to: "tcp:HOST:PORT" or
	// "unix:/path". Required when DSN is set.
	Submit string
	// Hostname names this host in DSNs (Reporting-MTA) and LHLO.
	// Default os.Hostname.
	Hostname string

	// Notifier is told of permanent failures and finished replays. Nil: nobody.
	Notifier Notifier

	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // nil: a private registry
	// Panics, when set, counts recovered panics instead of a
	// lifeline_panics_total{component="replay"} counter made on Registerer.
	Panics prometheus.Counter

	// Clock gives the time for due checks, next attempts and give-up.
	// Default time.Now.
	Clock func() time.Time
	// Rand returns a number in [0, 1) for the retry jitter; it must be safe
	// for concurrent use. Default math/rand/v2.Float64.
	Rand func() float64

	// Rescan is the longest the scheduler sleeps without a timer or a Wake:
	// a safety net for custody it was not told about. Default RetryMax.
	Rescan time.Duration
	// Settle is when, after a Wake, the scheduler looks once more, for
	// messages the milter was journaling in custody while the outage ended.
	// Default 10s.
	Settle time.Duration
	// BacklogRefresh is the longest a paused server's backlog gauges go
	// without a recount while it is in outage (they are recounted every 2 s,
	// or ten times as long as a count takes, when that is shorter). Default 30s.
	BacklogRefresh time.Duration
	// PageSize is how many messages one walk of the custody queue collects
	// before dispatching them, so that no journal iterator stays open for
	// the whole replay. Default 256.
	PageSize int

	// Deliverer tunes the connections (timeouts, idle reuse). Network,
	// Address, SMTP and MaxIdle are set per server.
	Deliverer DelivererOptions
}

func (o *Options) setDefaults() error {
	var errs []error
	if o.Journal == nil {
		errs = append(errs, errors.New("replay: Options.Journal is required"))
	}
	switch o.Mode {
	case "":
		o.Mode = ModeLMTP
	case ModeLMTP, ModeSMTP:
	default:
		errs = append(errs, fmt.Errorf("replay: mode %q is neither %q nor %q", o.Mode, ModeLMTP, ModeSMTP))
	}
	if o.Mode == ModeSMTP && o.Reinject == "" {
		errs = append(errs, errors.New("replay: mode smtp needs reinject (the MTA's SMTP port without the milter)"))
	}
	if o.DSN && o.Submit == "" {
		errs = append(errs, errors.New("replay: dsn needs a submit address (the MTA's SMTP port)"))
	}
	seen := map[string]bool{}
	for _, s := range o.Servers {
		if s.Name == "" {
			errs = append(errs, errors.New("replay: a server has no name"))
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("replay: server %q given twice", s.Name))
		}
		seen[s.Name] = true
		if o.Mode == ModeLMTP && (s.Network == "" || s.Address == "") {
			errs = append(errs, fmt.Errorf("replay: server %q has no LMTP address", s.Name))
		}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 10
	}
	if o.Rate < 0 {
		errs = append(errs, fmt.Errorf("replay: negative rate %v", o.Rate))
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 30 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Minute
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = 5 * 24 * time.Hour
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		o.Hostname = h
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Rescan <= 0 {
		o.Rescan = o.RetryMax
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.BacklogRefresh <= 0 {
		o.BacklogRefresh = 30 * time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 256
	}
	return errors.Join(errs...)
}

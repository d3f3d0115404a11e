package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Event kinds.
const (
	KindOutageStart      = "outage_start"
	KindOutageEnd        = "outage_end"
	KindReplayFinished   = "replay_finished"
	KindPermanentFailure = "permanent_failure"
)

// Event is one thing worth telling an operator. Fields that do not apply to a
// kind are left zero and omitted from the JSON.
type Event struct {
	Kind   string    // one of the Kind constants
	Server string    // the mailbox server concerned
	Time   time.Time // when it happened

	// outage_start / outage_end
	Reason string // the operator's reason or the probe's error
	Cause  string // "probe", "operator" or "window"

	// replay_finished
	Delivered int
	Failed    int
	Duration  time.Duration

	// permanent_failure
	Recipient string
	MessageID string
	Reply     string
}

// eventJSON is the webhook's wire form: snake_case keys, RFC 3339 time and
// the duration in seconds so that any JSON consumer can read it.
type eventJSON struct {
	Kind            string  `json:"kind"`
	Server          string  `json:"server,omitempty"`
	Time            string  `json:"time"`
	Reason          string  `json:"reason,omitempty"`
	Cause           string  `json:"cause,omitempty"`
	Delivered       *int    `json:"delivered,omitempty"`
	Failed          *int    `json:"failed,omitempty"`
	DurationSeconds float64 `json:"duration_seconds,omitempty"`
	Recipient       string  `json:"recipient,omitempty"`
	MessageID       string  `json:"message_id,omitempty"`
	Reply           string  `json:"reply,omitempty"`
	Host            string  `json:"host,omitempty"`
}

// MarshalJSON gives the webhook payload.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(e.wire(""))
}

func (e Event) wire(host string) eventJSON {
	w := eventJSON{
		Kind: e.Kind, Server: e.Server, Time: e.Time.UTC().Format(time.RFC3339Nano),
		Reason: e.Reason, Cause: e.Cause, Recipient: e.Recipient, MessageID: e.MessageID,
		Reply: e.Reply, Host: host,
	}
	if e.Kind == KindReplayFinished {
		d, f := e.Delivered, e.Failed
		w.Delivered, w.Failed = &d, &f
		w.DurationSeconds = e.Duration.Seconds()
	}
	return w
}

// Options configures a Notifier. Every field is optional; with neither
// Webhook nor Postmaster, Notify does nothing.
type Options struct {
	// Webhook is a URL that receives each event as a JSON POST. A reply other
	// than 2xx counts as an error.
	Webhook string
	// Postmaster is the address mailed on each event.
	Postmaster string
	// From is the envelope and header sender of the postmaster mail.
	// Default "lifeline@" + Hostname.
	From string
	// Submit is where the postmaster mail is sent over SMTP:
	// "tcp:HOST:PORT" or "unix:/path". Required when Postmaster is set.
	Submit string
	// Hostname names this host in the mail and the JSON. Default os.Hostname.
	Hostname string

	Logger     *slog.Logger          // nil discards
	HTTPClient *http.Client          // nil: a client with Timeout
	Registerer prometheus.Registerer // nil: a private registry

	// Timeout bounds one webhook POST or one mail submission. Default 10s.
	Timeout time.Duration
	// QueueSize is how many events may wait. Default 256.
	QueueSize int
	// QueueTimeout is how long Notify waits for room in a full queue before
	// it gives the event up (logged and counted). Default 1s.
	QueueTimeout time.Duration
	// Attempts is how often a channel is tried per event. Default 3.
	Attempts int
	// RetryDelay is the pause before the second attempt; it doubles after.
	// Default 1s.
	RetryDelay time.Duration
}

// Notifier delivers events asynchronously. It is safe for concurrent use.
type Notifier struct {
	opts    Options
	log     *slog.Logger
	client  *http.Client
	network string
	address string

	queue chan Event
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	sent   *prometheus.CounterVec
	errors *prometheus.CounterVec
}

// New starts a Notifier; call Close to stop it.
func New(opts Options) (*Notifier, error) {
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		opts.Hostname = h
	}
	if opts.From == "" {
		opts.From = "lifeline@" + opts.Hostname
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	n := &Notifier{
		opts:  opts,
		log:   opts.Logger,
		queue: make(chan Event, opts.QueueSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.client = opts.HTTPClient
	if n.client == nil {
		n.client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.Postmaster != "" {
		if opts.Submit == "" {
			return nil, errors.New("notify: postmaster is set but submit (the SMTP address to send through) is not")
		}
		var err error
		n.network, n.address, err = SplitAddress(opts.Submit)
		if err != nil {
			return nil, fmt.Errorf("notify: submit: %w", err)
		}
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err1, err2 error
	n.sent, err1 = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_notify_sent_total",
		Help: "Notifications delivered, by channel (webhook, mail).",
	}, []string{"channel"}))
	n.errors, err2 = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_notify_errors_total",
		Help: "Notifications that could not be delivered after all attempts, by channel (webhook, mail, queue).",
	}, []string{"channel"}))
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	for _, ch := range []string{"webhook", "mail", "queue"} {
		n.errors.WithLabelValues(ch)
	}
	for _, ch := range []string{"webhook", "mail"} {
		n.sent.WithLabelValues(ch)
	}
	go n.run()
	return n, nil
}

// Notify queues ev for delivery and returns at once, or after at most
// QueueTimeout when the queue is full (then the event is logged and counted
// as lost). A zero ev.Time is set to now.
func (n *Notifier) Notify(ctx context.Context, ev Event) {
	if n == nil || (n.opts.Webhook == "" && n.opts.Postmaster == "") {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	select {
	case <-n.stop:
		n.lost(ev, errors.New("notifier closed"))
		return
	default:
	}
	select {
	case n.queue <- ev:
		return
	default:
	}
	t := time.NewTimer(n.opts.QueueTimeout)
	defer t.Stop()
	select {
	case n.queue <- ev:
	case <-t.C:
		n.lost(ev, errors.New("queue full"))
	case <-ctx.Done():
		n.lost(ev, ctx.Err())
	case <-n.stop:
		n.lost(ev, errors.New("notifier closed"))
	}
}

func (n *Notifier) lost(ev Event, err error) {
	n.errors.WithLabelValues("queue").Inc()
	n.log.Error("notification lost", "kind", ev.Kind, "server", ev.Server,
		"recipient", ev.Recipient, "message_id", ev.MessageID, "err", err)
}

// Close stops taking events, delivers those already queued until ctx is done
// (then logs and counts the rest as lost) and returns when the worker exited.
func (n *Notifier) Close(ctx context.Context) error {
	n.once.Do(func() { close(n.stop) })
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("notify: close: %w", ctx.Err())
	}
}

func (n *Notifier) run() {
	defer close(n.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		select {
		case ev := <-n.queue:
			n.deliver(ctx, ev)
		case <-n.stop:
			// Drain what is already queued, then exit.
			for {
				select {
				case ev := <-n.queue:
					n.deliver(ctx, ev)
				default:
					return
				}
			}
		}
	}
}

func (n *Notifier) deliver(ctx context.Context, ev Event) {
	defer func() {
		if p := recover(); p != nil {
			n.errors.WithLabelValues("panic").Inc()
			n.log.Error("notification panicked", "kind", ev.Kind, "panic", p)
		}
	}()
	if n.opts.Webhook != "" {
		n.attempt(ctx, "webhook", ev, n.postWebhook)
	}
	if n.opts.Postmaster != "" {
		n.attempt(ctx, "mail", ev, n.mailPostmaster)
	}
}

func (n *Notifier) attempt(ctx context.Context, channel string, ev Event, send func(context.Context, Event) error) {
	delay := n.opts.RetryDelay
	var err error
	for i := 0; i < n.opts.Attempts; i++ {
		if i > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-n.stop:
				// Closing: one last try without waiting.
				t.Stop()
			}
			delay *= 2
		}
		actx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
		err = send(actx, ev)
		cancel()
		if err == nil {
			n.sent.WithLabelValues(channel).Inc()
			return
		}
		n.log.Warn("notification attempt failed", "channel", channel, "kind", ev.Kind,
			"attempt", i+1, "err", err)
	}
	n.errors.WithLabelValues(channel).Inc()
	n.log.Error("notification not delivered", "channel", channel, "kind", ev.Kind,
		"server", ev.Server, "recipient", ev.Recipient, "message_id", ev.MessageID, "err", err)
}

func (n *Notifier) postWebhook(ctx context.Context, ev Event) error {
	body, err := json.Marshal(ev.wire(n.opts.Hostname))
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.opts.Webhook, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lifeline")
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	// Read a little of the body so that the connection can be reused.
	snippet, rerr := io.ReadAll(io.LimitReader(resp.Body, 512))
	cerr := resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: %s: %s", resp.Status, strings.TrimSpace(string(snippet)))
	}
	if rerr != nil {
		return fmt.Errorf("webhook: read reply: %w", rerr)
	}
	if cerr != nil {
		return fmt.Errorf("webhook: close reply: %w", cerr)
	}
	return nil
}

func (n *Notifier) mailPostmaster(ctx context.Context, ev Event) error {
	msg := composeMail(n.opts.From, n.opts.Postmaster, n.opts.Hostname, ev)
	return Submit(ctx, n.network, n.address, n.opts.From, []string{n.opts.Postmaster}, msg)
}

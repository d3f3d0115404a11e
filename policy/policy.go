// Package policy answers an MTA, before it accepts a recipient, whether
// Lifeline can stand in for the recipient's mailbox server. One listener
// speaks two protocols, told apart by the first line of a connection:
//
//   - Postfix's SMTPD access-policy delegation protocol
//     (http://www.postfix.org/SMTPD_POLICY_README.html): name=value lines
//     ended by an empty line, answered "action=...\n\n", several requests per
//     connection. The answer is DUNNO (no opinion) unless the recipient's
//     mailbox server is in outage; then it is "550 5.1.1 unknown mailbox"
//     (the client reads "550 5.1.1 <rcpt>: Recipient address rejected:
//     unknown mailbox") for a recipient that is not a known mailbox (RejectUnknown: no junk taken
//     into custody, and no backscatter later, because the sender's MTA
//     bounces, not Lifeline), and "DEFER_IF_PERMIT 4.3.0 Lifeline cannot take
//     custody now" when the journal cannot take custody (the sender retries;
//     a later restriction that rejects still wins, which is what
//     DEFER_IF_PERMIT is for).
//   - A line protocol for Exim's ${readsocket}: one line "state
//     <address-or-domain>", answered with one line "up", "outage" or
//     "unknown" (no mailbox server for that domain), then the connection is
//     closed: readsocket reads until EOF.
//
// Fail-open. Postfix: check_policy_service's default_action=DUNNO (set in
// contrib/postfix/main.cf) applies when this server is down, times out or
// closes the connection; Exim: the readsocket's fail string ("up" in
// contrib/exim) when the socket cannot be reached. Either way, mail keeps
// flowing to the mailbox server when Lifeline is down.
//
// A malformed Postfix request (a line that is not name=value, a line longer
// than MaxLine, more than MaxAttrs attributes, an empty request) is logged,
// counted with action "malformed", and answered by closing the connection
// without a reply. Postfix then logs "problem talking to server" and applies
// the administrator's own default_action, the same as for a broken policy
// server; it is the administrator's fail-open (or fail-closed) choice, not
// one this server makes up. Postfix never sends such a request, so it only
// happens with a client that is not Postfix or a corrupted stream.
package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Resolver maps a recipient to its mailbox server; *addrmap.Map implements it.
type Resolver interface {
	Resolve(rcpt, mailer, host string) (mailboxes []string, server string)
	ServerOf(mailbox string) (server string, ok bool)
}

// OutageChecker tells whether a mailbox server is in outage; *health.Monitor
// implements it.
type OutageChecker interface {
	InOutage(server string) bool
}

// Options configure a Server.
type Options struct {
	Resolver Resolver
	Outage   OutageChecker
	// Known reports whether an address is a known mailbox (an account, an
	// alias, a listed address); a recipient is known when it or a mailbox
	// it resolves to is. Nil: every address is known.
	Known func(address string) bool
	// RejectUnknown answers 550 during an outage for unknown recipients.
	RejectUnknown bool
	// CanTakeCustody returns nil when the journal can take custody, else
	// why not (disk above the configured fill level, journal failing). Nil:
	// always.
	CanTakeCustody func() error

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Panics     prometheus.Counter

	// IdleTimeout bounds the wait for a request (default 60 s; Postfix
	// closes idle policy connections after smtpd_policy_service_max_idle,
	// 300 s, and reconnects when needed). ReadTimeout bounds one request
	// once its first line arrived, and WriteTimeout a reply (default 10 s).
	IdleTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxLine bounds a line (default 8 KiB), MaxAttrs a request's
	// attributes (default 100; Postfix 3.x sends about 30).
	MaxLine  int
	MaxAttrs int
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policy: server closed")

// Server is the policy server.
type Server struct {
	opts     Options
	log      *slog.Logger
	requests *prometheus.CounterVec
	panics   prometheus.Counter

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// New builds a server.
func New(opts Options) (*Server, error) {
	if opts.Resolver == nil || opts.Outage == nil {
		return nil, errors.New("policy: Resolver and Outage are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = 8 << 10
	}
	if opts.MaxAttrs <= 0 {
		opts.MaxAttrs = 100
	}
	reqs, err := promreg.Register(opts.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_policy_requests_total",
		Help: "Policy requests by protocol (postfix, exim) and answer (dunno, reject, defer, up, outage, unknown, malformed).",
	}, []string{"protocol", "action"}))
	if err != nil {
		return nil, err
	}
	panics, err := promreg.Panics(opts.Registerer, opts.Panics, "policy")
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, log: opts.Logger, requests: reqs, panics: panics,
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// EMFILE and friends: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("policy: accept: %w", err)
		}
		delay = 0
		c := &conn{srv: s, nc: nc, idle: true}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close() // refused at shutdown
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// Shutdown stops accepting, closes the connections waiting for a request and
// lets the requests being answered finish; when ctx ends it closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeConns(false)
		select {
		case <-done:
			return errors.Join(errs...)
		case <-tick.C:
		case <-ctx.Done():
			s.closeConns(true)
			<-done
			return errors.Join(append(errs, fmt.Errorf("policy: shutdown: %w", ctx.Err()))...)
		}
	}
}

func (s *Server) closeConns(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		if all || c.idle {
			_ = c.nc.Close() // ending the connection; its error says nothing
		}
		c.mu.Unlock()
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn

	mu   sync.Mutex
	idle bool // waiting for a request: Shutdown closes it
}

func (c *conn) setIdle(idle bool) {
	c.mu.Lock()
	c.idle = idle
	c.mu.Unlock()
}

func (c *conn) serve() {
	s := c.srv
	log := s.log.With("remote", c.nc.RemoteAddr().String())
	defer func() {
		if p := recover(); p != nil {
			s.panics.Inc()
			log.Error("panic in policy connection", "panic", fmt.Sprint(p))
		}
		_ = c.nc.Close() // done with it
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	// The reader's buffer is the line limit: ReadSlice fails on a longer line.
	r := bufio.NewReaderSize(&deadlineReader{c: c}, s.opts.MaxLine+2)
	first := true
	for {
		if err := c.nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout)); err != nil {
			return
		}
		// Wait for the request's first byte as idle, then bound the request.
		if _, err := r.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("policy connection ended", "err", err)
			}
			return
		}
		c.setIdle(false)
		if err := c.nc.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout)); err != nil {
			return
		}
		if first {
			first = false
			if startsExim(r) {
				c.exim(r, log)
				return
			}
		}
		req, err := ReadRequest(r, s.opts.MaxLine, s.opts.MaxAttrs)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			case errors.As(err, &ne) && ne.Timeout():
				log.Warn("policy request timed out; closing the connection", "timeout", s.opts.ReadTimeout.String())
			default:
				s.requests.WithLabelValues(protoPostfix, actMalformed).Inc()
				log.Warn("malformed policy request; closing the connection so that the MTA applies its default_action", "err", err)
			}
			return
		}
		action, label := s.decide(req)
		if label != actDunno {
			log.Info("policy answer", "recipient", req["recipient"], "sender", req["sender"], "client", req["client_address"],
				"queue_id", req["queue_id"], "action", action)
		}
		s.requests.WithLabelValues(protoPostfix, label).Inc()
		if err := c.write("action=" + action + "\n\n"); err != nil {
			log.Debug("policy reply not written", "err", err)
			return
		}
		c.setIdle(true)
	}
}

// startsExim reports whether the connection starts with "state ", an Exim
// request; a Postfix request starts with a name=value line. It waits for
// another byte only while what came so far matches.
func startsExim(r *bufio.Reader) bool {
	const prefix = "state "
	for n := 1; n <= len(prefix); n++ {
		p, err := r.Peek(n)
		if err != nil || p[n-1] != prefix[n-1] {
			return false
		}
	}
	return true
}

func (c *conn) write(s string) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout)); err != nil {
		return err
	}
	_, err := io.WriteString(c.nc, s)
	return err
}

// deadlineReader reads from the connection (the deadline is set by serve).
type deadlineReader struct{ c *conn }

func (d *deadlineReader) Read(p []byte) (int, error) { return d.c.nc.Read(p) }

// Protocols and actions, the metric's labels.
const (
	protoPostfix = "postfix"
	protoExim    = "exim"

	actDunno     = "dunno"
	actReject    = "reject"
	actDefer     = "defer"
	actMalformed = "malformed"
	actUp        = "up"
	actOutage    = "outage"
	actUnknown   = "unknown"
)

// decide answers a Postfix request: the action text and the metric label.
func (s *Server) decide(req Request) (action, label string) {
	rcpt, ok := req["recipient"]
	if !ok || rcpt == "" {
		// DATA, END-OF-MESSAGE, or a restriction list without a recipient:
		// nothing to say about one.
		return "DUNNO", actDunno
	}
	boxes, server := s.opts.Resolver.Resolve(rcpt, "", "")
	if server == "" || !s.opts.Outage.InOutage(server) {
		return "DUNNO", actDunno
	}
	if s.opts.RejectUnknown && !s.known(rcpt, boxes) {
		// RFC 3463 X.1.1: bad destination mailbox address. Postfix puts
		// "<rcpt>: Recipient address rejected: " in front of the text of an
		// access action (smtpd_check.c), so the client reads
		// "550 5.1.1 <rcpt>: Recipient address rejected: unknown mailbox".
		return "550 5.1.1 unknown mailbox", actReject
	}
	if s.opts.CanTakeCustody != nil {
		if err := s.opts.CanTakeCustody(); err != nil {
			s.log.Warn("cannot take custody; deferring recipients of servers in outage", "server", server, "err", err)
			return "DEFER_IF_PERMIT 4.3.0 Lifeline cannot take custody now", actDefer
		}
	}
	return "DUNNO", actDunno
}

// known reports whether rcpt, or a mailbox it resolves to (alias
// expansion, "+detail" stripped), is a known mailbox.
func (s *Server) known(rcpt string, boxes []string) bool {
	if s.opts.Known == nil || s.opts.Known(rcpt) {
		return true
	}
	for _, b := range boxes {
		if s.opts.Known(b) {
			return true
		}
	}
	return false
}

// exim answers one "state <address-or-domain>" line and ends the connection.
func (c *conn) exim(r *bufio.Reader, log *slog.Logger) {
	s := c.srv
	// Exim's readsocket sends the request as written in the configuration;
	// one without a newline ends with the client's half-close (shutdown).
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || (err != nil && !errors.Is(err, io.EOF)) {
		s.requests.WithLabelValues(protoExim, actMalformed).Inc()
		log.Warn("malformed state request", "err", err)
		return
	}
	line = bytes.TrimRight(line, "\r\n")
	what := strings.TrimSpace(strings.TrimPrefix(string(line), "state "))
	answer := s.state(what)
	s.requests.WithLabelValues(protoExim, answer).Inc()
	if err := c.write(answer + "\n"); err != nil {
		log.Debug("state reply not written", "err", err)
	}
}

// state is the Exim answer for an address or a domain.
func (s *Server) state(what string) string {
	var server string
	if strings.Contains(what, "@") {
		_, server = s.opts.Resolver.Resolve(what, "", "")
	} else if what != "" {
		server, _ = s.opts.Resolver.ServerOf("postmaster@" + what)
	}
	switch {
	case server == "":
		return actUnknown
	case s.opts.Outage.InOutage(server):
		return actOutage
	default:
		return actUp
	}
}

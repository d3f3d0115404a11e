// Package ingest is Lifeline's LMTP front end (RFC 2033) for MTAs without a
// milter interface, such as Exim. One Server is one listener in one of two
// modes:
//
//   - Journal: stores a copy of what the MTA hands it (state mta), for an MTA
//     that copies every message to Lifeline with an `unseen` router. The MTA
//     still delivers the message itself.
//   - Custody: takes custody (state custody) of each recipient, for an MTA
//     that routes mail to Lifeline while the mailbox server is down; replay
//     delivers it after recovery. Each recipient is answered 250 only once
//     its custody record is durable, 4xx otherwise (RFC 2033 §4.2: one reply
//     per recipient after DATA), so that the MTA keeps what Lifeline does not
//     hold.
//
// Both keep the envelope and are idempotent for a message offered again after
// a lost reply: the journal's identity (journal/identity.go) maps the same
// message to the same ID and a second Append writes nothing.
//
// The custody listener appends one record per recipient (the identity of
// MAIL FROM, that one recipient, the content). A retrying MTA offers again
// exactly the recipients that did not get 250, in any grouping; per-recipient
// records make each of them find its own record, never a second custody
// record for a recipient already held. It costs one stored copy per
// recipient, which is what Exim's lmtp transport (batch_max = 1) sends anyway.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
	"github.com/lifelinemail/lifeline/internal/spool"
	"github.com/lifelinemail/lifeline/journal"
)

// Mode is what a listener does with a message.
type Mode int

const (
	// Journal stores a copy in state mta.
	Journal Mode = iota
	// Custody takes custody in state custody.
	Custody
)

func (m Mode) String() string {
	if m == Custody {
		return "custody"
	}
	return "journal"
}

// Resolver maps a recipient to its continuity mailboxes and mailbox server;
// *addrmap.Map implements it.
type Resolver interface {
	Resolve(rcpt, mailer, host string) (mailboxes []string, server string)
}

// Options configure a Server.
type Options struct {
	Mode     Mode
	Journal  journal.Journal
	Resolver Resolver
	Logger   *slog.Logger
	// Registerer takes the metrics; Panics, if set, counts recovered panics
	// (the daemon shares lifeline_panics_total).
	Registerer prometheus.Registerer
	Panics     prometheus.Counter
	// Domain is the name in the greeting (default "localhost").
	Domain string
	// MaxMessageSize refuses larger messages with 552 (default 64 MiB);
	// MaxRecipients answers 452 to further RCPT TO (default 1000).
	MaxMessageSize int64
	MaxRecipients  int
	// ReadTimeout and WriteTimeout bound each read and write (default 5 min,
	// RFC 5321 §4.5.3.2).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// SpoolThreshold is how much of a message stays in memory before it is
	// spooled to a file in SpoolDir (default 1 MiB; SpoolDir default: the
	// system temporary directory).
	SpoolThreshold int64
	SpoolDir       string
	// Parallel bounds the concurrent appends of one custody transaction
	// (default 8); concurrent appends share the journal's fsyncs.
	Parallel int
	// OnCustody, if set, is called with the server of each recipient newly
	// taken into custody, once it is durable. The daemon wakes replay with
	// it when the server is not in outage (any more): the MTA decided to
	// route to custody a moment before the outage ended, and replay must
	// not wait for its next rescan.
	OnCustody func(server string)
	// Clock gives Envelope.Received, the wall time the retention sweep and
	// replay's give-up measure from. Default time.Now.
	Clock func() time.Time
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("ingest: server closed")

// Server is one LMTP listener.
type Server struct {
	opts    Options
	log     *slog.Logger
	smtp    *smtp.Server
	metrics *metrics
	panics  prometheus.Counter

	ctx    context.Context // cancelled when Shutdown gives up: aborts appends
	cancel context.CancelFunc

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	closing bool
}

// New builds a server.
func New(opts Options) (*Server, error) {
	if opts.Journal == nil || opts.Resolver == nil {
		return nil, errors.New("ingest: Journal and Resolver are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Domain == "" {
		opts.Domain = "localhost"
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = 64 << 20
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = 1000
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 5 * time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Minute
	}
	if opts.SpoolThreshold == 0 {
		opts.SpoolThreshold = 1 << 20
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	panics, err := promreg.Panics(opts.Registerer, opts.Panics, "ingest")
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: m, panics: panics, conns: map[*trackedConn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.LMTP = true
	srv.Domain = opts.Domain
	srv.MaxMessageBytes = opts.MaxMessageSize
	srv.MaxRecipients = opts.MaxRecipients
	srv.ReadTimeout = opts.ReadTimeout
	srv.WriteTimeout = opts.WriteTimeout
	srv.ErrorLog = slogLogger{opts.Logger}
	s.smtp = srv
	return s, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	err := s.smtp.Serve(&trackingListener{Listener: ln, srv: s})
	s.mu.Lock()
	closing = s.closing
	s.mu.Unlock()
	if closing && (err == nil || errors.Is(err, net.ErrClosed)) {
		return ErrServerClosed
	}
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return ErrServerClosed
}

// Shutdown stops accepting, closes idle connections and waits for the
// transactions in flight until ctx ends; then it closes what is left and
// aborts its appends. An aborted transaction got no reply, so the MTA keeps
// the message and offers it again.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.smtp.Shutdown(context.Background()) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, smtp.ErrServerClosed) {
				return fmt.Errorf("ingest: shutdown: %w", err)
			}
			return nil
		case <-tick.C:
		case <-ctx.Done():
			s.cancel()
			s.closeAll()
			<-done
			return fmt.Errorf("ingest: shutdown: %w", ctx.Err())
		}
	}
}

// closeIdle closes the connections between transactions. go-smtp's Shutdown
// waits for every connection to end; an idle MTA connection would hold it
// until the read timeout.
func (s *Server) closeIdle() { s.closeConns(false) }

func (s *Server) closeAll() { s.closeConns(true) }

func (s *Server) closeConns(all bool) {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		if all || !c.busy.Load() {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close() // closing a connection to end it; its error says nothing
	}
}

// trackingListener registers every accepted connection, so that Shutdown
// can close it whether or not go-smtp made a session for it yet (a session
// starts at LHLO).
type trackingListener struct {
	net.Listener
	srv *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc, srv: l.srv}
	l.srv.mu.Lock()
	closing := l.srv.closing
	if !closing {
		l.srv.conns[c] = struct{}{}
	}
	l.srv.mu.Unlock()
	if closing {
		_ = nc.Close() // accepted during shutdown: refuse it
	}
	return c, nil
}

// trackedConn is a connection with its transaction state.
type trackedConn struct {
	net.Conn
	srv  *Server
	busy atomic.Bool // inside a transaction: Shutdown lets it finish
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	})
	return err
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	se := &session{srv: s, log: s.log.With("listener", s.opts.Mode.String(), "remote", c.Conn().RemoteAddr().String())}
	tc, ok := c.Conn().(*trackedConn)
	if !ok {
		return nil, errors.New("ingest: connection not accepted by Serve")
	}
	se.conn = tc
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Lifeline is shutting down"}
	}
	return se, nil
}

// slogLogger adapts go-smtp's error log to slog.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.log.Warn(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

// session is one LMTP connection.
type session struct {
	srv  *Server
	conn *trackedConn
	log  *slog.Logger

	from  string
	rcpts []rcpt // in RCPT TO order, as the client gave them
}

type rcpt struct {
	addr      string // as given: go-smtp's status map is keyed by it
	mailboxes []string
	server    string
}

// Replies. Enhanced status codes per RFC 3463.
var (
	errNoServer = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "No mailbox server is configured for this domain; Lifeline cannot take custody"}
	errDiskFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Lifeline's journal is short of disk space, try again later"}
	errJournal = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Lifeline's journal could not store the message, try again later"}
	errInternal = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Internal error, try again later"}
	errNoRcpt = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
)

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	se.conn.busy.Store(true)
	se.from = from
	se.rcpts = se.rcpts[:0]
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	boxes, server := se.srv.opts.Resolver.Resolve(to, "", "")
	if se.srv.opts.Mode == Custody && server == "" {
		// Replay would have nowhere to deliver it. A temporary reply: this is
		// a configuration mismatch (the MTA's routers against [[server]]
		// domains) that an operator fixes, not a reason to bounce mail.
		se.srv.metrics.recipients.WithLabelValues(se.srv.opts.Mode.String(), resultRefused).Inc()
		return errNoServer
	}
	se.rcpts = append(se.rcpts, rcpt{addr: to, mailboxes: boxes, server: server})
	return nil
}

func (se *session) Reset() {
	se.from = ""
	se.rcpts = se.rcpts[:0]
	se.conn.busy.Store(false)
}

func (se *session) Logout() error { return nil }

// Data is the SMTP form; go-smtp calls LMTPData in LMTP mode.
func (se *session) Data(r io.Reader) error {
	var first error
	return errors.Join(se.LMTPData(r, statusFunc(func(_ string, err error) {
		if first == nil {
			first = err
		}
	})), first)
}

type statusFunc func(string, error)

func (f statusFunc) SetStatus(rcpt string, err error) { f(rcpt, err) }

// LMTPData reads the message into a spool and journals it; status gets one
// reply per RCPT TO, each only after what it acknowledges is durable.
func (se *session) LMTPData(r io.Reader, status smtp.StatusCollector) (err error) {
	listener := se.srv.opts.Mode.String()
	defer se.conn.busy.Store(false)
	if len(se.rcpts) == 0 {
		return errNoRcpt // go-smtp answers 502 itself; kept for the SMTP form
	}
	sp := spool.New(se.srv.opts.SpoolDir, "ingest", se.srv.opts.SpoolThreshold)
	defer func() {
		if cerr := sp.Close(); cerr != nil {
			se.log.Warn("closing spool", "err", cerr)
		}
	}()
	replied := make([]bool, len(se.rcpts))
	defer func() {
		if p := recover(); p != nil {
			se.srv.panics.Inc()
			se.log.Error("panic in LMTP DATA", "panic", fmt.Sprint(p))
			se.srv.metrics.messages.WithLabelValues(listener, resultTempFail).Inc()
			for i, rc := range se.rcpts {
				if !replied[i] {
					se.srv.metrics.recipients.WithLabelValues(listener, resultTempFail).Inc()
					status.SetStatus(rc.addr, errInternal)
				}
			}
			err = nil
		}
	}()
	if _, err := io.Copy(sp, r); err != nil {
		var serr *smtp.SMTPError
		if errors.As(err, &serr) { // 552: over MaxMessageSize
			se.srv.metrics.messages.WithLabelValues(listener, resultTooLarge).Inc()
			se.srv.metrics.recipients.WithLabelValues(listener, resultRefused).Add(float64(len(se.rcpts)))
			return serr
		}
		se.log.Error("spooling message", "err", err)
		se.srv.metrics.messages.WithLabelValues(listener, resultTempFail).Inc()
		se.srv.metrics.recipients.WithLabelValues(listener, resultTempFail).Add(float64(len(se.rcpts)))
		return errJournal
	}
	set := func(i int, err error, result string) {
		replied[i] = true
		se.srv.metrics.recipients.WithLabelValues(listener, result).Inc()
		status.SetStatus(se.rcpts[i].addr, err)
	}
	if se.srv.opts.Mode == Custody {
		se.custody(sp, set)
	} else {
		se.journal(sp, set)
	}
	return nil
}

// journal appends the message once with every recipient in state mta.
func (se *session) journal(sp *spool.Spool, set func(int, error, string)) {
	env := se.envelope(journal.StateMTA, se.rcpts)
	res, err := se.append(env, sp)
	listener := se.srv.opts.Mode.String()
	if err != nil {
		reply := replyFor(err)
		se.log.Error("message not journaled; answering 4xx", "from", se.from, "recipients", len(se.rcpts), "size", sp.Size(), "err", err)
		se.srv.metrics.messages.WithLabelValues(listener, resultTempFail).Inc()
		for i := range se.rcpts {
			set(i, reply, resultTempFail)
		}
		return
	}
	result := resultStored
	if res.Duplicate {
		result = resultDuplicate
	}
	se.srv.metrics.messages.WithLabelValues(listener, result).Inc()
	se.log.Info("message journaled", "id", res.ID.String(), "duplicate", res.Duplicate, "from", se.from,
		"recipients", len(se.rcpts), "size", sp.Size())
	for i := range se.rcpts {
		set(i, nil, result)
	}
}

// custody appends one custody record per distinct recipient (see the
// package comment), concurrently, and answers each as its record becomes
// durable.
func (se *session) custody(sp *spool.Spool, set func(int, error, string)) {
	listener := se.srv.opts.Mode.String()
	// Recipients that differ only in ASCII case are one recipient to the
	// journal's identity: one record, every RCPT TO of it answered alike.
	groups := map[string][]int{}
	var order []string
	for i, rc := range se.rcpts {
		k := asciiLower(rc.addr)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	type outcome struct {
		err    error
		result string
	}
	outcomes := make([]outcome, len(order))
	sem := make(chan struct{}, se.srv.opts.Parallel)
	var wg sync.WaitGroup
	for g, k := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if p := recover(); p != nil {
					se.srv.panics.Inc()
					se.log.Error("panic in custody append", "panic", fmt.Sprint(p))
					outcomes[g] = outcome{errInternal, resultTempFail}
				}
			}()
			rc := se.rcpts[groups[k][0]]
			result, err := se.custodyOne(sp, rc)
			outcomes[g] = outcome{err, result}
		}()
	}
	wg.Wait()
	failed := 0
	for g, k := range order {
		if outcomes[g].err != nil {
			failed++
		}
		for _, i := range groups[k] {
			set(i, outcomes[g].err, outcomes[g].result)
		}
	}
	result := resultCustody
	switch {
	case failed == len(order):
		result = resultTempFail
	case failed > 0:
		result = resultPartial
	}
	se.srv.metrics.messages.WithLabelValues(listener, result).Inc()
}

// custodyOne makes rc's custody record durable, or finds it already stored.
func (se *session) custodyOne(sp *spool.Spool, rc rcpt) (string, error) {
	env := se.envelope(journal.StateCustody, []rcpt{rc})
	res, err := se.append(env, sp)
	if err != nil {
		se.log.Error("custody not durable; answering 4xx", "from", se.from, "rcpt", rc.addr, "err", err)
		return resultTempFail, replyFor(err)
	}
	if !res.Duplicate {
		se.log.Info("recipient taken into custody", "id", res.ID.String(), "from", se.from, "rcpt", rc.addr,
			"server", rc.server, "size", sp.Size())
		se.srv.custodyTaken(rc.server)
		return resultCustody, nil
	}
	// Offered again (a lost reply, a retry after a partial failure): what
	// counts is the stored state, as in the milter (milter/custody.go).
	e, err := se.srv.opts.Journal.Get(se.srv.ctx, res.ID)
	if err != nil {
		se.log.Error("reading a duplicate's custody record; answering 4xx", "id", res.ID.String(), "rcpt", rc.addr, "err", err)
		return resultTempFail, errJournal
	}
	for i, r := range e.Envelope.Recipients {
		if asciiLower(r.Address) != asciiLower(rc.addr) {
			continue
		}
		if r.State == journal.StateMTA {
			// Stored by the journal listener as the MTA's own copy, and now
			// the MTA offers the recipient for custody instead of delivering
			// it (its mailbox server failed after the copy was made): take
			// the recipient over, durably, before answering 250.
			return se.takeOver(res.ID, i, rc)
		}
		se.log.Info("recipient already in custody", "id", res.ID.String(), "rcpt", rc.addr, "state", r.State.String())
		return resultDuplicate, nil
	}
	se.log.Error("duplicate without the recipient; answering 4xx", "id", res.ID.String(), "rcpt", rc.addr)
	return resultTempFail, errJournal
}

// custodyTaken tells OnCustody.
func (s *Server) custodyTaken(server string) {
	if s.opts.OnCustody != nil {
		s.opts.OnCustody(server)
	}
}

// takeOver moves recipient i of message id from mta to custody. A
// concurrent offer of the same recipient may have done it first: then the
// stored state decides, as for any duplicate.
func (se *session) takeOver(id journal.ID, i int, rc rcpt) (string, error) {
	j := se.srv.opts.Journal
	err := j.SetState(se.srv.ctx, id, i, journal.StateCustody, "custody taken over from the MTA's journaled copy")
	if err == nil {
		se.log.Info("recipient journaled as the MTA's copy taken into custody", "id", id.String(), "rcpt", rc.addr, "server", rc.server)
		se.srv.custodyTaken(rc.server)
		return resultCustody, nil
	}
	if !errors.Is(err, journal.ErrInvalidState) {
		se.log.Error("taking the MTA's copy into custody failed; answering 4xx", "id", id.String(), "rcpt", rc.addr, "err", err)
		return resultTempFail, replyFor(err)
	}
	e, gerr := j.Get(se.srv.ctx, id)
	if gerr != nil || i >= len(e.Envelope.Recipients) || e.Envelope.Recipients[i].State == journal.StateMTA {
		se.log.Error("taking the MTA's copy into custody failed; answering 4xx", "id", id.String(), "rcpt", rc.addr, "err", errors.Join(err, gerr))
		return resultTempFail, errJournal
	}
	se.log.Info("recipient already in custody", "id", id.String(), "rcpt", rc.addr, "state", e.Envelope.Recipients[i].State.String())
	return resultDuplicate, nil
}

func (se *session) envelope(state journal.State, rcpts []rcpt) journal.Envelope {
	env := journal.Envelope{MailFrom: se.from, Received: se.srv.opts.Clock(), Source: "lmtp", Recipients: make([]journal.Recipient, len(rcpts))}
	for i, rc := range rcpts {
		env.Recipients[i] = journal.Recipient{Address: rc.addr, Mailboxes: rc.mailboxes, Server: rc.server, State: state}
	}
	return env
}

func (se *session) append(env journal.Envelope, sp *spool.Spool) (journal.AppendResult, error) {
	r, err := sp.Reader()
	if err != nil {
		return journal.AppendResult{}, err
	}
	res, err := se.srv.opts.Journal.Append(se.srv.ctx, env, r)
	if err != nil {
		return res, fmt.Errorf("journal append: %w", err)
	}
	return res, nil
}

// replyFor is the temporary reply to a failed append: 452 4.3.1 (mail
// system full, RFC 3463) when the journal keeps its disk reserve, else 451.
func replyFor(err error) *smtp.SMTPError {
	if errors.Is(err, journal.ErrDiskFull) {
		return errDiskFull
	}
	return errJournal
}

// asciiLower lower-cases ASCII letters only, like the journal's identity.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

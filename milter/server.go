package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("milter: server closed")

// Server is Lifeline's milter: it journals every message the MTA passes
// through it. It is safe for concurrent use; Serve may be called on several
// listeners.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	// ctx is the parent of every journal append; it is cancelled when
	// Shutdown gives up waiting, so that appends stuck on a dead backend end.
	ctx    context.Context
	cancel context.CancelFunc

	nextConn   atomic.Uint64
	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	connsDone  chan struct{} // closed by untrack when conns empties during shutdown

	// answerWait bounds how long Shutdown, once its context has ended,
	// still waits for messages being answered (defaultAnswerWait).
	answerWait time.Duration

	spoolCreated func(path string) // test hook
}

// defaultAnswerWait is Server.answerWait: long enough for an append that
// committed as the grace ran out to return and its answer to be written,
// short against systemd's stop timeout.
const defaultAnswerWait = 5 * time.Second

// New creates a Server. It registers the milter's metrics on
// opts.Registerer.
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer, opts.Panics)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger, // the caller names the component, as for every package
		metrics:    m,
		listeners:  make(map[*net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
		answerWait: defaultAnswerWait,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// go-milter panics on invalid options; find out now rather than on the
	// first connection.
	if err := s.checkMilterOptions(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) checkMilterOptions() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("milter: invalid go-milter options: %v", r)
		}
	}()
	gomilter.NewServer(s.milterOptions(nil)...)
	return nil
}

// wantProtocol is what Lifeline asks the MTA for, each bit only if the MTA
// offers it (see negotiate):
//   - no HELO and no unknown-command events: not needed;
//   - SMFIP_HDR_LEADSPC: header values verbatim, for a faithful rebuild.
const wantProtocol = gomilter.OptNoHelo | gomilter.OptNoUnknown | gomilter.OptHeaderLeadingSpace

// unixProtocol is added on a unix socket: no connect and DATA events (Lifeline
// needs nothing from them) and the SMFIP_NR_* bits (milter protocol 6): no
// reply to MAIL, RCPT, headers, end of headers and body chunks, so that the
// MTA streams a message's events without a round trip after each. Lifeline
// always continues there; it decides only at end of message.
//
// Not on TCP. Measured with Postfix 3.7: whenever Postfix writes two milter
// packets in a row without waiting for a reply (which is what these bits
// cause), on a TCP socket without TCP_NODELAY Nagle's algorithm holds the
// second until the first is acknowledged, and the milter host's delayed ACK
// (40 ms) stalls every message: one SMTP session of 4 KiB messages fell from
// ~350 to ~21 msg/s, even with only the connect and DATA events skipped. With
// a reply per event Postfix never has two writes outstanding. A unix socket
// has no Nagle: there the round trips are pure cost.
const unixProtocol = gomilter.OptNoConnect | gomilter.OptNoData |
	gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply

// protocolFor is what Lifeline asks for on the MTA connection c (nil when
// only checking options).
func protocolFor(c *conn) gomilter.OptProtocol {
	if c != nil && c.LocalAddr().Network() == "unix" {
		return wantProtocol | unixProtocol
	}
	return wantProtocol
}

// negotiate replaces go-milter's default negotiation, which refuses an MTA
// that does not offer every requested protocol bit. Lifeline takes what is
// offered: an MTA on protocol 2 (no SMFIP_HDR_LEADSPC, no SMFIP_NR_*) still
// works, with the leading-space heuristic of appendHeaderField.
func negotiate(mtaVersion, milterVersion uint32, mtaActions, milterActions gomilter.OptAction, mtaProtocol, milterProtocol gomilter.OptProtocol, offered gomilter.DataSize) (uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize, error) {
	version := min(mtaVersion, milterVersion)
	if version < 2 {
		return 0, 0, 0, 0, fmt.Errorf("milter: MTA speaks milter protocol %d, need 2 or later", mtaVersion)
	}
	// Protocol 2 knows only the first 7 bits (SMFI_V2_PROT); sending newer
	// bits to such an MTA is an error, and it never offers them anyway.
	return version, milterActions & mtaActions, milterProtocol & mtaProtocol, offered, nil
}

// milterOptions are the go-milter options for the connection c (nil only for
// checking the options).
func (s *Server) milterOptions(c *conn) []gomilter.Option {
	return []gomilter.Option{
		gomilter.WithProtocols(protocolFor(c)),
		// SMFIF_DELRCPT, to take custody recipients away from the MTA
		// (custody.go). The MTA offers the actions it supports in
		// SMFIC_OPTNEG and the milter picks from them; Postfix offers it
		// without any configuration. negotiate keeps only what the MTA
		// offers, so an MTA without it still works (partial custody then
		// falls back to mta). go-milter adds SMFIF_SETSYMLIST for the macro
		// requests below. Lifeline makes no other change to messages.
		gomilter.WithActions(gomilter.OptRemoveRcpt),
		gomilter.WithNegotiationCallback(negotiate),
		// Postfix sends only requested macros (milter8.c, SMFIF_SETSYMLIST).
		// "i" exists in Postfix only from DATA on; ask at EOH and EOM.
		gomilter.WithMacroRequest(gomilter.StageMail, []string{macroAuthAuthen}),
		gomilter.WithMacroRequest(gomilter.StageRcpt, []string{macroRcptMailer, macroRcptHost}),
		gomilter.WithMacroRequest(gomilter.StageEOH, []string{macroQueueID}),
		gomilter.WithMacroRequest(gomilter.StageEOM, []string{macroQueueID, macroAuthAuthen}),
		gomilter.WithReadTimeout(s.opts.ReadTimeout),
		gomilter.WithWriteTimeout(s.opts.WriteTimeout),
		gomilter.WithDynamicMilter(func(version uint32, _ gomilter.OptAction, protocol gomilter.OptProtocol, _ gomilter.DataSize) gomilter.Milter {
			return s.newSession(c, version, protocol)
		}),
	}
}

func (s *Server) newSession(c *conn, version uint32, protocol gomilter.OptProtocol) gomilter.Milter {
	c.sessionStarted()
	return &session{
		srv:          s,
		c:            c,
		log:          c.log,
		version:      version,
		leadingSpace: protocol&gomilter.OptHeaderLeadingSpace != 0,
	}
}

// Serve accepts MTA connections on ln until Shutdown, and then returns
// ErrServerClosed; it returns another error only if ln is closed by someone
// else. Serve always closes ln. Temporary accept errors (EMFILE) are retried
// with a backoff of up to 1 s.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		if err := ln.Close(); err != nil {
			return errors.Join(ErrServerClosed, fmt.Errorf("milter: closing listener: %w", err))
		}
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	defer func() {
		// Shutdown may have closed it already; only another failure is news.
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("closing listener", "err", err)
		}
	}()
	s.log.Info("milter listening", "addr", ln.Addr().String())

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("milter: accept: %w", err)
			}
			// Like net/http, back off on errors such as EMFILE instead of
			// spinning or giving up: the mail flow depends on this listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newConn(nc, s.nextConn.Add(1), s.log)
		if !s.trackConn(c, true) { // Shutdown began after Accept
			if err := nc.Close(); err != nil {
				c.log.Debug("closing milter connection", "err", err)
			}
			continue
		}
		go s.serveConn(c)
	}
}

// serveConn runs go-milter on one MTA connection. Each connection gets its own
// go-milter Server over a listener that yields just this connection: that is
// how the backend learns which connection it serves (for the connection id in
// its logs and for Shutdown's idle check), which go-milter's shared Server
// cannot tell it.
func (s *Server) serveConn(c *conn) {
	defer s.trackConn(c, false)
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			c.log.Error("panic serving milter connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("closing milter connection", "err", err)
		}
	}()
	c.log.Debug("milter connection accepted", "remote", c.RemoteAddr().String())
	ms := gomilter.NewServer(s.milterOptions(c)...)
	// Serve returns once c is closed (by go-milter at the end of the session,
	// or by Shutdown) with the oneConnListener's net.ErrClosed.
	if err := ms.Serve(&oneConnListener{c: c}); err != nil && !errors.Is(err, net.ErrClosed) {
		c.log.Warn("milter connection ended", "err", err)
	}
	// go-milter may still be inside a callback when Shutdown closed the
	// socket: wait until the session's Cleanup has run, so that no spool
	// file or journal append outlives the connection's bookkeeping.
	c.waitSession()
}

// Shutdown stops the server gracefully: it closes the listeners, closes every
// connection that is idle between messages, and waits for the messages in
// flight to be answered (their connections are closed as soon as they are
// idle). When ctx expires first, it cancels the journal appends still running,
// waits a few seconds more for the messages being answered (drainAnswers),
// closes all connections and returns ctx.Err(). The MTA applies its
// milter_default_action to messages it sends on a closed connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	var errs []error
	for ln := range s.listeners {
		if err := (*ln).Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	clear(s.listeners)
	if s.connsDone == nil {
		s.connsDone = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.connsDone)
		}
	}
	done := s.connsDone
	s.mu.Unlock()

	poll := time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-done:
			s.cancel()
			return errors.Join(errs...)
		case <-ctx.Done():
			s.cancel()
			s.drainAnswers(done)
			return ctx.Err()
		case <-timer.C:
			s.mu.Lock()
			for c := range s.conns {
				c.closeIfIdle()
			}
			s.mu.Unlock()
			poll = min(2*poll, 100*time.Millisecond)
			timer.Reset(poll)
		}
	}
}

// drainAnswers is the end of a Shutdown whose context ended: the appends
// still running are cancelled (s.cancel), but an append may already have
// committed custody, and its end-of-message must still answer DISCARD or
// DELRCPT. Closing its connection first would make the MTA apply its
// milter_default_action (accept) and deliver recipients that replay
// delivers too. So for up to answerWait it closes each connection as soon
// as go-milter waits on the MTA again (its answer, if any, written, or a
// message the MTA is still sending, which the grace has run out for), and
// only then the rest.
func (s *Server) drainAnswers(done <-chan struct{}) {
	deadline := time.NewTimer(s.answerWait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		s.mu.Lock()
		for c := range s.conns {
			c.closeIfWaiting()
		}
		s.mu.Unlock()
		select {
		case <-done:
			return
		case <-tick.C:
		case <-deadline.C:
			waiting = false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("closing milter connection", "err", err)
		}
	}
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if len(s.conns) == 0 && s.connsDone != nil {
		select {
		case <-s.connsDone:
		default:
			close(s.connsDone)
		}
	}
	return true
}

// conn wraps one MTA connection. It knows whether the connection is idle —
// go-milter is waiting for the next command and no message is in progress —
// which is when Shutdown may close it without losing a message.
type conn struct {
	net.Conn
	id  uint64
	log *slog.Logger
	// br buffers reads: go-milter reads each packet with two unbuffered
	// reads (length, then payload), and without replies (unixProtocol)
	// Postfix sends a message's packets back to back, so one read(2) can
	// take many of them.
	br *bufio.Reader

	mu        sync.Mutex
	reading   bool // go-milter is blocked in Read
	inMessage bool // between MAIL FROM and end-of-message/abort
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error

	started atomic.Bool   // go-milter created the session backend
	ended   chan struct{} // closed by the backend's Cleanup
	endOnce sync.Once
}

func newConn(nc net.Conn, id uint64, log *slog.Logger) *conn {
	return &conn{
		Conn:   nc,
		br:     bufio.NewReaderSize(nc, connReadBuffer),
		id:     id,
		log:    log.With("conn", id),
		closed: make(chan struct{}),
		ended:  make(chan struct{}),
	}
}

// connReadBuffer holds many header packets; body packets (up to 64 KiB)
// larger than it are read straight into go-milter's buffer.
const connReadBuffer = 8 << 10

// Read reads from the buffer, and only when it is empty from the connection,
// marked as reading: then go-milter is waiting for the MTA, not handling
// what the MTA already sent.
func (c *conn) Read(p []byte) (int, error) {
	if c.br.Buffered() > 0 {
		return c.br.Read(p)
	}
	c.mu.Lock()
	c.reading = true
	c.mu.Unlock()
	n, err := c.br.Read(p)
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	return n, err
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		close(c.closed)
	})
	return c.closeErr
}

func (c *conn) setInMessage(v bool) {
	c.mu.Lock()
	c.inMessage = v
	c.mu.Unlock()
}

// closeIfIdle closes the connection if no message is in progress and go-milter
// waits for the next command (so the last answer has been written).
func (c *conn) closeIfIdle() {
	c.mu.Lock()
	idle := c.reading && !c.inMessage
	c.mu.Unlock()
	if idle {
		c.log.Debug("closing idle milter connection for shutdown")
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("closing milter connection", "err", err)
		}
	}
}

// closeIfWaiting closes the connection if go-milter waits for the MTA,
// in a message or not: nothing it has to answer is in progress.
func (c *conn) closeIfWaiting() {
	c.mu.Lock()
	waiting := c.reading
	c.mu.Unlock()
	if waiting {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("closing milter connection", "err", err)
		}
	}
}

func (c *conn) sessionStarted() { c.started.Store(true) }
func (c *conn) sessionEnded()   { c.endOnce.Do(func() { close(c.ended) }) }

// waitSession waits for the backend's Cleanup, if a backend was created.
func (c *conn) waitSession() {
	if c.started.Load() {
		<-c.ended
	}
}

// oneConnListener is a net.Listener that yields one connection and then
// blocks until that connection is closed.
type oneConnListener struct {
	c    *conn
	used atomic.Bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.used.CompareAndSwap(false, true) {
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

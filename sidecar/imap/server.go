package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/sidecar"
	"github.com/lifelinemail/lifeline/sidecar/connlimit"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown.
var ErrServerClosed = errors.New("imap: server closed")

// capabilities offered to the library (RFC 9051 §7.2.2). IMAP4rev2 includes
// NAMESPACE, UIDPLUS, ESEARCH, SEARCHRES, LIST-EXTENDED, LIST-STATUS, MOVE,
// STATUS=SIZE, BINARY, CHILDREN and IDLE; they are listed for IMAP4rev1
// clients. The library adds IDLE, UNSELECT, ENABLE, UTF8=ACCEPT, SASL-IR,
// LITERAL-, STARTTLS, AUTH=PLAIN or LOGINDISABLED, and APPENDLIMIT (from the
// session) where they apply.
var capabilities = goimap.CapSet{
	goimap.CapIMAP4rev1:    {},
	goimap.CapIMAP4rev2:    {},
	goimap.CapNamespace:    {},
	goimap.CapUIDPlus:      {},
	goimap.CapESearch:      {},
	goimap.CapSearchRes:    {},
	goimap.CapListExtended: {},
	goimap.CapListStatus:   {},
	goimap.CapMove:         {},
	goimap.CapStatusSize:   {},
	goimap.CapBinary:       {},
	goimap.CapChildren:     {},
	goimap.CapSpecialUse:   {}, // RFC 6154: Sent is \Sent
}

// Server is an IMAP4rev1/IMAP4rev2 server (RFC 3501, RFC 9051) over users'
// continuity mailboxes. The protocol is go-imap's imapserver; this package is
// its backend and owns the connections.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	limits  *connlimit.Limiter // Options.MaxConnections and MaxConnectionsPerClient
	watches *watches
	structs *structCache

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc
	done   chan struct{} // closed when Shutdown starts: wakes IDLE

	closing atomic.Bool
	nextID  atomic.Uint64

	// Two protocol engines that differ only in whether plaintext
	// authentication is allowed without TLS: local serves loopback
	// connections (DESIGN.md, "Security"), remote the others, which then see
	// LOGINDISABLED until STARTTLS (RFC 3501 §6.2.3, RFC 9051 §6.2.3).
	local, remote *engine

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*wconn]struct{}
	started   bool
	wg        sync.WaitGroup // connections, IDLE goroutines, pollers, commands
	engineWG  sync.WaitGroup // the engines' accept loops
}

// engine is one imapserver.Server, fed connections through a channel.
type engine struct {
	srv *imapserver.Server
	ln  *chanListener
}

// New returns a Server. It registers its metrics on opts.Registerer.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer, o.Panics)
	if err != nil {
		return nil, err
	}
	limits, err := connlimit.New(connlimit.Options{
		Max: o.MaxConnections, PerClient: o.MaxConnectionsPerClient,
		Protocol: "imap", Registerer: o.Registerer, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: o, log: o.Logger, metrics: m, limits: limits, ctx: ctx, cancel: cancel,
		done:      make(chan struct{}),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*wconn]struct{}{},
	}
	s.watches = newWatches(s)
	s.structs = newStructCache(o.StructureCacheSize)
	s.local = s.newEngine(true)
	s.remote = s.newEngine(false)
	return s, nil
}

func (s *Server) newEngine(insecureAuth bool) *engine {
	return &engine{
		srv: imapserver.New(&imapserver.Options{
			NewSession:   s.newSession,
			Caps:         capabilities,
			Logger:       libLogger{s},
			TLSConfig:    s.opts.TLSConfig,
			InsecureAuth: insecureAuth,
		}),
		ln: newChanListener(),
	}
}

// Serve accepts plain IMAP connections on ln (port 143 style) and offers
// STARTTLS when Options.TLSConfig is set. It returns ErrServerClosed after
// Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections on ln (port 993 style, RFC 8314
// §3.3). Options.TLSConfig is required.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("imap: ServeTLS needs Options.TLSConfig")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.startEnginesLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors or similar: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("imap: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("imap: accept: %w", err)
		}
		delay = 0
		if !s.dispatch(c, implicitTLS) {
			return ErrServerClosed
		}
	}
}

// startEnginesLocked starts the engines' accept loops once; s.mu is held.
func (s *Server) startEnginesLocked() {
	if s.started {
		return
	}
	s.started = true
	for _, e := range []*engine{s.local, s.remote} {
		s.engineWG.Add(1)
		go func() {
			defer s.engineWG.Done()
			// The engine's Serve returns nil once its listener is closed.
			if err := e.srv.Serve(e.ln); err != nil {
				s.log.Error("imap: engine stopped", "err", err)
			}
		}()
	}
}

// dispatch hands a new connection to the engine that fits it; false when the
// server is closing.
func (s *Server) dispatch(c net.Conn, implicitTLS bool) bool {
	loopback, ip := sidecar.Peer(c.RemoteAddr())
	if reason := s.limits.Acquire(ip); reason != "" {
		s.refuse(c, implicitTLS, reason)
		return true
	}
	id := s.nextID.Add(1)
	wc := newWConn(s, c, id, loopback, ip)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		s.limits.Release(ip)
		if err := c.Close(); err != nil {
			s.log.Debug("imap: close", "err", err)
		}
		return false
	}
	s.startEnginesLocked()
	s.conns[wc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.metrics.sessions.Inc()
	wc.log.Debug("imap: connected", "tls", implicitTLS)

	if implicitTLS {
		// The handshake runs here rather than inside the engine so that a
		// client that never finishes it is bounded by a deadline, and is
		// simply closed (no BYE to encrypt) by Shutdown.
		go func() {
			tc := tls.Server(wc, s.opts.TLSConfig)
			if err := s.handshake(tc); err != nil {
				wc.log.Debug("imap: TLS handshake", "err", err)
				wc.Close()
				return
			}
			if !s.remote.ln.hand(tc) {
				wc.Close()
			}
		}()
		return true
	}
	e := s.remote
	if loopback {
		e = s.local
	}
	if !e.ln.hand(wc) {
		wc.Close()
		return false
	}
	return true
}

// refuse answers a connection over Options.MaxConnections or
// MaxConnectionsPerClient with a BYE greeting, which says that the server
// will not accept the connection (RFC 9051 §7.1.5, RFC 3501 §7.1.5), and
// closes it.
func (s *Server) refuse(c net.Conn, implicitTLS bool, reason string) {
	s.log.Debug("imap: connection refused", "remote", c.RemoteAddr().String(), "reason", reason)
	line := "* BYE Too many connections, try again later\r\n"
	if reason == connlimit.ReasonPerClient {
		line = "* BYE Too many connections from your address, try again later\r\n"
	}
	var tc *tls.Config
	if implicitTLS {
		tc = s.opts.TLSConfig
	}
	s.limits.Refuse(c, tc, line)
}

func (s *Server) handshake(tc *tls.Conn) error {
	if err := tc.SetDeadline(time.Now().Add(min(s.opts.IdleTimeout, 30*time.Second))); err != nil {
		return err
	}
	if err := tc.HandshakeContext(s.ctx); err != nil {
		return err
	}
	return tc.SetDeadline(time.Time{})
}

// forget removes a closed connection.
func (s *Server) forget(c *wconn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.limits.Release(c.clientIP)
	s.metrics.sessions.Dec()
	s.wg.Done()
}

// Shutdown stops the server in two phases (like net/http): it closes the
// listeners and says BYE to every session that waits for a command or IDLEs
// (RFC 3501 §7.1.5), then waits for sessions in the middle of a command (a
// FETCH of a large message, an APPEND) to finish it and hear its tagged
// response, and says BYE to them. When ctx ends first it closes the remaining
// connections and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	var errs []error
	if !s.closing.Swap(true) {
		close(s.done)
	}
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.local.ln.Close()
	s.remote.ln.Close()
	conns := make([]*wconn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.byeIfIdle()
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.engineWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			if err := c.Conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("imap: close", "err", err)
			}
		}
		s.mu.Unlock()
		<-done
		errs = append(errs, ctx.Err())
	}
	s.limits.Close()
	s.cancel()
	return errors.Join(errs...)
}

// chanListener is a net.Listener whose connections come from dispatch.
type chanListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "lifeline" }
func (chanAddr) String() string  { return "imap-dispatch" }

// libLogger receives the library's messages. It counts the panics the library
// recovers (outside the backend, which recovers its own) in the panic counter.
type libLogger struct{ s *Server }

func (l libLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	switch {
	case strings.HasPrefix(format, "panic"):
		l.s.metrics.panics.Inc()
		l.s.log.Error("imap: panic in the protocol library", "detail", msg)
	case strings.HasPrefix(format, "failed to read command"), strings.HasPrefix(format, "failed to write greeting"):
		// A client that hangs up, times out or sends garbage.
		l.s.log.Debug("imap: "+msg, "component", "imapserver")
	default:
		l.s.log.Warn("imap: "+msg, "component", "imapserver")
	}
}

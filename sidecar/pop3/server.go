package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lifelinemail/lifeline/sidecar"
	"github.com/lifelinemail/lifeline/sidecar/connlimit"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown.
var ErrServerClosed = errors.New("pop3: server closed")

// Server is a POP3 server (RFC 1939) over users' continuity mailboxes.
type Server struct {
	opts    Options
	metrics *metrics
	limits  *connlimit.Limiter // Options.MaxConnections and MaxConnectionsPerClient

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	closing atomic.Bool
	nextID  atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	inUse     map[string]struct{} // mailboxes with a session in TRANSACTION state
	wg        sync.WaitGroup
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
		Protocol: "pop3", Registerer: o.Registerer, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts: o, metrics: m, limits: limits, ctx: ctx, cancel: cancel,
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		inUse:     map[string]struct{}{},
	}, nil
}

// Serve accepts plain POP3 connections on ln (port 110 style) and offers STLS
// when Options.TLSConfig is set. It returns ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections on ln (port 995 style, RFC 8314
// §3.3). Options.TLSConfig is required.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("pop3: ServeTLS needs Options.TLSConfig")
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
				s.opts.Logger.Warn("pop3: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("pop3: accept: %w", err)
		}
		delay = 0
		_, ip := sidecar.Peer(c.RemoteAddr())
		if reason := s.limits.Acquire(ip); reason != "" {
			s.refuse(c, implicitTLS, reason)
			continue
		}
		if implicitTLS {
			c = tls.Server(c, s.opts.TLSConfig)
		}
		if !s.begin() {
			s.limits.Release(ip)
			if err := c.Close(); err != nil {
				s.opts.Logger.Debug("pop3: close", "err", err)
			}
			return ErrServerClosed
		}
		go func() {
			// handle returns once the connection is closed: it counts
			// against the limits until then.
			defer s.limits.Release(ip)
			s.handle(c)
		}()
	}
}

// refuse answers a connection over Options.MaxConnections or
// MaxConnectionsPerClient with a negative greeting and closes it. SYS/TEMP
// (RFC 3206 §4, a response code as RFC 2449 §8 defines them) tells the client
// that the failure is temporary and not its credentials' fault.
func (s *Server) refuse(c net.Conn, implicitTLS bool, reason string) {
	s.opts.Logger.Debug("pop3: connection refused", "remote", c.RemoteAddr().String(), "reason", reason)
	line := "-ERR [SYS/TEMP] too many connections, try again later\r\n"
	if reason == connlimit.ReasonPerClient {
		line = "-ERR [SYS/TEMP] too many connections from your address, try again later\r\n"
	}
	var tc *tls.Config
	if implicitTLS {
		tc = s.opts.TLSConfig
	}
	s.limits.Refuse(c, tc, line)
}

// begin registers a connection's goroutine, unless the server is closing.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) addSession(sess *session) {
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) removeSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// lock takes the mailbox for one session (RFC 1939 §4: "an exclusive-access
// lock on the maildrop"); false if another session holds it.
func (s *Server) lock(mailbox string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inUse[mailbox]; ok {
		return false
	}
	s.inUse[mailbox] = struct{}{}
	return true
}

func (s *Server) unlock(mailbox string) {
	s.mu.Lock()
	delete(s.inUse, mailbox)
	s.mu.Unlock()
}

// Shutdown stops the server in two phases (like net/http): it closes the
// listeners and ends every session that is waiting for a command, then waits
// for sessions in the middle of a command (a RETR of a large message, the
// UPDATE state) to finish it. When ctx ends first it closes the remaining
// connections and returns ctx.Err(). Sessions that end without QUIT apply no
// DELE (RFC 1939 §6).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for sess := range s.sessions {
		sess.interrupt()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for sess := range s.sessions {
			sess.conn.Close()
		}
		s.mu.Unlock()
		<-done
		errs = append(errs, ctx.Err())
	}
	s.limits.Close()
	s.cancel()
	return errors.Join(errs...)
}

package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/addrmap"
	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/health"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/imap"
	"github.com/lifelinemail/lifeline/sidecar/pop3"
	"github.com/lifelinemail/lifeline/sidecar/serving"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/tlsconf"
)

// mailServer is what the daemon needs of the IMAP and POP3 servers.
type mailServer interface {
	Serve(ln net.Listener) error    // plain, with STARTTLS/STLS when TLS is configured
	ServeTLS(ln net.Listener) error // implicit TLS
	Shutdown(ctx context.Context) error
}

// mailServerOptions is what both servers are built from.
type mailServerOptions struct {
	Store       *userview.Store
	Journal     journal.Journal
	Auth        loginAuth
	Serving     *serving.Checker
	TLSConfig   *tls.Config // nil without [tls]
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	Panics      prometheus.Counter
	IdleTimeout time.Duration
	// MaxConns and MaxConnsPerClient: 0 the server's default, -1 no limit.
	MaxConns, MaxConnsPerClient int
}

func newPOP3(o mailServerOptions) (mailServer, error) {
	return pop3.New(pop3.Options{
		Store: o.Store, Journal: o.Journal, Auth: o.Auth, Serving: o.Serving, TLSConfig: o.TLSConfig,
		Logger: o.Logger, Registerer: o.Registerer, Panics: o.Panics, IdleTimeout: o.IdleTimeout,
		MaxConnections: o.MaxConns, MaxConnectionsPerClient: o.MaxConnsPerClient,
	})
}

func newIMAP(o mailServerOptions) (mailServer, error) {
	return imap.New(imap.Options{
		Store: o.Store, Journal: o.Journal, Auth: o.Auth, Serving: o.Serving, TLSConfig: o.TLSConfig,
		Logger: o.Logger, Registerer: o.Registerer, Panics: o.Panics, IdleTimeout: o.IdleTimeout,
		MaxConnections: o.MaxConns, MaxConnectionsPerClient: o.MaxConnsPerClient,
	})
}

// mailAccess is the users' side of an outage: the IMAP and POP3 servers over
// the users' views, with their passwd-file, login limiter and certificate.
type mailAccess struct {
	log       *slog.Logger
	users     *users               // nil when no server runs
	cert      *tlsconf.Certificate // nil without [tls]
	endpoints []*mailEndpoint
}

// mailEndpoint is one server and its listeners.
type mailEndpoint struct {
	name            string // "imap", "pop3" or "webmail"
	srv             mailServer
	plain, implicit net.Listener // nil when off
}

// newMailAccess builds the enabled servers and binds their listeners. It
// shares one login limiter between IMAP, POP3 and webmail, so that a guesser
// gains nothing by switching protocols. control (the admin API's) drives the
// webmail's outage banner and admin page.
func newMailAccess(cfg *config.Config, j journal.Journal, views *userview.Store, resolver *addrmap.Map,
	monitor *health.Monitor, log *slog.Logger, reg prometheus.Registerer, m *metrics, control admin.Control) (_ *mailAccess, err error) {
	a := &mailAccess{log: log}
	if !cfg.IMAP.On() && !cfg.POP3.On() && !cfg.Webmail.On() {
		return a, nil
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.closeListeners())
		}
	}()
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	var tlsConfig *tls.Config
	if cfg.TLS.Configured() {
		// A certificate that cannot be read stops serve at once, as nginx or
		// Dovecot would: running without it would refuse every login from
		// another host, quietly.
		a.cert, err = tlsconf.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, log.With("component", "tls"))
		if err != nil {
			return nil, err
		}
		tlsConfig = a.cert.Config()
	}
	a.users = newUsers(cfg.Auth.PasswdFile, log.With("component", "auth"), nil)
	limiter := auth.NewLimiter(auth.LimiterOptions{PerAddr: cfg.Auth.PerAddress.Policy(), PerUser: cfg.Auth.PerUser.Policy()})
	authn := loginAuth{auth.NewAuthenticator(a.users, auth.AuthenticatorOptions{Limiter: limiter, Logger: log.With("component", "auth")})}
	checker, err := serving.New(cfg.MailboxAccess.Serve, resolver, monitor)
	if err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		l    config.MailListener
		make func(mailServerOptions) (mailServer, error)
	}{{"imap", cfg.IMAP, newIMAP}, {"pop3", cfg.POP3, newPOP3}} {
		if !s.l.On() {
			continue
		}
		srv, err := s.make(mailServerOptions{
			Store: views, Journal: j, Auth: authn, Serving: checker, TLSConfig: tlsConfig,
			Logger: log.With("component", s.name), Registerer: reg, Panics: m.panics.WithLabelValues(s.name),
			IdleTimeout: s.l.IdleTimeout.D(),
			MaxConns:    s.l.MaxConnections, MaxConnsPerClient: s.l.MaxConnectionsPerClient,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		e := &mailEndpoint{name: s.name, srv: srv}
		a.endpoints = append(a.endpoints, e)
		if e.plain, err = listenTCP(s.name+".listen", s.l.PlainAddr()); err != nil {
			return nil, err
		}
		if e.implicit, err = listenTCP(s.name+".listen_tls", s.l.ListenTLS); err != nil {
			return nil, err
		}
	}
	if cfg.Webmail.On() {
		srv, err := newWebmail(cfg.Webmail, webmailOptions{
			Store: views, Journal: j, Auth: authn, Serving: checker, TLSConfig: tlsConfig, Resolver: resolver,
			Control: control, Logger: log.With("component", "webmail"), Registerer: reg,
			Panics: m.panics.WithLabelValues("webmail"),
		})
		if err != nil {
			return nil, fmt.Errorf("webmail: %w", err)
		}
		e := &mailEndpoint{name: "webmail", srv: srv}
		a.endpoints = append(a.endpoints, e)
		if e.plain, err = listenTCP("webmail.listen", cfg.Webmail.PlainAddr()); err != nil {
			return nil, err
		}
		if e.implicit, err = listenTCP("webmail.listen_tls", cfg.Webmail.ListenTLS); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// listenTCP binds a "HOST:PORT" or "tcp:HOST:PORT" address; "" is no listener.
func listenTCP(key, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	_, hostport, err := config.SplitListen(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ln, err := net.Listen("tcp", hostport)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return ln, nil
}

// closeListeners closes listeners not yet handed to a server.
func (a *mailAccess) closeListeners() error {
	var errs []error
	for _, e := range a.endpoints {
		for _, ln := range []net.Listener{e.plain, e.implicit} {
			if ln != nil {
				if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// listeners is the number of Serve goroutines serve starts.
func (a *mailAccess) listeners() int {
	n := 0
	for _, e := range a.endpoints {
		for _, ln := range []net.Listener{e.plain, e.implicit} {
			if ln != nil {
				n++
			}
		}
	}
	return n
}

// serve runs every listener; a listener that fails reports on errc, which
// must have room for listeners() errors.
func (a *mailAccess) serve(wg *sync.WaitGroup, errc chan<- error) {
	for _, e := range a.endpoints {
		for _, l := range []struct {
			ln    net.Listener
			serve func(net.Listener) error
			what  string
		}{{e.plain, e.srv.Serve, "plain"}, {e.implicit, e.srv.ServeTLS, "implicit TLS"}} {
			if l.ln == nil {
				continue
			}
			a.log.Info(e.name+" listening", "component", e.name, "addr", l.ln.Addr().String(), "tls", l.what)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.serve(l.ln); err != nil && !isClosed(err) {
					errc <- fmt.Errorf("%s: %w", e.name, err)
				}
			}()
		}
	}
}

// reload re-reads the certificate and the passwd-file (SIGHUP). Each logs
// its own outcome; what failed keeps the version loaded before.
func (a *mailAccess) reload() {
	if a.cert != nil {
		_ = a.cert.Reload() // logged by tlsconf
	}
	if a.users != nil {
		if err := a.users.Reload(); err != nil {
			a.log.Error("passwd-file reload failed; keeping the users loaded before", "err", err)
		}
	}
}

// shutdown stops the servers: no new connections, sessions in the middle of
// a command finish it until ctx ends. It must return before the journal closes.
func (a *mailAccess) shutdown(ctx context.Context) error {
	errs := make([]error, len(a.endpoints))
	var wg sync.WaitGroup
	for i, e := range a.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.srv.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("%s shutdown: %w", e.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

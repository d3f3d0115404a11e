package webmail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lifelinemail/lifeline/sidecar"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// Content-Security-Policy of every page (CSP Level 3): no script anywhere,
// styles and images from this server only, forms post here only, nobody may
// frame the pages, and the only frame is the message body from this server.
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; frame-src 'self'; base-uri 'none'"

// Server is the webmail HTTP server.
type Server struct {
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	sessions *sessions
	cache    *summaryCache
	handler  http.Handler
	hs       *http.Server
	closing  atomic.Bool
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
	s := &Server{opts: o, log: o.Logger, metrics: m, cache: newSummaryCache(50000)}
	s.sessions = newSessions(o.SessionIdle, o.SessionMax, o.MaxSessions, o.Now, func(n int) { m.sessions.Set(float64(n)) })
	s.handler = s.routes()
	s.hs = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		TLSConfig:         o.TLSConfig,
	}
	return s, nil
}

// Handler returns the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves plain HTTP on ln. Passwords never cross the network in
// plaintext: a client that is not on loopback gets a page that says to use
// HTTPS (DESIGN.md, Security), whatever it asks for.
func (s *Server) Serve(ln net.Listener) error {
	if s.closing.Load() {
		return ErrServerClosed
	}
	return s.hs.Serve(ln)
}

// ServeTLS serves HTTPS on ln with Options.TLSConfig.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.opts.TLSConfig == nil {
		return errors.New("webmail: ServeTLS needs Options.TLSConfig")
	}
	if s.closing.Load() {
		return ErrServerClosed
	}
	return s.hs.Serve(tls.NewListener(ln, s.opts.TLSConfig))
}

// Shutdown stops accepting, lets requests in flight (a message being sent)
// finish until ctx ends, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	err := s.hs.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("webmail: shutdown: %w", err), s.hs.Close())
	}
	return err
}

// statusWriter records the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// request is what a handler knows about the request besides net/http's.
type request struct {
	ctx  context.Context
	lang string
	page string    // metrics label
	sess *session  // nil before login
	tls  bool      // the request came over TLS
	ip   string    // client IP, for the rate limit
	now  time.Time // request time
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, rq *request)

// wrap applies what every request needs: panic recovery, the security
// headers, the plaintext rule, the session, and the metrics. auth says the
// page needs a logged-in session.
func (s *Server) wrap(page string, auth bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		rq := &request{ctx: r.Context(), lang: pickLang(r), page: page, tls: r.TLS != nil, now: s.opts.Now()}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.metrics.panics.Inc()
				s.log.Error("webmail: panic", "page", page, "panic", v, "stack", string(debug.Stack()))
				if w.code == 0 {
					s.errorPage(w, rq, http.StatusInternalServerError, "internal")
				}
			}
			code := w.code
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(page, strconv.Itoa(code)).Inc()
		}()
		hdr := w.Header()
		hdr.Set("Content-Security-Policy", pageCSP)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cache-Control", "no-store")
		var loopback bool
		loopback, rq.ip = remotePeer(r)
		if loopback && !rq.tls && forwardedHTTPS(r) {
			// A reverse proxy on this host took the browser's HTTPS: the
			// cookies must be Secure (and __Host-) all the same.
			rq.tls = true
		}
		if rq.tls {
			hdr.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !rq.tls && !loopback {
			// RFC 8314 §3 in spirit: passwords and mail go over TLS only;
			// plain HTTP is for loopback (a reverse proxy on the host).
			s.errorPage(w, rq, http.StatusForbidden, "login.plaintext")
			return
		}
		if auth {
			rq.sess = s.sessions.get(s.cookie(r, rq))
			if rq.sess == nil {
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					http.Redirect(w, r, "/login", http.StatusSeeOther)
					return
				}
				s.errorPage(w, rq, http.StatusForbidden, "expired")
				return
			}
			if r.Method == http.MethodPost {
				r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUpload+1<<20)
				if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
					// Parts beyond 8 MiB spool to temporary files, which
					// net/http removes when the request ends.
					if err := r.ParseMultipartForm(8 << 20); err != nil {
						var tooBig *http.MaxBytesError
						if errors.As(err, &tooBig) {
							s.errorPage(w, rq, http.StatusRequestEntityTooLarge, "send.toolarge")
							return
						}
						s.errorPage(w, rq, http.StatusBadRequest, "forbidden")
						return
					}
				}
			}
			if r.Method == http.MethodPost && !s.csrfOK(r, rq) {
				s.errorPage(w, rq, http.StatusForbidden, "forbidden")
				return
			}
		}
		h(w, r, rq)
	})
}

// forwardedHTTPS reports whether a reverse proxy says the browser's request
// came over HTTPS: X-Forwarded-Proto: https, as the proxy set it last (the
// de facto header; RFC 7239 §5.4's proto= in Forwarded says the same). Only
// asked of loopback connections.
func forwardedHTTPS(r *http.Request) bool {
	v := r.Header.Values("X-Forwarded-Proto")
	if len(v) == 0 {
		return false
	}
	last := v[len(v)-1]
	return strings.EqualFold(strings.TrimSpace(last[strings.LastIndexByte(last, ',')+1:]), "https")
}

// remotePeer returns whether the client's connection is on loopback, and the
// client's IP. A loopback connection is a reverse proxy on this host (the
// only plain-HTTP client webmail serves) or a local program: its request's
// client is the address the proxy appended last to X-Forwarded-For (RFC 7239
// §5.2 for the same idea in Forwarded), so that the login limits count each
// browser's address instead of one bucket, 127.0.0.1, shared by everyone.
// Entries before the last are the browser's own claims and are ignored; from
// any other connection the header is ignored.
func remotePeer(r *http.Request) (loopback bool, ip string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false, ""
	}
	a := net.ParseIP(host)
	if a == nil {
		return false, host
	}
	loopback, ip = sidecar.Peer(&net.TCPAddr{IP: a})
	if loopback {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			last = strings.TrimSpace(last[strings.LastIndexByte(last, ',')+1:])
			if c := net.ParseIP(last); c != nil {
				ip = c.String()
			}
		}
	}
	return loopback, ip
}

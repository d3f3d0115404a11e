// Package connlimit bounds the connections a mail access server (IMAP, POP3)
// holds open: in total, so that a flood of sockets cannot exhaust the
// process's file descriptors (which the milter in the same process needs too),
// and per client address, so that one client cannot take the whole total.
//
// A connection counts from Acquire until Release, which the server calls when
// the connection has closed. A connection over a limit is answered with the
// protocol's refusal (IMAP "* BYE", POP3 "-ERR") by Refuse and closed.
package connlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Reasons a connection is refused: the values of the reason label.
const (
	ReasonTotal     = "total"      // the server holds Options.Max connections
	ReasonPerClient = "per_client" // the client's address holds Options.PerClient
)

// Reasons are the values of the reason label.
var Reasons = []string{ReasonTotal, ReasonPerClient}

const (
	// refuseTimeout bounds a refusal: the TLS handshake of an implicit-TLS
	// connection and the write of the refusal line.
	refuseTimeout = 5 * time.Second
	// maxRefusing bounds the refusals in progress. Beyond it a connection is
	// closed without a word: a flood gets no TLS handshakes, and the refusals
	// cannot hold more file descriptors than this.
	maxRefusing = 32
	// warnEvery spaces the warnings that a limit is being hit; every refusal
	// is counted in the metric and logged at debug level.
	warnEvery = time.Minute
)

// Options configure a Limiter.
type Options struct {
	// Max is the most connections open at once; negative means no limit.
	Max int
	// PerClient is the most connections open at once from one client
	// address; negative means no limit. IPv6 addresses count per /64, the
	// block one site or host usually gets, as all hosts behind one NAT share
	// an IPv4 address. Unix socket and loopback clients (a proxy or a
	// program on this host, through which many users may come) have no
	// per-client limit, only the total.
	PerClient int
	// Protocol names the metric: lifeline_<Protocol>_connections_refused_total.
	Protocol string
	// Registerer is where the metric is registered. Required.
	Registerer prometheus.Registerer
	// Logger receives a warning at most once a minute while connections are
	// refused. Nil discards logs.
	Logger *slog.Logger
}

// Limiter counts connections. It is safe for concurrent use.
type Limiter struct {
	max, perClient int
	refused        *prometheus.CounterVec
	log            *slog.Logger

	ctx    context.Context // cancelled by Close: aborts refusals in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // refusals in progress
	sem    chan struct{}

	mu       sync.Mutex
	total    int
	byClient map[string]int
	lastWarn time.Time
	unwarned int // refusals since the last warning
}

// New returns a Limiter and registers its metric.
func New(o Options) (*Limiter, error) {
	if o.Registerer == nil {
		return nil, errors.New("connlimit: Options.Registerer is required")
	}
	refused, err := promreg.Register(o.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_" + o.Protocol + "_connections_refused_total",
		Help: "Connections refused because too many were open, in total or from one client address, by reason.",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	for _, r := range Reasons {
		refused.WithLabelValues(r)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Limiter{
		max: o.Max, perClient: o.PerClient, refused: refused, log: o.Logger,
		ctx: ctx, cancel: cancel, sem: make(chan struct{}, maxRefusing),
		byClient: map[string]int{},
	}, nil
}

// clientKey is what the per-client limit counts for the address ip (as
// sidecar.Peer gives it); "" for none.
func clientKey(ip string) string {
	if ip == "" || ip == "unix" {
		return ""
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.IsLoopback() {
		return ""
	}
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}

// Acquire counts a new connection from ip (as sidecar.Peer gives it). It
// returns "" when the connection is admitted, which Release must then undo,
// or the reason (ReasonTotal, ReasonPerClient) it is refused, counted in the
// metric; a refused connection is not counted and needs no Release.
func (l *Limiter) Acquire(ip string) (reason string) {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max >= 0 && l.total >= l.max:
		reason = ReasonTotal
	case key != "" && l.perClient >= 0 && l.byClient[key] >= l.perClient:
		reason = ReasonPerClient
	default:
		l.total++
		if key != "" {
			l.byClient[key]++
		}
		return ""
	}
	l.refused.WithLabelValues(reason).Inc()
	l.unwarned++
	if now := time.Now(); now.Sub(l.lastWarn) >= warnEvery {
		l.log.Warn("connection limit reached, refusing connections",
			"reason", reason, "refused", l.unwarned, "open", l.total, "max", l.max, "max_per_client", l.perClient)
		l.lastWarn, l.unwarned = now, 0
	}
	return reason
}

// Release uncounts a connection from ip that Acquire admitted, once it has
// closed.
func (l *Limiter) Release(ip string) {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if key == "" {
		return
	}
	if n := l.byClient[key] - 1; n > 0 {
		l.byClient[key] = n
	} else {
		delete(l.byClient, key)
	}
}

// Open returns the number of connections counted now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Refuse answers a connection that Acquire refused with line (a complete
// protocol response, CRLF included) and closes it. With tlsConfig, the
// connection is implicit TLS and the line is sent after the handshake. It
// returns at once: the answer is written in the background within a few
// seconds. When many refusals are in progress, or after Close, c is closed
// without an answer.
func (l *Limiter) Refuse(c net.Conn, tlsConfig *tls.Config, line string) {
	select {
	case l.sem <- struct{}{}:
	default:
		l.close(c)
		return
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		<-l.sem
		l.close(c)
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer func() { <-l.sem; l.wg.Done() }()
		defer l.close(c)
		// Close ends a handshake or write in progress.
		stop := context.AfterFunc(l.ctx, func() { _ = c.SetDeadline(time.Now()) })
		defer stop()
		if err := c.SetDeadline(time.Now().Add(refuseTimeout)); err != nil {
			return
		}
		var w net.Conn = c
		if tlsConfig != nil {
			tc := tls.Server(c, tlsConfig)
			if err := tc.HandshakeContext(l.ctx); err != nil {
				l.log.Debug("refused connection: TLS handshake", "remote", c.RemoteAddr().String(), "err", err)
				return
			}
			w = tc
		}
		// The client has sent nothing (it waits for the greeting), so the
		// close after this write is an orderly one and the line arrives.
		if _, err := w.Write([]byte(line)); err != nil {
			l.log.Debug("refused connection: write", "remote", c.RemoteAddr().String(), "err", err)
		}
	}()
}

func (l *Limiter) close(c net.Conn) {
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		l.log.Debug("refused connection: close", "err", err)
	}
}

// Close aborts the refusals in progress and waits for them to end. Later
// refusals close the connection without an answer.
func (l *Limiter) Close() {
	l.mu.Lock()
	l.cancel()
	l.mu.Unlock()
	l.wg.Wait()
}

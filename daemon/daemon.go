// Package daemon wires Lifeline's roles together for `lifeline serve`: it opens
// the journal, starts the milter, the health monitor, the replayer, the IMAP
// and POP3 servers and the HTTP listener (/metrics, /healthz, the admin API),
// runs the retention sweep, and shuts everything down in two phases.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifelinemail/lifeline/addrmap"
	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/milter"
	"github.com/lifelinemail/lifeline/sidecar/imap"
	"github.com/lifelinemail/lifeline/sidecar/pop3"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// Options are what the command line hands the daemon.
type Options struct {
	Config  *config.Config
	Logger  *slog.Logger
	Version string
	// Grace is how long phase one of shutdown waits for in-flight messages
	// before phase two aborts them (default 20 s, below systemd's 90 s).
	Grace time.Duration
	// Ready, if set, is closed when every listener is up.
	Ready chan<- struct{}
	// Reload, if set, asks for the TLS certificate and the passwd-file to be
	// read again (SIGHUP); what fails to load keeps its old version. With
	// ReloadConfig set, the config is read again too, and the settings that
	// can change safely while serving apply (see reload.go).
	Reload <-chan struct{}
	// ReloadConfig, if set, re-reads the configuration file on Reload.
	ReloadConfig func() (*config.Config, error)
	// LogLevel, if set, is the level of Logger's handler; Reload sets it
	// from the re-read config's log.level.
	LogLevel *slog.LevelVar
	// Clock is the wall clock of every decision that stores or compares
	// wall time: the journal's times (arrival, state changes, UIDVALIDITY),
	// outage transitions and maintenance windows, replay due times and
	// give-up, the retention horizon. Timers and durations run on the
	// monotonic clock and do not use it. Default time.Now; only the
	// fault-injection hook (internal/faultclock) sets it.
	Clock func() time.Time
}

// Run serves until ctx is cancelled, then shuts down: phase one stops taking
// new work and lets in-flight messages finish for Grace; phase two aborts what
// is left. Postfix's default_action=accept delivers an aborted message anyway,
// so an abort costs a journal copy, never a message.
func Run(ctx context.Context, opts Options) (err error) {
	cfg, log := opts.Config, opts.Logger
	if opts.Grace == 0 {
		opts.Grace = 20 * time.Second
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg, opts.Version)

	resolver, err := NewResolver(cfg)
	if err != nil {
		return err
	}
	j, err := openJournal(cfg, log, clock)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := j.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing journal: %w", cerr))
		}
	}()

	out, err := newOutage(cfg, j, log, reg, m, clock)
	if err != nil {
		return err
	}
	outServing := false
	defer func() {
		if !outServing { // Run failed before starting it: stop the notifier
			err = errors.Join(err, out.shutdown(context.Background()))
		}
	}()
	token, err := admin.EnsureToken(cfg.HTTP.AdminToken, cfg.HTTP.AdminTokenFile)
	if err != nil {
		return err
	}
	api, err := admin.NewHandler(token, out, log.With("component", "admin"))
	if err != nil {
		return err
	}

	mopts := milter.Options{
		Journal:          j,
		Outage:           custodyOutage{out}, // only servers replay delivers to
		Resolver:         resolver,
		Logger:           log.With("component", "milter"),
		Registerer:       reg,
		Panics:           m.panics.WithLabelValues("milter"),
		SpoolThreshold:   int64(cfg.Milter.SpoolThreshold),
		SpoolDir:         cfg.Milter.SpoolDir,
		ReadTimeout:      cfg.Milter.ReadTimeout.D(),
		WriteTimeout:     cfg.Milter.WriteTimeout.D(),
		ProgressInterval: cfg.Milter.ProgressInterval.D(),
		Clock:            clock,
	}
	if cfg.Milter.OnJournalError == "tempfail" {
		mopts.OnJournalError = milter.TempFail
	}
	ms, err := milter.New(mopts)
	if err != nil {
		return fmt.Errorf("milter: %w", err)
	}
	mln, err := listen(log, "milter.listen", cfg.Milter.Listen)
	if err != nil {
		return err
	}

	hln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("http.listen: %w", err), mln.Close())
	}
	warnIfExposed(log, "http", hln.Addr())
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	healthz := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("/v1/", api)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	// [http] metrics_listen: /metrics and /healthz without the admin API, for
	// a Prometheus on another host (the admin API has no TLS and stays on
	// loopback).
	var xs *http.Server
	var xln net.Listener
	if cfg.HTTP.MetricsListen != "" {
		if xln, err = net.Listen("tcp", cfg.HTTP.MetricsListen); err != nil {
			return errors.Join(fmt.Errorf("http.metrics_listen: %w", err), mln.Close(), hln.Close())
		}
		xmux := http.NewServeMux()
		xmux.Handle("GET /metrics", metrics)
		xmux.HandleFunc("GET /healthz", healthz)
		xs = &http.Server{Handler: xmux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}
	closeHTTP := func() error {
		if xln != nil {
			return errors.Join(hln.Close(), xln.Close())
		}
		return hln.Close()
	}

	ing, err := newIngest(cfg, j, resolver, custodyOutage{out}, out.replay.Wake, log, reg, m, clock)
	if err != nil {
		return errors.Join(err, mln.Close(), closeHTTP())
	}
	views := userview.New(j)
	access, err := newMailAccess(cfg, j, views, resolver, out.monitor, log, reg, m, out)
	if err != nil {
		return errors.Join(err, mln.Close(), closeHTTP(), ing.close())
	}

	var wg sync.WaitGroup
	serveErr := make(chan error, 4+access.listeners()+ing.listeners())
	access.serve(&wg, serveErr)
	ing.serve(&wg, serveErr)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := ms.Serve(mln); err != nil && !isClosed(err) {
			serveErr <- fmt.Errorf("milter: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := hs.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("http: %w", err)
		}
	}()
	if xs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := xs.Serve(xln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("http metrics: %w", err)
			}
		}()
	}

	rl := &reloader{running: cfg, reread: opts.ReloadConfig, level: opts.LogLevel, out: out, access: access, log: log.With("component", "reload")}
	bg, stopBG := context.WithCancel(context.Background())
	var bgwg sync.WaitGroup
	bgwg.Add(4)
	outServing = true
	go func() {
		defer bgwg.Done()
		if err := out.serve(bg); err != nil {
			serveErr <- fmt.Errorf("outage mode: %w", err)
		}
	}()
	go func() {
		defer bgwg.Done()
		runSweeper(bg, j, views, out.horizon, cfg.Journal.SweepInterval.D(), log.With("component", "retention"), m, clock)
	}()
	go func() {
		defer bgwg.Done()
		for {
			select {
			case <-bg.Done():
				return
			case <-opts.Reload:
				rl.reload()
			}
		}
	}()
	go func() {
		defer bgwg.Done()
		runStats(bg, j, cfg.Journal.Path, 15*time.Second, log.With("component", "stats"), m, &out.stats)
	}()

	if xln != nil {
		log.Info("metrics listener", "addr", xln.Addr().String())
	}
	log.Info("lifeline serving", "version", opts.Version, "milter", mln.Addr().String(), "http", hln.Addr().String(),
		"journal", cfg.Journal.Path, "retention", cfg.Journal.Retention.D().String(), "servers", len(cfg.Servers))
	if opts.Ready != nil {
		close(opts.Ready)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new connections, finishing in-flight messages", "grace", opts.Grace.String())
	case runErr = <-serveErr:
		log.Error("a listener failed, shutting down", "err", runErr)
	}

	// Phase one: stop accepting, let in-flight messages and mailbox commands
	// finish (the milter and the IMAP/POP3 servers side by side, so that a
	// long RETR does not eat the milter's grace).
	graceCtx, cancel := context.WithTimeout(context.Background(), opts.Grace)
	defer cancel()
	// Replay stops dispatching now too, and drains with a Grace of its own
	// (see stopReplay): the milter may use up graceCtx.
	out.stopReplay(opts.Grace)
	accessDone := make(chan error, 1)
	go func() { accessDone <- access.shutdown(graceCtx) }()
	ingestDone := make(chan error, 1)
	go func() { ingestDone <- ing.shutdown(graceCtx) }()
	if err := ms.Shutdown(graceCtx); err != nil {
		// Phase two happened inside Shutdown: connections left were closed.
		log.Warn("milter connections aborted at shutdown", "err", err)
	}
	if err := <-accessDone; err != nil {
		log.Warn("mailbox sessions aborted at shutdown", "err", err)
	}
	if err := <-ingestDone; err != nil {
		log.Warn("LMTP ingest or policy connections aborted at shutdown", "err", err)
	}
	// Replay records the outcome of in-flight transactions before the journal
	// closes; the admin API stays up meanwhile. Its drain is bounded by its
	// own timeout; the monitor and the notifier's queued events get a fresh
	// one too, since graceCtx may be used up.
	outCtx, outCancel := context.WithTimeout(context.Background(), opts.Grace)
	defer outCancel()
	if err := out.shutdown(outCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("outage mode shutdown: %w", err))
	}
	if err := hs.Shutdown(graceCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("http shutdown: %w", err), hs.Close())
	}
	if xs != nil {
		// Nothing on it waits for an answer that matters: closed at once.
		if err := xs.Close(); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("http metrics shutdown: %w", err))
		}
	}
	stopBG()
	bgwg.Wait()
	wg.Wait()
	log.Info("lifeline stopped")
	return runErr
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, milter.ErrServerClosed) ||
		errors.Is(err, pop3.ErrServerClosed) || errors.Is(err, imap.ErrServerClosed) || isIngestClosed(err)
}

// listen binds a "tcp:HOST:PORT" or "unix:/path" listener (the milter,
// ingest and policy listeners).
func listen(log *slog.Logger, key, spec string) (net.Listener, error) {
	network, addr, err := config.SplitListen(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if network != "unix" {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		warnIfExposed(log, key, ln.Addr())
		return ln, nil
	}
	// A stale socket from a killed process would make Listen fail.
	if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	// Connecting to a unix socket needs write permission on it. 0660 lets
	// the MTA in when its user is in Lifeline's group (usermod -aG lifeline
	// postfix, as with OpenDKIM), and nobody else: unlike a loopback port,
	// which every local user can reach.
	if err := os.Chmod(addr, socketMode); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w", key, err), ln.Close())
	}
	return ln, nil
}

// socketMode is the mode of the unix sockets Lifeline listens on.
const socketMode = 0o660

// warnIfExposed logs when a listener without authentication is not on loopback.
func warnIfExposed(log *slog.Logger, what string, a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("listener is not on loopback; it has no authentication, restrict it with a firewall", "listener", what, "addr", a.String())
	}
}

// OpenJournal opens the configured journal backend.
func OpenJournal(cfg *config.Config, log *slog.Logger) (journal.Journal, error) {
	return openJournal(cfg, log, nil)
}

// openJournal opens the journal with a wall clock (nil: time.Now).
func openJournal(cfg *config.Config, log *slog.Logger, clock func() time.Time) (journal.Journal, error) {
	j, err := badgerjournal.Open(cfg.Journal.Path, badgerjournal.Options{Logger: log.With("component", "journal"), MinFree: int64(cfg.Journal.MinFree), Clock: clock})
	if err != nil {
		return nil, fmt.Errorf("opening journal %s: %w", cfg.Journal.Path, err)
	}
	return j, nil
}

// NewResolver builds the recipient mapping from the config, loading the alias file.
func NewResolver(cfg *config.Config) (*addrmap.Map, error) {
	var aliases map[string][]string
	if cfg.Mapping.AliasFile != "" {
		a, err := addrmap.LoadAliases(cfg.Mapping.AliasFile)
		if err != nil {
			return nil, fmt.Errorf("mapping.alias_file: %w", err)
		}
		aliases = a
	}
	servers := make([]addrmap.Server, len(cfg.Servers))
	for i, s := range cfg.Servers {
		servers[i] = addrmap.Server{Name: s.Name, Domains: s.Domains, LMTP: s.LMTP}
	}
	return addrmap.New(addrmap.Options{
		Servers:         servers,
		StripDetail:     cfg.Mapping.StripDetail != nil && *cfg.Mapping.StripDetail,
		DetailDelimiter: cfg.Mapping.DetailDelimiter,
		Aliases:         aliases,
	}), nil
}

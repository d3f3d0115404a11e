package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
)

// Errors returned by the Monitor (wrapped; test with errors.Is).
var (
	ErrUnknownServer = errors.New("unknown mailbox server")
	ErrUnknownWindow = errors.New("unknown maintenance window")
	ErrWindowActive  = errors.New("maintenance window in effect")
	ErrClosed        = errors.New("health: monitor shut down")
)

const (
	outagePrefix = "outage/"
	// EventLog is the ControlStore event log that holds every Transition.
	EventLog = "outage"
)

// Server is one mailbox server to watch.
type Server struct {
	Name string
	// Probes run concurrently each round; a round fails if any fails. A
	// server without probes changes state only by operator and windows.
	Probes       []Probe
	Interval     time.Duration // between round starts; default DefaultInterval
	FailAfter    int           // failed rounds that declare an outage; default DefaultFailAfter
	RecoverAfter int           // good rounds that end it; default DefaultRecoverAfter
}

// Options configures New.
type Options struct {
	Servers []Server
	// Windows from the config file. They are not stored in the journal (the
	// config is their source); ID defaults to "config-N" (1-based).
	Windows []Window
	// Store keeps state, windows and transitions; the journal. Required.
	Store journal.ControlStore
	// Logger receives state changes and probe failures (never passwords).
	// Nil discards.
	Logger *slog.Logger
	// Registerer is where the metrics go. Nil: a private registry.
	Registerer prometheus.Registerer
	// Panics, when not nil, counts recovered panics instead of a
	// lifeline_panics_total{component="health"} created on Registerer.
	Panics prometheus.Counter
	// Clock gives the wall time of transitions and decides windows.
	// Default time.Now.
	Clock func() time.Time
	// OnTransition is called for every change of a server's effective
	// outage state, after the change is durable, in order, from one
	// goroutine that Serve runs (transitions before Serve, including those
	// New finds on start, are delivered when Serve starts). It may call the
	// Monitor. A slow callback delays later callbacks, not the Monitor.
	OnTransition func(Transition)
}

// ServerStatus is one server's state for `lifeline status` and the admin API.
type ServerStatus struct {
	Name   string    `json:"name"`
	Outage bool      `json:"outage"`
	Since  time.Time `json:"since,omitzero"`
	Cause  string    `json:"cause,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	// Manual: an operator outage holds (only EndOutage ends it).
	Manual bool `json:"manual"`
	// ProbeOutage: the probes have declared an outage (RecoverAfter good
	// rounds end it).
	ProbeOutage bool   `json:"probe_outage"`
	Window      string `json:"window,omitempty"` // the window in effect
	// Up is the result of the last probe round; meaningless while
	// LastProbe is zero.
	Up                   bool      `json:"up"`
	LastProbe            time.Time `json:"last_probe,omitzero"`
	LastError            string    `json:"last_error,omitempty"`
	ConsecutiveFailures  int       `json:"consecutive_failures"`
	ConsecutiveSuccesses int       `json:"consecutive_successes"`
	Windows              []Window  `json:"windows,omitempty"` // not yet ended
}

// server is the Monitor's state of one Server.
type server struct {
	// cfg.Name is fixed after New; the probe settings (Probes, Interval,
	// FailAfter, RecoverAfter) are guarded by Monitor.mu, since
	// Reconfigure changes them while Serve runs.
	cfg    Server
	outage atomic.Bool // = ctl.outage, read without the lock by InOutage
	// reconfigured wakes the probe loop when Reconfigure changed the
	// settings, so that a shorter interval applies now, not after the old one.
	reconfigured chan struct{}

	// Guarded by Monitor.mu.
	ctl       control
	saved     persisted // what the store holds
	dirty     bool      // the store may not hold ctl: write again
	up        bool
	lastProbe time.Time
	lastErr   string
	fails     int
	oks       int
}

// Monitor watches mailbox servers and holds their outage state.
type Monitor struct {
	log          *slog.Logger
	store        journal.ControlStore
	clock        func() time.Time
	onTransition func(Transition)
	metrics      *metrics
	servers      map[string]*server // fixed after New
	order        []*server

	mu         sync.Mutex
	windows    map[string]Window
	unlogged   []Transition // durable in state, not yet in the event log
	queue      []Transition // for OnTransition
	serving    bool
	closed     bool
	cancel     context.CancelFunc
	done       chan struct{}
	windowKick chan struct{}
	notifyKick chan struct{}
}

// New loads the servers' state and the stored windows from opts.Store and
// evaluates the windows, so that InOutage is right from the start: a server
// in outage when Lifeline stopped is still in outage.
func New(opts Options) (*Monitor, error) {
	if opts.Store == nil {
		return nil, errors.New("health: Options.Store is required")
	}
	m := &Monitor{
		log:          opts.Logger,
		store:        opts.Store,
		clock:        opts.Clock,
		onTransition: opts.OnTransition,
		servers:      make(map[string]*server),
		windows:      make(map[string]Window),
		windowKick:   make(chan struct{}, 1),
		notifyKick:   make(chan struct{}, 1),
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m.clock == nil {
		m.clock = time.Now
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	if m.metrics, err = newMetrics(reg, opts.Panics); err != nil {
		return nil, err
	}
	var errs []error
	for _, cfg := range opts.Servers {
		switch {
		case cfg.Name == "":
			errs = append(errs, errors.New("health: server without a name"))
			continue
		case m.servers[cfg.Name] != nil:
			errs = append(errs, fmt.Errorf("health: server %q twice", cfg.Name))
			continue
		case cfg.Interval < 0 || cfg.FailAfter < 0 || cfg.RecoverAfter < 0:
			errs = append(errs, fmt.Errorf("health: server %q: negative interval, fail_after or recover_after", cfg.Name))
			continue
		}
		if cfg.Interval == 0 {
			cfg.Interval = DefaultInterval
		}
		if cfg.FailAfter == 0 {
			cfg.FailAfter = DefaultFailAfter
		}
		if cfg.RecoverAfter == 0 {
			cfg.RecoverAfter = DefaultRecoverAfter
		}
		for i, p := range cfg.Probes {
			if p == nil {
				errs = append(errs, fmt.Errorf("health: server %q: probe %d is nil", cfg.Name, i+1))
			}
		}
		cfg.Probes = append([]Probe(nil), cfg.Probes...)
		s := &server{cfg: cfg, reconfigured: make(chan struct{}, 1)}
		m.servers[cfg.Name] = s
		m.order = append(m.order, s)
	}
	for i, w := range opts.Windows {
		if w.ID == "" {
			w.ID = fmt.Sprintf("config-%d", i+1)
		}
		w.Configured = true
		if err := w.validate(); err != nil {
			errs = append(errs, fmt.Errorf("health: %w", err))
			continue
		}
		if m.servers[w.Server] == nil {
			errs = append(errs, fmt.Errorf("health: window %s: %w %q", w.ID, ErrUnknownServer, w.Server))
			continue
		}
		if _, dup := m.windows[w.ID]; dup {
			errs = append(errs, fmt.Errorf("health: window id %q twice", w.ID))
			continue
		}
		m.windows[w.ID] = w
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	ctx := context.Background()
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	for _, s := range m.order {
		name := s.cfg.Name
		for _, c := range allCauses {
			m.metrics.transitions.WithLabelValues(name, c)
		}
		for _, p := range s.cfg.Probes {
			m.metrics.probeFailures.WithLabelValues(name, p.Type())
		}
	}
	m.mu.Lock()
	_, trs := m.evaluateLocked(ctx)
	m.enqueueLocked(trs...)
	m.mu.Unlock()
	for _, s := range m.order {
		if s.ctl.outage {
			m.log.Warn("health: mailbox server in outage", "server", s.cfg.Name, "since", s.ctl.since,
				"cause", s.ctl.cause, "reason", s.ctl.reason)
		}
	}
	return m, nil
}

// load reads the stored state of every server and the stored windows.
func (m *Monitor) load(ctx context.Context) error {
	for _, s := range m.order {
		b, err := m.store.Control(ctx, outagePrefix+s.cfg.Name)
		if errors.Is(err, journal.ErrNotFound) {
			s.outage.Store(false)
			m.metrics.outage.WithLabelValues(s.cfg.Name).Set(0)
			continue
		}
		if err != nil {
			return fmt.Errorf("health: loading state of %s: %w", s.cfg.Name, err)
		}
		var p persisted
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("health: loading state of %s: %w", s.cfg.Name, err)
		}
		s.ctl = restore(p)
		s.saved = p
		s.outage.Store(s.ctl.outage)
		m.metrics.outage.WithLabelValues(s.cfg.Name).Set(b2f(s.ctl.outage))
	}
	err := m.store.Controls(ctx, windowPrefix, func(key string, value []byte) error {
		var w Window
		if err := json.Unmarshal(value, &w); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		w.Configured = false
		if m.servers[w.Server] == nil {
			// The server left the config; keep the window stored in case
			// it comes back, but it holds nothing.
			m.log.Warn("health: stored window for an unknown server ignored", "window", w.ID, "server", w.Server)
			return nil
		}
		if _, dup := m.windows[w.ID]; dup {
			return fmt.Errorf("%s: id used by a configured window", key)
		}
		m.windows[w.ID] = w
		return nil
	})
	if err != nil {
		return fmt.Errorf("health: loading windows: %w", err)
	}
	return nil
}

// InOutage reports whether server is in outage mode. It takes no lock (the
// milter calls it for every recipient); an unknown server is never in
// outage.
func (m *Monitor) InOutage(server string) bool {
	s := m.servers[server]
	return s != nil && s.outage.Load()
}

// Status returns every server's state, in config order.
func (m *Monitor) Status() []ServerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ServerStatus, 0, len(m.order))
	for _, s := range m.order {
		c := s.ctl
		out = append(out, ServerStatus{
			Name: s.cfg.Name, Outage: c.outage, Since: c.since, Cause: c.cause, Reason: c.reason, By: c.by,
			Manual: c.manual, ProbeOutage: c.probe, Window: c.windowID,
			Up: s.up, LastProbe: s.lastProbe, LastError: s.lastErr,
			ConsecutiveFailures: s.fails, ConsecutiveSuccesses: s.oks,
			Windows: m.windowsLocked(s.cfg.Name),
		})
	}
	return out
}

// StartOutage puts server in an operator outage, which only EndOutage
// ends. It returns once the change is durable; an outage already started
// by an operator is left as it is.
func (m *Monitor) StartOutage(ctx context.Context, name, reason, by string) error {
	s := m.servers[name]
	if s == nil {
		return fmt.Errorf("health: start outage: %w: %q", ErrUnknownServer, name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ctl.manual {
		return nil
	}
	now := m.now()
	tr, err := m.changeLocked(ctx, s, now, true, ending{}, func(c *control) {
		c.manual, c.manualSince, c.manualReason, c.manualBy = true, now, reason, by
	})
	if err != nil {
		return fmt.Errorf("health: start outage of %s: %w", name, err)
	}
	m.log.Info("health: operator outage started", "server", name, "reason", reason, "by", by)
	if tr != nil {
		m.enqueueLocked(*tr)
	}
	return nil
}

// EndOutage ends an operator outage and also a probe-declared one: the
// operator overrides the probes, which need FailAfter new failed rounds to
// declare another. A maintenance window in effect is not overridden: it
// returns ErrWindowActive (remove the window instead).
func (m *Monitor) EndOutage(ctx context.Context, name, by string) error {
	s := m.servers[name]
	if s == nil {
		return fmt.Errorf("health: end outage: %w: %q", ErrUnknownServer, name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ctl.windowID != "" {
		return fmt.Errorf("health: end outage of %s: %w: %s; remove the window to end it", name, ErrWindowActive, s.ctl.windowID)
	}
	if !s.ctl.manual && !s.ctl.probe {
		return nil
	}
	end := ending{cause: CauseOperator, reason: "ended by operator", by: by}
	tr, err := m.changeLocked(ctx, s, m.now(), true, end, func(c *control) {
		c.manual, c.manualSince, c.manualReason, c.manualBy = false, time.Time{}, "", ""
		c.probe, c.probeSince, c.probeReason = false, time.Time{}, ""
	})
	if err != nil {
		return fmt.Errorf("health: end outage of %s: %w", name, err)
	}
	s.fails, s.oks = 0, 0
	m.log.Info("health: operator ended outage", "server", name, "by", by)
	if tr != nil {
		m.enqueueLocked(*tr)
	}
	return nil
}

// Transitions returns the last limit transitions of server ("" for all
// servers), oldest first, from the journal's event log; limit <= 0 means
// all.
func (m *Monitor) Transitions(ctx context.Context, server string, limit int) ([]Transition, error) {
	var out []Transition
	err := m.store.Events(ctx, EventLog, 1, func(seq uint64, value []byte) error {
		var t Transition
		if err := json.Unmarshal(value, &t); err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		if server != "" && t.Server != server {
			return nil
		}
		out = append(out, t)
		if limit > 0 && len(out) > 2*limit {
			out = append(out[:0], out[len(out)-limit:]...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("health: reading transitions: %w", err)
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// changeLocked applies mutate to a copy of s's state, settles the effective
// outage and makes the result durable (the state key, then the event log).
// strict (operator actions): if the state cannot be stored, nothing changes
// and the error is returned. Otherwise (probes, windows: facts that happen
// whatever the disk says) the change applies anyway, the error is logged,
// and the write is retried on the next change or probe round.
func (m *Monitor) changeLocked(ctx context.Context, s *server, now time.Time, strict bool, end ending, mutate func(*control)) (*Transition, error) {
	next := s.ctl
	mutate(&next)
	tr := settle(&next, s.cfg.Name, now, end)
	p := next.persisted()
	if err := m.writeLocked(ctx, s, p, tr); err != nil {
		if strict {
			return nil, err
		}
		m.log.Error("health: storing outage state", "server", s.cfg.Name, "err", err)
		if tr != nil {
			m.unlogged = append(m.unlogged, *tr)
		}
	}
	s.ctl = next
	s.outage.Store(next.outage)
	m.metrics.outage.WithLabelValues(s.cfg.Name).Set(b2f(next.outage))
	if tr != nil {
		m.metrics.transitions.WithLabelValues(s.cfg.Name, tr.Cause).Inc()
		if tr.Outage {
			m.log.Warn("health: outage started", "server", tr.Server, "cause", tr.Cause, "reason", tr.Reason, "by", tr.By)
		} else {
			m.log.Warn("health: outage ended", "server", tr.Server, "cause", tr.Cause, "reason", tr.Reason, "by", tr.By)
		}
	}
	return tr, nil
}

// writeLocked stores p under s's key if it differs from what is stored,
// then appends the transitions not yet in the event log and tr. An error
// storing p is returned and nothing is appended; once p is stored the
// transition has happened, so an event log error is only logged and the
// event kept for the next write.
func (m *Monitor) writeLocked(ctx context.Context, s *server, p persisted, tr *Transition) error {
	if s.dirty || !p.equal(s.saved) {
		b, err := json.Marshal(p)
		if err == nil {
			err = m.store.SetControl(ctx, outagePrefix+s.cfg.Name, b)
		}
		if err != nil {
			s.dirty = true
			return err
		}
		s.saved, s.dirty = p, false
	}
	events := m.unlogged
	if tr != nil {
		events = append(events, *tr)
	}
	m.unlogged = nil
	for i, t := range events {
		b, err := json.Marshal(t)
		if err == nil {
			_, err = m.store.AppendEvent(ctx, EventLog, b)
		}
		if err != nil {
			m.log.Error("health: logging outage transition", "server", t.Server, "err", err)
			m.unlogged = append([]Transition(nil), events[i:]...)
			break
		}
	}
	return nil
}

// record feeds one probe round's result (nil: every probe passed) to the
// hysteresis: FailAfter failed rounds in a row declare an outage,
// RecoverAfter good ones end it.
func (m *Monitor) record(ctx context.Context, s *server, err error) {
	now := m.now()
	name := s.cfg.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	s.lastProbe, s.up = now, err == nil
	m.metrics.up.WithLabelValues(name).Set(b2f(err == nil))
	var tr *Transition
	if err != nil {
		s.fails++
		s.oks = 0
		s.lastErr = err.Error()
		if s.fails == 1 {
			m.log.Warn("health: probe failed", "server", name, "err", err)
		} else {
			m.log.Debug("health: probe failed", "server", name, "failures", s.fails, "err", err)
		}
		if !s.ctl.probe && s.fails >= s.cfg.FailAfter {
			reason := fmt.Sprintf("%d failed probe rounds: %v", s.fails, err)
			tr, _ = m.changeLocked(ctx, s, now, false, ending{}, func(c *control) {
				c.probe, c.probeSince, c.probeReason = true, now, reason
			})
		}
	} else {
		if s.fails > 0 {
			m.log.Info("health: probe passed again", "server", name, "after_failures", s.fails)
		}
		s.fails = 0
		s.oks++
		s.lastErr = ""
		if s.ctl.probe && s.oks >= s.cfg.RecoverAfter {
			end := ending{cause: CauseProbe, reason: fmt.Sprintf("%d successful probe rounds", s.oks)}
			tr, _ = m.changeLocked(ctx, s, now, false, end, func(c *control) {
				c.probe, c.probeSince, c.probeReason = false, time.Time{}, ""
			})
		}
	}
	if tr == nil && (s.dirty || len(m.unlogged) > 0) {
		// Retry a write that failed before.
		_, _ = m.changeLocked(ctx, s, now, false, ending{}, func(*control) {})
	}
	if tr != nil {
		m.enqueueLocked(*tr)
	}
}

// probeRound runs every probe of s concurrently and records the result.
func (m *Monitor) probeRound(ctx context.Context, s *server) {
	m.mu.Lock()
	probes := s.cfg.Probes // Reconfigure replaces the slice, never changes it
	m.mu.Unlock()
	if len(probes) == 0 {
		return
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { errs[i] = m.runProbe(ctx, s.cfg.Name, p) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Shutting down: a probe cut short says nothing about the server.
		return
	}
	m.record(context.WithoutCancel(ctx), s, errors.Join(errs...))
}

func (m *Monitor) runProbe(ctx context.Context, server string, p Probe) (err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			m.metrics.panics.Inc()
			m.log.Error("health: probe panicked", "server", server, "type", p.Type(), "panic", r)
			err = fmt.Errorf("%s probe panicked: %v", p.Type(), r)
		}
		m.metrics.probeSeconds.WithLabelValues(server, p.Type()).Observe(time.Since(start).Seconds())
		if err != nil {
			m.metrics.probeFailures.WithLabelValues(server, p.Type()).Inc()
		}
	}()
	return p.Check(ctx)
}

// Serve runs the probe loop of every server (a round at once, then every
// Interval), the window timer and the OnTransition deliveries until
// Shutdown (then it returns nil) or until ctx is done (then ctx.Err()).
func (m *Monitor) Serve(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.serving {
		m.mu.Unlock()
		return errors.New("health: Serve called twice")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	m.serving, m.cancel, m.done = true, cancel, make(chan struct{})
	m.mu.Unlock()
	defer close(m.done)
	defer cancel()

	var wg sync.WaitGroup
	for _, s := range m.order {
		// Every server gets a loop, even one without probes: Reconfigure
		// may give it some.
		wg.Go(func() { m.probeLoop(ctx, s) })
	}
	wg.Go(func() { m.windowLoop(ctx) })
	wg.Go(func() { m.notifyLoop(ctx) })
	wg.Wait()
	return parent.Err()
}

// Shutdown stops Serve and waits for it, or for ctx.
func (m *Monitor) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	cancel, done := m.cancel, m.done
	m.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("health: shutdown: %w", ctx.Err())
	}
}

func (m *Monitor) probeLoop(ctx context.Context, s *server) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.reconfigured:
			// New settings: a round with them now, then their interval.
			// (Since Go 1.23 a stopped timer delivers nothing stale.)
			timer.Stop()
		}
		start := time.Now()
		safely(m, "probe round", func() struct{} { m.probeRound(ctx, s); return struct{}{} })
		m.mu.Lock()
		interval := s.cfg.Interval
		m.mu.Unlock()
		timer.Reset(max(interval-time.Since(start), 0))
	}
}

// enqueueLocked queues transitions for OnTransition.
func (m *Monitor) enqueueLocked(trs ...Transition) {
	if len(trs) == 0 || m.onTransition == nil {
		return
	}
	m.queue = append(m.queue, trs...)
	kick(m.notifyKick)
}

// notifyLoop calls OnTransition for each queued transition, in order; on
// shutdown it delivers what is queued and returns.
func (m *Monitor) notifyLoop(ctx context.Context) {
	kick(m.notifyKick) // what New and callers queued before Serve
	for {
		stopping := false
		select {
		case <-ctx.Done():
			stopping = true
		case <-m.notifyKick:
		}
		for {
			m.mu.Lock()
			q := m.queue
			m.queue = nil
			m.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, t := range q {
				safely(m, "OnTransition", func() struct{} { m.onTransition(t); return struct{}{} })
			}
		}
		if stopping {
			return
		}
	}
}

// safely runs fn, recovering and counting a panic (STYLE.md: every
// goroutine recovers); it then returns the zero value.
func safely[T any](m *Monitor, what string, fn func() T) (v T) {
	defer func() {
		if r := recover(); r != nil {
			m.metrics.panics.Inc()
			m.log.Error("health: panic", "in", what, "panic", r)
		}
	}()
	return fn()
}

// now is the clock's time in UTC without a monotonic reading, as stored.
func (m *Monitor) now() time.Time { return m.clock().UTC() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

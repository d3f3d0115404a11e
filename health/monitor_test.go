package health

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
)

// rig is a Monitor on a real journal with scripted probes and a fake clock.
type rig struct {
	t     *testing.T
	m     *Monitor
	store journal.ControlStore
	clock *fakeClock
	reg   *prometheus.Registry
	probe map[string]*scriptProbe
	rec   *recorder
}

func newRig(t *testing.T, store journal.ControlStore, clock *fakeClock, windows []Window, servers ...string) *rig {
	t.Helper()
	r := &rig{t: t, store: store, clock: clock, reg: prometheus.NewRegistry(), probe: map[string]*scriptProbe{}, rec: &recorder{}}
	var cfg []Server
	for _, name := range servers {
		p := &scriptProbe{typ: ProbeLMTP}
		r.probe[name] = p
		cfg = append(cfg, Server{Name: name, Probes: []Probe{p}, Interval: time.Hour})
	}
	m, err := New(Options{
		Servers: cfg, Windows: windows, Store: store, Logger: testLogger(t),
		Registerer: r.reg, Clock: clock.Now, OnTransition: r.rec.add,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.m = m
	return r
}

// round runs one probe round of server with the probe failing or not.
func (r *rig) round(server string, fail bool) {
	r.t.Helper()
	r.probe[server].fail.Store(fail)
	r.m.probeRound(context.Background(), r.m.servers[server])
}

func (r *rig) evaluate() {
	r.m.mu.Lock()
	_, trs := r.m.evaluateLocked(context.Background())
	r.m.enqueueLocked(trs...)
	r.m.mu.Unlock()
}

func (r *rig) wantOutage(server string, want bool, cause string) {
	r.t.Helper()
	if got := r.m.InOutage(server); got != want {
		r.t.Fatalf("InOutage(%s) = %v, want %v", server, got, want)
	}
	for _, st := range r.m.Status() {
		if st.Name != server {
			continue
		}
		if st.Outage != want || st.Cause != cause {
			r.t.Fatalf("status of %s: outage %v cause %q, want %v %q", server, st.Outage, st.Cause, want, cause)
		}
	}
	if got := metricValue(r.t, r.reg, "lifeline_outage_active", "server", server); got != b2f(want) {
		r.t.Fatalf("lifeline_outage_active{server=%s} = %v, want %v", server, got, b2f(want))
	}
}

func (r *rig) transitions(server string) []Transition {
	r.t.Helper()
	trs, err := r.m.Transitions(context.Background(), server, 0)
	if err != nil {
		r.t.Fatalf("Transitions: %v", err)
	}
	return trs
}

func wantTransitions(t *testing.T, got []Transition, want ...Transition) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d transitions %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Server != w.Server || g.Outage != w.Outage || g.Cause != w.Cause || (w.By != "" && g.By != w.By) ||
			(!w.Time.IsZero() && !g.Time.Equal(w.Time)) || (w.Window != "" && g.Window != w.Window) {
			t.Fatalf("transition %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestFlappingNeverStartsOutage(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	r := newRig(t, j, newFakeClock(), nil, "dovecot")
	// One failure among successes, then two in a row: never FailAfter (3).
	for _, fail := range []bool{false, true, false, false, true, false, true, true, false, true, true, false} {
		r.round("dovecot", fail)
		r.wantOutage("dovecot", false, "")
	}
	if n := len(r.transitions("")); n != 0 {
		t.Fatalf("%d transitions logged, want 0", n)
	}
	if got := metricValue(t, r.reg, "lifeline_probe_failures_total", "server", "dovecot", "type", "lmtp"); got != 6 {
		t.Fatalf("lifeline_probe_failures_total = %v, want 6", got)
	}
	if got := metricValue(t, r.reg, "lifeline_probe_seconds", "server", "dovecot", "type", "lmtp"); got != 12 {
		t.Fatalf("lifeline_probe_seconds count = %v, want 12", got)
	}
}

func TestHysteresis(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	clock := newFakeClock()
	r := newRig(t, j, clock, nil, "dovecot", "other")
	r.round("dovecot", true)
	r.round("dovecot", true)
	r.wantOutage("dovecot", false, "")
	if got := metricValue(t, r.reg, "lifeline_mailbox_server_up", "server", "dovecot"); got != 0 {
		t.Fatalf("lifeline_mailbox_server_up = %v, want 0", got)
	}
	clock.Add(10 * time.Second)
	start := clock.Now()
	r.round("dovecot", true) // third failure
	r.wantOutage("dovecot", true, CauseProbe)
	r.wantOutage("other", false, "")
	st := r.m.Status()[0]
	if !st.Since.Equal(start) || !st.ProbeOutage || st.Manual || st.ConsecutiveFailures != 3 || st.LastError == "" || st.Up {
		t.Fatalf("status %+v", st)
	}
	// Failures during the outage change nothing; successes short of
	// RecoverAfter neither.
	r.round("dovecot", true)
	r.round("dovecot", false)
	r.round("dovecot", false)
	r.round("dovecot", true)
	r.round("dovecot", false)
	r.round("dovecot", false)
	r.wantOutage("dovecot", true, CauseProbe)
	clock.Add(10 * time.Second)
	end := clock.Now()
	r.round("dovecot", false)
	r.wantOutage("dovecot", false, "")
	if got := metricValue(t, r.reg, "lifeline_mailbox_server_up", "server", "dovecot"); got != 1 {
		t.Fatalf("lifeline_mailbox_server_up = %v, want 1", got)
	}
	want := []Transition{
		{Server: "dovecot", Outage: true, Cause: CauseProbe, Time: start},
		{Server: "dovecot", Outage: false, Cause: CauseProbe, Time: end},
	}
	wantTransitions(t, r.transitions("dovecot"), want...)
	wantTransitions(t, r.transitions(""), want...)
	if n := len(r.transitions("other")); n != 0 {
		t.Fatalf("other has %d transitions", n)
	}
	if last, _ := r.m.Transitions(context.Background(), "dovecot", 1); len(last) != 1 || last[0].Outage {
		t.Fatalf("Transitions limit 1 = %+v", last)
	}
	if got := metricValue(t, r.reg, "lifeline_outage_transitions_total", "server", "dovecot", "cause", "probe"); got != 2 {
		t.Fatalf("lifeline_outage_transitions_total{cause=probe} = %v, want 2", got)
	}
	if got := metricValue(t, r.reg, "lifeline_outage_transitions_total", "server", "dovecot", "cause", "operator"); got != 0 {
		t.Fatalf("lifeline_outage_transitions_total{cause=operator} = %v, want 0", got)
	}
}

func TestManualOutageNotEndedByProbes(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	r := newRig(t, j, newFakeClock(), nil, "dovecot")
	ctx := context.Background()
	if err := r.m.StartOutage(ctx, "dovecot", "disk replacement", "alice"); err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", true, CauseOperator)
	for range 10 {
		r.round("dovecot", false)
	}
	r.wantOutage("dovecot", true, CauseOperator)
	st := r.m.Status()[0]
	if !st.Manual || st.Reason != "disk replacement" || st.By != "alice" {
		t.Fatalf("status %+v", st)
	}
	// Probes failing underneath: still operator; ending the manual outage
	// ends the probes' too (the operator overrides them).
	for range 3 {
		r.round("dovecot", true)
	}
	if st := r.m.Status()[0]; !st.ProbeOutage || st.Cause != CauseOperator {
		t.Fatalf("status %+v", st)
	}
	if err := r.m.EndOutage(ctx, "dovecot", "bob"); err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", false, "")
	// FailAfter new failures are needed again.
	r.round("dovecot", true)
	r.round("dovecot", true)
	r.wantOutage("dovecot", false, "")
	r.round("dovecot", true)
	r.wantOutage("dovecot", true, CauseProbe)
	wantTransitions(t, r.transitions("dovecot"),
		Transition{Server: "dovecot", Outage: true, Cause: CauseOperator, By: "alice"},
		Transition{Server: "dovecot", Outage: false, Cause: CauseOperator, By: "bob"},
		Transition{Server: "dovecot", Outage: true, Cause: CauseProbe},
	)
	// Idempotent and unknown servers.
	if err := r.m.StartOutage(ctx, "dovecot", "x", "y"); err != nil {
		t.Fatal(err)
	}
	if err := r.m.StartOutage(ctx, "dovecot", "again", "y"); err != nil {
		t.Fatal(err)
	}
	if st := r.m.Status()[0]; st.Reason != "x" {
		t.Fatalf("second StartOutage changed the reason: %+v", st)
	}
	if err := r.m.StartOutage(ctx, "nope", "", ""); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("StartOutage(unknown) = %v", err)
	}
	if err := r.m.EndOutage(ctx, "nope", ""); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("EndOutage(unknown) = %v", err)
	}
	if r.m.InOutage("nope") {
		t.Fatal("unknown server in outage")
	}
}

func TestWindows(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	clock := newFakeClock()
	t0 := clock.Now()
	cfgWin := Window{Server: "dovecot", Start: t0.Add(5 * time.Hour), End: t0.Add(6 * time.Hour), Reason: "configured"}
	r := newRig(t, j, clock, []Window{cfgWin}, "dovecot", "other")
	ctx := context.Background()
	w, err := r.m.AddWindow(ctx, Window{Server: "dovecot", Start: t0.Add(time.Hour), End: t0.Add(2 * time.Hour), Reason: "upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || w.Configured {
		t.Fatalf("AddWindow = %+v", w)
	}
	if ws := r.m.Windows(); len(ws) != 2 || ws[0].ID != w.ID || ws[1].ID != "config-1" || !ws[1].Configured {
		t.Fatalf("Windows = %+v", ws)
	}
	r.evaluate()
	r.wantOutage("dovecot", false, "")
	if next := r.m.nextBoundaryLocked(clock.Now()); !next.Equal(w.Start) {
		t.Fatalf("next boundary %v, want %v", next, w.Start)
	}

	clock.Set(w.Start.Add(-time.Nanosecond))
	r.evaluate()
	r.wantOutage("dovecot", false, "")
	clock.Set(w.Start)
	r.evaluate()
	r.wantOutage("dovecot", true, CauseWindow)
	r.wantOutage("other", false, "")
	if st := r.m.Status()[0]; st.Reason != "upgrade" || st.Window != w.ID {
		t.Fatalf("status %+v", st)
	}
	// Probes succeed throughout: the window still holds.
	for range 5 {
		r.round("dovecot", false)
	}
	r.wantOutage("dovecot", true, CauseWindow)
	// EndOutage does not override a window.
	if err := r.m.EndOutage(ctx, "dovecot", "bob"); !errors.Is(err, ErrWindowActive) {
		t.Fatalf("EndOutage during a window = %v", err)
	}
	clock.Set(w.End)
	r.evaluate()
	r.wantOutage("dovecot", false, "")
	// The ended window is forgotten, also in the store.
	if ws := r.m.Windows(); len(ws) != 1 || ws[0].ID != "config-1" {
		t.Fatalf("Windows after the end = %+v", ws)
	}
	if _, err := j.Control(ctx, windowPrefix+w.ID); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("ended window still stored: %v", err)
	}
	// The configured window.
	clock.Set(cfgWin.Start.Add(time.Minute))
	r.evaluate()
	r.wantOutage("dovecot", true, CauseWindow)
	if err := r.m.RemoveWindow(ctx, "config-1"); err == nil {
		t.Fatal("RemoveWindow removed a configured window")
	}
	clock.Set(cfgWin.End)
	r.evaluate()
	r.wantOutage("dovecot", false, "")
	wantTransitions(t, r.transitions("dovecot"),
		Transition{Server: "dovecot", Outage: true, Cause: CauseWindow, Time: w.Start, Window: w.ID},
		Transition{Server: "dovecot", Outage: false, Cause: CauseWindow, Time: w.End, Window: w.ID},
		Transition{Server: "dovecot", Outage: true, Cause: CauseWindow, Window: "config-1"},
		Transition{Server: "dovecot", Outage: false, Cause: CauseWindow, Time: cfgWin.End, Window: "config-1"},
	)
	if got := metricValue(t, r.reg, "lifeline_outage_transitions_total", "server", "dovecot", "cause", "window"); got != 4 {
		t.Fatalf("lifeline_outage_transitions_total{cause=window} = %v, want 4", got)
	}

	// Validation.
	for _, bad := range []Window{
		{Server: "nope", Start: clock.Now(), End: clock.Now().Add(time.Hour)},
		{Server: "dovecot", Start: clock.Now().Add(time.Hour), End: clock.Now()},
		{Server: "dovecot", End: clock.Now().Add(time.Hour)},
		{Server: "dovecot", Start: clock.Now().Add(-2 * time.Hour), End: clock.Now().Add(-time.Hour)},
	} {
		if _, err := r.m.AddWindow(ctx, bad); err == nil {
			t.Errorf("AddWindow(%+v) accepted", bad)
		}
	}
	if err := r.m.RemoveWindow(ctx, "nope"); !errors.Is(err, ErrUnknownWindow) {
		t.Fatalf("RemoveWindow(unknown) = %v", err)
	}
}

func TestAddAndRemoveActiveWindow(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	clock := newFakeClock()
	r := newRig(t, j, clock, nil, "dovecot")
	ctx := context.Background()
	w, err := r.m.AddWindow(ctx, Window{Server: "dovecot", Start: clock.Now().Add(-time.Minute), End: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// A window that has begun takes effect when AddWindow returns.
	r.wantOutage("dovecot", true, CauseWindow)
	if err := r.m.RemoveWindow(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", false, "")
	if len(r.m.Windows()) != 0 {
		t.Fatalf("Windows = %+v", r.m.Windows())
	}
}

func TestWindowEndsWhileProbesFail(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	clock := newFakeClock()
	r := newRig(t, j, clock, nil, "dovecot")
	ctx := context.Background()
	w, err := r.m.AddWindow(ctx, Window{Server: "dovecot", Start: clock.Now(), End: clock.Now().Add(time.Hour), Reason: "upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", true, CauseWindow)
	// The upgrade went wrong: the probes fail during the window.
	for range 3 {
		r.round("dovecot", true)
	}
	r.wantOutage("dovecot", true, CauseWindow)
	clock.Set(w.End)
	r.evaluate()
	// Still in outage, now for the probes; no transition at the window's end.
	r.wantOutage("dovecot", true, CauseProbe)
	wantTransitions(t, r.transitions("dovecot"), Transition{Server: "dovecot", Outage: true, Cause: CauseWindow})
	for range 3 {
		r.round("dovecot", false)
	}
	r.wantOutage("dovecot", false, "")
	wantTransitions(t, r.transitions("dovecot"),
		Transition{Server: "dovecot", Outage: true, Cause: CauseWindow},
		Transition{Server: "dovecot", Outage: false, Cause: CauseProbe},
	)
}

func TestWindowEndsDuringManualOutage(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	clock := newFakeClock()
	r := newRig(t, j, clock, nil, "dovecot")
	ctx := context.Background()
	w, err := r.m.AddWindow(ctx, Window{Server: "dovecot", Start: clock.Now(), End: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.m.StartOutage(ctx, "dovecot", "still working", "alice"); err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", true, CauseOperator)
	clock.Set(w.End)
	r.evaluate()
	r.wantOutage("dovecot", true, CauseOperator)
	if err := r.m.EndOutage(ctx, "dovecot", "alice"); err != nil {
		t.Fatal(err)
	}
	r.wantOutage("dovecot", false, "")
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	ctx := context.Background()
	j, closeStore := openStore(t, dir)
	r := newRig(t, j, clock, nil, "probed", "manual", "windowed", "fine")
	for range 3 {
		r.round("probed", true)
	}
	if err := r.m.StartOutage(ctx, "manual", "migration", "alice"); err != nil {
		t.Fatal(err)
	}
	w, err := r.m.AddWindow(ctx, Window{Server: "windowed", Start: clock.Now(), End: clock.Now().Add(time.Hour), Reason: "upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := r.m.AddWindow(ctx, Window{Server: "fine", Start: clock.Now().Add(2 * time.Hour), End: clock.Now().Add(3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	closeStore()

	// Restart within the window.
	clock.Add(time.Minute)
	j, closeStore = openStore(t, dir)
	r = newRig(t, j, clock, nil, "probed", "manual", "windowed", "fine")
	r.wantOutage("probed", true, CauseProbe)
	r.wantOutage("manual", true, CauseOperator)
	r.wantOutage("windowed", true, CauseWindow)
	r.wantOutage("fine", false, "")
	if ws := r.m.Windows(); len(ws) != 2 || ws[0].ID != w.ID || ws[1].ID != w2.ID {
		t.Fatalf("Windows after restart = %+v", ws)
	}
	if st := r.m.Status()[1]; st.Reason != "migration" || st.By != "alice" {
		t.Fatalf("manual status after restart %+v", st)
	}
	// A restart forgets the counters but not the outage: RecoverAfter good
	// rounds are needed.
	r.round("probed", false)
	r.round("probed", false)
	r.wantOutage("probed", true, CauseProbe)
	closeStore()

	// Restart after the window ended while Lifeline was down: the end is a
	// transition, delivered once Serve runs.
	clock.Set(w.End.Add(time.Minute))
	j, _ = openStore(t, dir)
	r = newRig(t, j, clock, nil, "probed", "manual", "windowed", "fine")
	r.wantOutage("windowed", false, "")
	r.wantOutage("probed", true, CauseProbe)
	r.round("probed", false)
	r.round("probed", false)
	r.round("probed", false)
	r.wantOutage("probed", false, "")
	wantTransitions(t, r.transitions("windowed"),
		Transition{Server: "windowed", Outage: true, Cause: CauseWindow, Window: w.ID},
		Transition{Server: "windowed", Outage: false, Cause: CauseWindow, Time: w.End.Add(time.Minute), Window: w.ID},
	)
	wantTransitions(t, r.transitions("probed"),
		Transition{Server: "probed", Outage: true, Cause: CauseProbe},
		Transition{Server: "probed", Outage: false, Cause: CauseProbe},
	)
	// OnTransition gets New's transition and the later ones when Serve runs.
	serveCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.m.Serve(serveCtx) }()
	poll(t, 5*time.Second, "OnTransition", func() bool { return len(r.rec.get()) == 2 })
	wantTransitions(t, r.rec.get(),
		Transition{Server: "windowed", Outage: false, Cause: CauseWindow},
		Transition{Server: "probed", Outage: false, Cause: CauseProbe},
	)
	if err := r.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

func TestStoreFailures(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	store := &failingStore{ControlStore: j}
	r := newRig(t, store, newFakeClock(), nil, "dovecot")
	ctx := context.Background()

	// An operator action that cannot be made durable fails and changes
	// nothing.
	store.failSet.Store(true)
	if err := r.m.StartOutage(ctx, "dovecot", "x", "alice"); !errors.Is(err, errInjected) {
		t.Fatalf("StartOutage with a failing store = %v", err)
	}
	r.wantOutage("dovecot", false, "")
	if _, err := r.m.AddWindow(ctx, Window{Server: "dovecot", Start: r.clock.Now(), End: r.clock.Now().Add(time.Hour)}); !errors.Is(err, errInjected) {
		t.Fatalf("AddWindow with a failing store = %v", err)
	}
	r.wantOutage("dovecot", false, "")

	// A probe outage happens whatever the disk says, and is stored once the
	// store works again.
	for range 3 {
		r.round("dovecot", true)
	}
	r.wantOutage("dovecot", true, CauseProbe)
	if _, err := j.Control(ctx, outagePrefix+"dovecot"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("state stored through a failing store: %v", err)
	}
	store.failSet.Store(false)
	store.failAppend.Store(true)
	r.round("dovecot", true)
	if _, err := j.Control(ctx, outagePrefix+"dovecot"); err != nil {
		t.Fatalf("state not stored after the store recovered: %v", err)
	}
	if n := len(r.transitions("")); n != 0 {
		t.Fatalf("%d transitions logged through a failing event log", n)
	}
	store.failAppend.Store(false)
	for range 3 {
		r.round("dovecot", false)
	}
	r.wantOutage("dovecot", false, "")
	// Both transitions are logged, in order.
	wantTransitions(t, r.transitions("dovecot"),
		Transition{Server: "dovecot", Outage: true, Cause: CauseProbe},
		Transition{Server: "dovecot", Outage: false, Cause: CauseProbe},
	)
}

func TestServeProbeLoopAndShutdown(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	reg := prometheus.NewRegistry()
	rec := &recorder{}
	p := &scriptProbe{typ: ProbeTCP}
	p.fail.Store(true)
	m, err := New(Options{
		Servers:    []Server{{Name: "dovecot", Probes: []Probe{p}, Interval: 5 * time.Millisecond, FailAfter: 3, RecoverAfter: 2}},
		Store:      j,
		Logger:     testLogger(t),
		Registerer: reg, OnTransition: rec.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()

	// Lock-free readers while the state changes (run with -race).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					m.InOutage("dovecot")
				}
			}
		})
	}
	poll(t, 10*time.Second, "outage start", func() bool { return m.InOutage("dovecot") })
	if p.calls.Load() < 3 {
		t.Fatalf("outage after %d probes", p.calls.Load())
	}
	p.fail.Store(false)
	poll(t, 10*time.Second, "outage end", func() bool { return !m.InOutage("dovecot") })
	close(stop)
	wg.Wait()
	poll(t, 5*time.Second, "OnTransition", func() bool { return len(rec.get()) == 2 })
	wantTransitions(t, rec.get(),
		Transition{Server: "dovecot", Outage: true, Cause: CauseProbe},
		Transition{Server: "dovecot", Outage: false, Cause: CauseProbe},
	)
	if err := m.Serve(ctx); err == nil {
		t.Fatal("second Serve accepted")
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if err := m.Serve(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Shutdown = %v", err)
	}
	if got := metricValue(t, reg, "lifeline_panics_total", "component", "health"); got != 0 {
		t.Fatalf("lifeline_panics_total = %v", got)
	}
}

func TestServeWindowTimer(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	rec := &recorder{}
	m, err := New(Options{
		Servers: []Server{{Name: "dovecot"}}, // no probes: windows only
		Store:   j, Logger: testLogger(t), OnTransition: rec.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	// Added while Serve sleeps: the kick re-arms the timer.
	start := time.Now().Add(300 * time.Millisecond)
	w, err := m.AddWindow(ctx, Window{Server: "dovecot", Start: start, End: start.Add(300 * time.Millisecond), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "window start", func() bool { return m.InOutage("dovecot") })
	if now := time.Now(); now.Before(w.Start) {
		t.Fatalf("in outage at %v, before the window's start %v", now, w.Start)
	}
	poll(t, 10*time.Second, "window end", func() bool { return !m.InOutage("dovecot") })
	if now := time.Now(); now.Before(w.End) {
		t.Fatalf("outage ended at %v, before the window's end %v", now, w.End)
	}
	poll(t, 5*time.Second, "OnTransition", func() bool { return len(rec.get()) == 2 })
	wantTransitions(t, rec.get(),
		Transition{Server: "dovecot", Outage: true, Cause: CauseWindow, Window: w.ID},
		Transition{Server: "dovecot", Outage: false, Cause: CauseWindow, Window: w.ID},
	)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after cancel = %v", err)
	}
}

func TestOnTransitionPanicIsRecovered(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	reg := prometheus.NewRegistry()
	m, err := New(Options{
		Servers: []Server{{Name: "dovecot"}}, Store: j, Logger: testLogger(t), Registerer: reg,
		OnTransition: func(Transition) { panic("boom") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	if err := m.StartOutage(ctx, "dovecot", "", "alice"); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "panic counted", func() bool {
		return metricValue(t, reg, "lifeline_panics_total", "component", "health") == 1
	})
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewValidation(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	now := time.Now()
	for name, opts := range map[string]Options{
		"no store":       {Servers: []Server{{Name: "a"}}},
		"no name":        {Store: j, Servers: []Server{{}}},
		"duplicate":      {Store: j, Servers: []Server{{Name: "a"}, {Name: "a"}}},
		"negative":       {Store: j, Servers: []Server{{Name: "a", FailAfter: -1}}},
		"window server":  {Store: j, Servers: []Server{{Name: "a"}}, Windows: []Window{{Server: "b", Start: now, End: now.Add(time.Hour)}}},
		"window reverse": {Store: j, Servers: []Server{{Name: "a"}}, Windows: []Window{{Server: "a", Start: now, End: now.Add(-time.Hour)}}},
		"nil probe":      {Store: j, Servers: []Server{{Name: "a", Probes: []Probe{nil}}}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
	// Defaults.
	m, err := New(Options{Store: j, Servers: []Server{{Name: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.servers["a"].cfg
	if cfg.Interval != DefaultInterval || cfg.FailAfter != DefaultFailAfter || cfg.RecoverAfter != DefaultRecoverAfter {
		t.Fatalf("defaults %+v", cfg)
	}
	if DefaultInterval*DefaultFailAfter != 30*time.Second {
		t.Fatal("documented detection time is 30 s")
	}
}

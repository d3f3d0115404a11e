package health

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

// openStore opens a real journal in dir. close (also run at the end of the
// test) closes it once, for a restart.
func openStore(t *testing.T, dir string) (j *badgerjournal.Journal, close func()) {
	t.Helper()
	j, err := badgerjournal.Open(dir, badgerjournal.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	var once sync.Once
	close = func() {
		once.Do(func() {
			if err := j.Close(); err != nil {
				t.Errorf("close journal: %v", err)
			}
		})
	}
	t.Cleanup(close)
	return j, close
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// scriptProbe is a fault-injecting Probe whose result the test sets.
type scriptProbe struct {
	typ   string
	fail  atomic.Bool
	calls atomic.Int64
}

func (p *scriptProbe) Type() string { return p.typ }

func (p *scriptProbe) Check(ctx context.Context) error {
	p.calls.Add(1)
	if p.fail.Load() {
		return errors.New("scripted failure: 451 4.3.0 temporary failure")
	}
	return nil
}

// failingStore wraps a real journal and fails control writes on demand, for
// the journal-write-failure paths.
type failingStore struct {
	journal.ControlStore
	failSet    atomic.Bool
	failAppend atomic.Bool
}

var errInjected = errors.New("injected store failure")

func (s *failingStore) SetControl(ctx context.Context, key string, value []byte) error {
	if s.failSet.Load() {
		return errInjected
	}
	return s.ControlStore.SetControl(ctx, key, value)
}

func (s *failingStore) AppendEvent(ctx context.Context, log string, value []byte) (uint64, error) {
	if s.failAppend.Load() {
		return 0, errInjected
	}
	return s.ControlStore.AppendEvent(ctx, log, value)
}

// recorder collects OnTransition calls.
type recorder struct {
	mu  sync.Mutex
	trs []Transition
}

func (r *recorder) add(t Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trs = append(r.trs, t)
}

func (r *recorder) get() []Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transition(nil), r.trs...)
}

// metricValue reads one sample from a registry (counter, gauge, or a
// histogram's count); -1 if absent.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// poll waits until cond holds, failing the test after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

func mustErrContain(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

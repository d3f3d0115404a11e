package health

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReconfigure changes the probe settings while Serve runs, as SIGHUP
// does: a long interval becomes a short one at once (not after the old
// interval), a new probe replaces the old one, a lower fail_after declares
// the outage with fewer rounds, and a server set that differs is refused
// without changing anything.
func TestReconfigure(t *testing.T) {
	j, _ := openStore(t, t.TempDir())
	old := &scriptProbe{typ: ProbeTCP}
	m, err := New(Options{
		Servers: []Server{
			{Name: "dovecot", Probes: []Probe{old}, Interval: time.Hour, FailAfter: 1000},
			{Name: "quiet"}, // no probes yet
		},
		Store: j, Logger: testLogger(t), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	poll(t, 5*time.Second, "first round", func() bool { return old.calls.Load() == 1 })

	// Refused: a server added and one removed. Nothing changes.
	err = m.Reconfigure([]Server{{Name: "dovecot", Interval: time.Millisecond}, {Name: "new"}})
	if !errors.Is(err, ErrServersChanged) {
		t.Fatalf("Reconfigure with another server set = %v", err)
	}
	mustErrContain(t, err, "added: new", "removed: quiet")
	if err := m.Reconfigure([]Server{{Name: "dovecot", FailAfter: -1}, {Name: "quiet"}}); err == nil {
		t.Fatal("negative fail_after accepted")
	}

	cur := &scriptProbe{typ: ProbeLMTP}
	cur.fail.Store(true)
	quiet := &scriptProbe{typ: ProbeTCP}
	if err := m.Reconfigure([]Server{
		{Name: "quiet", Probes: []Probe{quiet}, Interval: 5 * time.Millisecond},
		{Name: "dovecot", Probes: []Probe{cur}, Interval: 5 * time.Millisecond, FailAfter: 2, RecoverAfter: 1},
	}); err != nil {
		t.Fatal(err)
	}
	// With the old hour-long interval nothing would run for an hour.
	poll(t, 10*time.Second, "outage after 2 failed rounds of the new probe", func() bool { return m.InOutage("dovecot") })
	if n := cur.calls.Load(); n < 2 {
		t.Errorf("outage after %d rounds, want >= 2", n)
	}
	if n := old.calls.Load(); n != 1 {
		t.Errorf("the replaced probe ran %d times, want 1", n)
	}
	poll(t, 10*time.Second, "rounds of a server that had no probes", func() bool { return quiet.calls.Load() >= 3 })

	// recover_after 1: one good round ends it.
	cur.fail.Store(false)
	poll(t, 10*time.Second, "outage end", func() bool { return !m.InOutage("dovecot") })

	// Back to a long interval: the rounds stop.
	if err := m.Reconfigure([]Server{{Name: "dovecot", Probes: []Probe{cur}, Interval: time.Hour}, {Name: "quiet"}}); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the round run on reconfiguring", func() bool {
		before := cur.calls.Load()
		time.Sleep(50 * time.Millisecond) // at 5 ms, ~10 rounds would run here
		return cur.calls.Load() == before
	})
	for _, st := range m.Status() {
		if st.Outage {
			t.Errorf("%s still in outage", st.Name)
		}
	}
}

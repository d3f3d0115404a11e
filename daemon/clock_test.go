package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifelinemail/lifeline/journal"
)

// The retention sweep removes what arrived before its horizon, but never a
// message with a recipient in custody or retrying: a sweep with the horizon
// of a clock 100 days ahead (beyond the 90-day retention; what a restart after
// a forward step of the clock takes) removes the delivered copy and keeps the
// others.
func TestSweepClockJumpKeepsCustody(t *testing.T) {
	j := openTestJournal(t)
	ctx := context.Background()
	now := time.Now()
	add := func(subject string, state journal.State) journal.ID {
		t.Helper()
		env := journal.Envelope{MailFrom: "s@example.org", Received: now, Recipients: []journal.Recipient{
			{Address: "alice@example.com", Mailboxes: []string{"alice@example.com"}, Server: "dovecot", State: state},
		}}
		res, err := j.Append(ctx, env, strings.NewReader("Subject: "+subject+"\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	mta := add("delivered by the MTA", journal.StateMTA)
	held := add("in custody", journal.StateCustody)
	retrying := add("retrying", journal.StateCustody)
	if err := j.Update(ctx, retrying, journal.Change{Rcpt: 0, To: journal.StateRetrying, Reply: "451 4.3.0 try later",
		NextAttempt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	m := newMetrics(prometheus.NewRegistry(), "test")
	log := slog.New(slog.DiscardHandler)

	// On the real clock nothing is old enough.
	sweepOnce(ctx, j, nil, time.Now().Add(-90*24*time.Hour), log, m)
	if n := sweepCounter(t, m.sweepRemoved); n != 0 {
		t.Fatalf("removed %v messages on the real clock", n)
	}
	sweepOnce(ctx, j, nil, time.Now().Add(10*24*time.Hour), log, m)
	if n := sweepCounter(t, m.sweepRemoved); n != 1 {
		t.Errorf("removed %v messages 100 days on, want 1 (the MTA's copy)", n)
	}
	if _, err := j.Get(ctx, mta); err == nil {
		t.Error("the delivered message survived a sweep 100 days on")
	}
	for name, id := range map[string]journal.ID{"custody": held, "retrying": retrying} {
		e, err := j.Get(ctx, id)
		if err != nil {
			t.Errorf("the %s message was swept: %v", name, err)
			continue
		}
		if !e.Envelope.Recipients[0].State.Undelivered() {
			t.Errorf("the %s message's recipient is %s", name, e.Envelope.Recipients[0].State)
		}
	}
	n := 0
	if err := j.Custody(ctx, 0, func(journal.CustodyItem) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("custody queue holds %d recipients after the sweep, want 2", n)
	}
}

func sweepCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// The horizon follows the wall clock as time passes and when the clock steps
// back, but moves forward no faster than the monotonic clock since the sweep
// before: a step 100 days ahead is held back by 100 days.
func TestRetentionHorizon(t *testing.T) {
	const retention = 90 * 24 * time.Hour
	h := newRetentionHorizon(retention)
	wall := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	now := time.Now()
	check := func(step string, wall, now, want time.Time, wantHeld time.Duration) {
		t.Helper()
		if got := h.peek(wall, now); !got.Equal(want) {
			t.Errorf("%s: peek %v, want %v", step, got, want)
		}
		got, held := h.next(wall, now)
		if !got.Equal(want) || held != wantHeld {
			t.Errorf("%s: horizon %v held back %v, want %v and %v", step, got, held, want, wantHeld)
		}
	}
	check("first sweep", wall, now, wall.Add(-retention), 0)
	// An hour on both clocks.
	wall, now = wall.Add(time.Hour), now.Add(time.Hour)
	check("an hour later", wall, now, wall.Add(-retention), 0)
	// The wall clock steps 100 days ahead one hour later: the horizon moves
	// by the hour.
	before := wall.Add(-retention)
	wall, now = wall.Add(100*24*time.Hour+time.Hour), now.Add(time.Hour)
	check("100 days ahead", wall, now, before.Add(time.Hour), 100*24*time.Hour)
	// And stays that far behind the wall clock.
	wall, now = wall.Add(time.Hour), now.Add(time.Hour)
	check("an hour after the step", wall, now, before.Add(2*time.Hour), 100*24*time.Hour)
	// The clock is set right again (back 100 days): followed at once.
	wall, now = wall.Add(-100*24*time.Hour+time.Hour), now.Add(time.Hour)
	check("set right", wall, now, wall.Add(-retention), 0)
	// A step back below the last horizon is followed too.
	wall, now = wall.Add(-24*time.Hour), now.Add(time.Minute)
	check("a day back", wall, now, wall.Add(-retention), 0)
}

// A running sweeper whose wall clock steps 100 days ahead removes nothing
// that was not already past retention; a sweeper started afresh (a restart)
// takes the clock as it is and removes the delivered copy.
func TestSweeperClockStepForward(t *testing.T) {
	j := openTestJournal(t)
	ctx := context.Background()
	env := journal.Envelope{MailFrom: "s@example.org", Received: time.Now(), Recipients: []journal.Recipient{
		{Address: "alice@example.com", Mailboxes: []string{"alice@example.com"}, Server: "dovecot", State: journal.StateMTA},
	}}
	res, err := j.Append(ctx, env, strings.NewReader("Subject: kept\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	log := slog.New(slog.DiscardHandler)
	sweeps := func(m *metrics) uint64 {
		var d dto.Metric
		if err := m.sweepDuration.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetHistogram().GetSampleCount()
	}
	waitSweeps := func(m *metrics, n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for sweeps(m) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d sweeps after 10 s, want %d", sweeps(m), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	run := func(m *metrics, h *retentionHorizon) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			runSweeper(ctx, j, nil, h, 5*time.Millisecond, log, m, clock)
		}()
		return func() { cancel(); <-done }
	}

	m := newMetrics(prometheus.NewRegistry(), "test")
	stop := run(m, newRetentionHorizon(90*24*time.Hour))
	waitSweeps(m, 2)
	offset.Store(int64(100 * 24 * time.Hour))
	n := sweeps(m)
	waitSweeps(m, n+5)
	stop()
	if removed := sweepCounter(t, m.sweepRemoved); removed != 0 {
		t.Errorf("a running sweeper removed %v messages after the clock stepped 100 days ahead", removed)
	}
	if _, err := j.Get(ctx, res.ID); err != nil {
		t.Fatalf("the message is gone: %v", err)
	}

	m = newMetrics(prometheus.NewRegistry(), "test")
	stop = run(m, newRetentionHorizon(90*24*time.Hour))
	waitSweeps(m, 1)
	stop()
	if removed := sweepCounter(t, m.sweepRemoved); removed != 1 {
		t.Errorf("a restarted sweeper 100 days ahead removed %v messages, want 1", removed)
	}
}

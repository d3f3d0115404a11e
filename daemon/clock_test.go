package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifelinemail/lifeline/journal"
)

// The retention sweep measures its horizon on the daemon's wall clock: after
// the clock steps 100 days forward (beyond the 90-day retention) it removes
// the delivered copy, and keeps the messages with a recipient in custody or
// retrying.
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
	sweepOnce(ctx, j, nil, 90*24*time.Hour, log, m, time.Now)
	if n := sweepCounter(t, m.sweepRemoved); n != 0 {
		t.Fatalf("removed %v messages on the real clock", n)
	}
	jumped := func() time.Time { return time.Now().Add(100 * 24 * time.Hour) }
	sweepOnce(ctx, j, nil, 90*24*time.Hour, log, m, jumped)
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

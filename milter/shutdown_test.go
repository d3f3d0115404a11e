package milter

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
)

// committedJournal commits every append at once, then returns only after
// delay whatever its context says: a custody record that became durable just
// as shutdown's grace ran out.
type committedJournal struct {
	journal.Journal
	delay   time.Duration
	started chan struct{}
}

func (c *committedJournal) Append(_ context.Context, env journal.Envelope, r io.Reader) (journal.AppendResult, error) {
	res, err := c.Journal.Append(context.Background(), env, r)
	close(c.started)
	time.Sleep(c.delay)
	return res, err
}

// When the grace ends while an end-of-message is inside an append that has
// committed custody, Shutdown must let it answer DISCARD/DELRCPT before it
// closes the connection: closed at once, the MTA applies its default action
// (accept) and delivers recipients that replay delivers too.
func TestShutdownDeadlineLetsCommittedCustodyAnswer(t *testing.T) {
	j := newTestJournal(t)
	cj := &committedJournal{Journal: j, delay: 400 * time.Millisecond, started: make(chan struct{})}
	ts := startServer(t, Options{Journal: cj, Resolver: twoServers{}, Outage: newFakeOutage("mbx1")})
	m := dial(t, ts.addr)
	env := envelope{from: "s@sender.example", queueID: "QS", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}}}
	m.begin(env)
	m.content([]byte(simpleMessage("late", "x\r\n")))
	type result struct {
		mods []gomilter.ModifyAction
		act  *gomilter.Action
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		mods, act, err := m.sess.End()
		answered <- result{mods, act, err}
	}()
	<-cj.started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	r := <-answered
	if r.err != nil || r.act.Type != gomilter.ActionAccept || !slices.Equal(delRcpts(r.mods), []string{"<alice@a.example>"}) {
		t.Errorf("answer %v %q, %v; want ACCEPT with DELRCPT of alice (her custody is durable)", r.act, delRcpts(r.mods), r.err)
	}
	if got, want := rcptStates(t, j), []string{"alice@a.example=custody", "carol@b.example=mta"}; !slices.Equal(got, want) {
		t.Errorf("stored states %q, want %q", got, want)
	}
}

// The wait for answers after the grace is bounded: an append that does not
// return does not hold Shutdown beyond it.
func TestShutdownAnswerWaitBounded(t *testing.T) {
	release := make(chan struct{})
	fj := &faultJournal{Journal: newTestJournal(t), started: make(chan struct{}),
		hook: func(context.Context, journal.Envelope, io.Reader) { <-release }}
	ts := startServer(t, Options{Journal: fj}, func(s *Server) { s.answerWait = 200 * time.Millisecond })
	m := dial(t, ts.addr)
	m.begin(richEnvelope)
	m.content([]byte(richMessage))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.end() // the connection is closed under it
	}()
	defer func() {
		close(release)
		<-done
	}()
	<-fj.started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- ts.Shutdown(ctx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown waits for an append that does not return")
	}
}

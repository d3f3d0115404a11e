package replay

import (
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// A recipient retrying when the wall clock steps back a day is not held for
// that day: its stored NextAttempt lies further ahead than any backoff, so it
// is due at the next look (issue 8, the clock-jump fault).
func TestRetryAfterClockStepsBack(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("b@example.com", err452)
	clock := &testClock{now: time.Now().Round(0)}
	id := appendMsg(t, j, "sender@example.org", "cj", clock.Now(), custody("a@example.com"), custody("b@example.com"))
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Clock: clock.Now,
		RetryMin: time.Minute, RetryMax: time.Hour})
	b := waitState(t, j, id, 1, journal.StateRetrying)
	if ahead := b.NextAttempt.Sub(clock.Now()); ahead <= 0 || ahead > time.Hour {
		t.Fatalf("next attempt %v ahead, want within the backoff", ahead)
	}
	f.setData("b@example.com", nil)
	eventually(t, "next attempt known", func() bool { return !r.Progress()[0].NextAttempt.IsZero() })

	// The clock steps back a day: the stored next attempt is now a day and a
	// minute ahead.
	clock.Add(-24 * time.Hour)
	r.Wake("mbx")
	b = waitState(t, j, id, 1, journal.StateDelivered)
	if b.Attempts != 2 {
		t.Errorf("attempts %d, want 2", b.Attempts)
	}
	if a, bb := f.count("a@example.com"), f.count("b@example.com"); a != 1 || bb != 1 {
		t.Errorf("delivered a %d, b %d times; want 1, 1", a, bb)
	}
}

func TestWaiting(t *testing.T) {
	r := &Replayer{opts: Options{RetryMin: 30 * time.Second, RetryMax: 30 * time.Minute}}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		ahead time.Duration
		want  bool
	}{
		{-time.Hour, false},                      // overdue
		{0, false},                               // due now
		{time.Second, true},                      // a backoff running
		{37*time.Minute + 29*time.Second, true},  // the longest backoff: RetryMax + 25 %
		{37*time.Minute + 31*time.Second, false}, // longer than any backoff: the clock stepped back
		{24 * time.Hour, false},
	} {
		if got := r.waiting(now.Add(c.ahead), now); got != c.want {
			t.Errorf("next attempt %v ahead: waiting %t, want %t", c.ahead, got, c.want)
		}
	}
}

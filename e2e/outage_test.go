package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The outage tests run two mailbox servers: the Dovecot of DefaultDomain
// (PrimaryServer, the one that fails) and a second one (SecondServer) that
// stays up, with mail to either or both.
const secondDomain = "second.test"

var (
	usersA = []string{"alice", "bob", "carol"}
	usersB = []string{"dave", "erin"}
)

// outageEnv starts Postfix, two Dovecots and Lifeline with health checks on
// both, an admin token, and the given outage settings.
func outageEnv(t *testing.T, oo OutageOptions) *Env {
	t.Helper()
	env := Start(t, Options{
		Milter:       true,
		Users:        usersA,
		SecondDomain: secondDomain,
		SecondUsers:  usersB,
		// Over a unix socket the milter asks Postfix for no replies before
		// end of message (milter/server.go): custody (DELRCPT, DISCARD) and
		// the SIGKILLed restarts run on that path here, the TCP path in the
		// other tests.
		Lifeline: LifelineOptions{Outage: &oo, MilterUnix: true},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lifeline config:\n%s", tail(env.Lifeline.ConfigPath, 8192))
		}
	})
	return env
}

// sendRecord is one message the sender got a 250 for.
type sendRecord struct {
	id      string
	start   time.Time // before the connection was opened
	queueID string
	primary int // recipients in the primary server's domain
}

// outageSender sends uniquely identified messages with recipients on one
// server, the other, or both, and keeps what each send got.
type outageSender struct {
	env    *Env
	ledger *Ledger
	n      atomic.Int64

	mu   sync.Mutex
	sent []sendRecord
	errs []string
}

func newOutageSender(env *Env) *outageSender {
	return &outageSender{env: env, ledger: NewLedger()}
}

// recipients cycles through the mixes the issue asks for: A only, A and B,
// B only, and several of each.
func (s *outageSender) recipients(i int) []string {
	a := func(u string) string { return qualify(u, s.env.Domain) }
	b := func(u string) string { return qualify(u, secondDomain) }
	switch i % 5 {
	case 0:
		return []string{a(usersA[i%len(usersA)])}
	case 1:
		return []string{a(usersA[(i+1)%len(usersA)]), b(usersB[i%len(usersB)])}
	case 2:
		return []string{b(usersB[(i+1)%len(usersB)])}
	case 3:
		return []string{a("alice"), a("bob"), a("carol"), b("dave"), b("erin")}
	default:
		return []string{a(usersA[(i+2)%len(usersA)]), a(usersA[i%len(usersA)] + "+detail")}
	}
}

// boxesOf maps envelope recipients to the mailboxes they reach (the
// +detail of a recipient is stripped by Dovecot into the same mailbox; two
// recipients of one mailbox would make two copies, so the mix avoids that).
func boxesOf(to []string) []string {
	var out []string
	for _, r := range to {
		local, dom, _ := strings.Cut(r, "@")
		local, _, _ = strings.Cut(local, "+")
		out = append(out, local+"@"+dom)
	}
	return out
}

func (s *outageSender) sendOne(ctx context.Context) {
	i := int(s.n.Add(1))
	id := s.ledger.NewID()
	to := s.recipients(i)
	// Message-ID and the test id are the same, so the mailbox counts are
	// by Message-ID as much as by X-Lifeline-Test-Id.
	data := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\nFrom: sender@example.net\nTo: %s\nSubject: outage test %d\n\nmessage %s\n",
		id, strings.Join(to, ", "), i, id)
	start := time.Now()
	res, err := Send(ctx, s.env.Postfix.SMTPAddr, Mail{From: "sender@example.net", To: to, Data: WithTestID(id, []byte(data))})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("%s at %s: %v", id, start.Format("15:04:05.000"), err))
		return
	}
	s.ledger.Expect(id, boxesOf(to)...)
	primary := 0
	for _, r := range to {
		if strings.HasSuffix(r, "@"+s.env.Domain) {
			primary++
		}
	}
	s.sent = append(s.sent, sendRecord{id: id, start: start, queueID: res.QueueID, primary: primary})
}

// sendN sends count messages over workers concurrent connections.
func (s *outageSender) sendN(ctx context.Context, workers, count int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(count) && ctx.Err() == nil {
				s.sendOne(ctx)
			}
		}()
	}
	wg.Wait()
}

// sendUntil sends over workers connections until stop is closed; it returns
// a channel closed when the last send has returned.
func (s *outageSender) sendUntil(ctx context.Context, workers int, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				select {
				case <-stop:
					return
				default:
				}
				s.sendOne(ctx)
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// primaryAfter counts the primary-domain recipients of the messages sent
// after `after` whose start keep accepts.
func (s *outageSender) primaryAfter(after time.Time, keep func(time.Time) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.sent {
		if r.start.After(after) && keep(r.start) {
			n += r.primary
		}
	}
	return n
}

func (s *outageSender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// failIfRefused fails the test if any message did not get its 250.
func (s *outageSender) failIfRefused(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		t.Fatalf("%d of %d messages were not accepted with 250 (senders must see no 4xx during an outage):\n%s",
			len(s.errs), len(s.errs)+len(s.sent), strings.Join(firstN(s.errs, 20), "\n"))
	}
}

// queuedCustody returns, from Postfix's queue, the recipients of domain
// whose message was sent after `after` (when the outage was already
// declared): Lifeline holds those in custody, so Postfix must not; and the
// number of queue entries with a recipient in domain at all (mail Postfix
// took before the outage was declared, which it retries itself).
func (s *outageSender) queuedCustody(ctx context.Context, domain string, after time.Time, excused func(time.Time) bool) (bad []string, mta int, err error) {
	q, err := s.env.Postfix.Queue(ctx)
	if err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	byQueueID := map[string]sendRecord{}
	for _, r := range s.sent {
		byQueueID[r.queueID] = r
	}
	s.mu.Unlock()
	for _, e := range q {
		inDomain := false
		for _, r := range e.Recipients {
			if !strings.HasSuffix(strings.ToLower(r.Address), "@"+domain) {
				continue
			}
			inDomain = true
			rec, ok := byQueueID[e.QueueID]
			if ok && rec.start.After(after) && !excused(rec.start) {
				bad = append(bad, fmt.Sprintf("%s %s (%s, sent %s): %s [%s]", e.QueueName, e.QueueID, rec.id, rec.start.Format("15:04:05.000"), r.Address, r.DelayReason))
			}
		}
		if inDomain {
			mta++
		}
	}
	return bad, mta, nil
}

// postfixMaybeResent returns the queue ids for which Postfix's LMTP client
// lost the reply to the end of DATA and will deliver again ("message may be
// sent more than once", RFC 5321 §6.1's duplicate window): a mailbox server
// stopped mid-transaction can have saved the message already.
func postfixMaybeResent(logPath string) (map[string]bool, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, fmt.Errorf("reading Postfix's log: %w", err)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "may be sent more than once") {
			continue
		}
		// "... postfix/lmtp[123]: 4F1A2B3C4D: to=<...>, ..."
		_, rest, ok := strings.Cut(line, "]: ")
		if !ok {
			continue
		}
		if id, _, ok := strings.Cut(rest, ":"); ok {
			ids[id] = true
		}
	}
	return ids, nil
}

// checkJournal stops Lifeline and runs `lifeline journal verify`.
func checkJournal(t *testing.T, env *Env) {
	t.Helper()
	if page, err := env.Lifeline.Metrics(); err == nil {
		for _, m := range []string{"lifeline_outage_transitions_total", "lifeline_replay_recipients_total", "lifeline_panics_total"} {
			n, ok := MetricSum(page, m)
			t.Logf("metric %s = %v (exported: %t)", m, n, ok)
		}
		if n, ok := MetricSum(page, "lifeline_panics_total"); ok && n != 0 {
			t.Errorf("lifeline_panics_total = %v, want 0", n)
		}
	}
	if err := env.Lifeline.Stop(); err != nil {
		t.Errorf("lifeline serve did not stop cleanly: %v", err)
	}
	if out, err := env.Lifeline.Verify(context.Background()); err != nil {
		t.Errorf("lifeline journal verify: %v", err)
	} else {
		t.Logf("lifeline journal verify:\n%s", out)
	}
}

// TestOutageCustodyReplay is the main proof: Dovecot A stops while
// mail keeps coming (to A, to B, to both); Lifeline declares the outage
// within interval × fail_after, takes custody of A's recipients (Postfix
// keeps none of them), every sender gets 250; Dovecot comes back, the
// outage ends, the custody backlog is replayed, and every mailbox holds
// every message exactly once.
func TestOutageCustodyReplay(t *testing.T) {
	requireE2E(t)
	testOutage(t, false)
}

// TestOutageCrashes is the same with `lifeline serve` killed with SIGKILL
// twice while it holds mail in custody and once during the replay: nothing
// may be missing; duplicates (the in-flight messages at most) are reported.
func TestOutageCrashes(t *testing.T) {
	requireE2E(t)
	testOutage(t, true)
}

func testOutage(t *testing.T, crashes bool) {
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 3, ProbeTimeout: "1s"}
	if crashes {
		// Slow enough that the replay of a few hundred messages takes
		// seconds, so that a kill lands in the middle of it.
		oo.Replay.Rate = 50
	}
	env := outageEnv(t, oo)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := env.Lifeline
	s := newOutageSender(env)

	// Normal flow: both servers up, no outage.
	for _, srv := range []string{PrimaryServer, SecondServer} {
		if _, _, err := l.WaitOutage(ctx, srv, false, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s.sendN(ctx, 4, 50)
	s.failIfRefused(t)
	env.WaitDelivered(t, s.ledger, time.Minute)
	if t.Failed() {
		t.FailNow()
	}

	// Dovecot A stops while four clients keep sending.
	stop := make(chan struct{})
	sending := s.sendUntil(ctx, 4, stop)
	before := s.count()
	// When Dovecot's LMTP port stops taking connections: the probes cannot
	// fail before that, so detection is measured from it.
	closed := make(chan time.Time, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond) // the measurement's resolution
		defer tick.Stop()
		for ctx.Err() == nil {
			c, err := net.DialTimeout("tcp", env.Dovecot.LMTPAddr, 100*time.Millisecond)
			if err != nil {
				closed <- time.Now()
				return
			}
			c.Close()
			<-tick.C
		}
	}()
	stopAt := time.Now()
	if err := env.Dovecot.Stop(); err != nil {
		t.Fatalf("stopping dovecot: %v", err)
	}
	stoppedIn := time.Since(stopAt)
	var portClosed time.Time
	select {
	case portClosed = <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Dovecot's LMTP port still accepts connections after it stopped")
	}
	st, seen, err := l.WaitOutage(ctx, PrimaryServer, true, oo.DetectionTime()+30*time.Second)
	if err != nil {
		close(stop)
		<-sending
		t.Fatal(err)
	}
	declared := seen
	if !st.Since.IsZero() && st.Since.After(stopAt) && st.Since.Before(seen) {
		declared = st.Since.Time
	}
	detection := declared.Sub(portClosed)
	// Besides interval × fail_after: one interval (the port may close just
	// after a probe round) and one probe timeout (a probe that connected
	// just before the port closed waits for a server process that is
	// exiting), and 2 s for a busy machine (2 cores running Postfix,
	// Dovecot, Lifeline and the senders: a dial timed out there once).
	probeTimeout, err := time.ParseDuration(oo.withDefaults().ProbeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	limit := oo.DetectionTime() + oo.DetectionTime()/time.Duration(oo.FailAfter) + probeTimeout + 2*time.Second
	t.Logf("DETECTION: outage declared %v after Dovecot's LMTP port closed (configured interval %s × fail_after %d = %v; the port closed %v after SIGTERM, Dovecot exited after %v; status seen %v after the port closed); status: %s",
		detection.Round(time.Millisecond), oo.Interval, oo.FailAfter, oo.DetectionTime(), portClosed.Sub(stopAt).Round(time.Millisecond),
		stoppedIn.Round(time.Millisecond), seen.Sub(portClosed).Round(time.Millisecond), st)
	if detection > limit {
		t.Errorf("outage declared %v after the port closed; want at most interval × (fail_after + 1) + probe timeout + 2 s = %v", detection, limit)
	}
	if st.Cause != "" && st.Cause != "probe" {
		t.Errorf("outage cause %q, want probe", st.Cause)
	}
	if s2, err := l.Status(ctx); err == nil && s2[SecondServer].Outage {
		t.Errorf("the second server is in outage too: %s", s2[SecondServer])
	}
	close(stop)
	<-sending
	t.Logf("%d messages sent between the stop and the detection", s.count()-before)

	// Custody: 400 more messages, all after the outage was declared.
	const custodyMsgs = 400
	excused := func(time.Time) bool { return false }
	var downs [][2]time.Time // SIGKILL → healthy again
	if !crashes {
		s.sendN(ctx, 4, custodyMsgs)
	} else {
		done := make(chan struct{})
		go func() { defer close(done); s.sendN(ctx, 4, custodyMsgs) }()
		// Mail sent while lifeline is down, or in flight when it dies, is
		// accepted by Postfix without it (milter default_action = accept);
		// the rest of the custody period must leave nothing with Postfix.
		excused = func(start time.Time) bool {
			for _, d := range downs {
				if !start.Before(d[0].Add(-2*time.Second)) && !start.After(d[1]) {
					return true
				}
			}
			return false
		}
		base := s.count()
		for k, at := range []int{120, 260} {
			if err := Poll(ctx, 2*time.Minute, func() (bool, error) { return s.count()-base >= at, nil }); err != nil {
				t.Fatalf("sender stalled: %v", err)
			}
			if err := l.Kill(); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			l.Restart(t)
			downs = append(downs, [2]time.Time{killed, time.Now()})
			t.Logf("SIGKILL %d during custody after %d custody sends; serve healthy again in %v", k+1, s.count()-base, time.Since(killed).Round(time.Millisecond))
		}
		<-done
		if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 30*time.Second); err != nil {
			t.Fatalf("after the restarts: %v", err)
		}
	}
	s.failIfRefused(t)
	t.Logf("sent %d messages in all, every one accepted with 250", s.count())

	bad, mta, err := s.queuedCustody(ctx, env.Domain, seen, excused)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Postfix queue: %d messages with a recipient in %s (taken before the outage was declared, or while lifeline was down: Postfix retries them)", mta, env.Domain)
	if len(bad) > 0 {
		t.Errorf("Postfix's queue holds %d recipients of %s that arrived after the outage was declared (custody recipients; lifeline down %v):\n%s",
			len(bad), env.Domain, downs, strings.Join(firstN(bad, 20), "\n"))
	}
	// Every primary-domain recipient sent after the detection is in custody,
	// except those of messages sent near a SIGKILL (Postfix may have them).
	wantHeld := s.primaryAfter(seen, func(start time.Time) bool { return !excused(start) })
	countFrom := time.Now()
	held, err := l.WaitStatus(ctx, PrimaryServer, backlogRefresh, func(s ServerStatus) bool { return s.Backlog >= int64(wantHeld) })
	backlog := held.Backlog
	t.Logf("custody backlog of %s: %d, seen %v after the last send (status %s)", PrimaryServer, backlog, time.Since(countFrom).Round(time.Millisecond), held)
	if err != nil {
		t.Errorf("custody backlog after %d messages during the outage (want at least %d recipients): %v", custodyMsgs, wantHeld, err)
	}

	// Recovery.
	upAt := time.Now()
	env.Dovecot.Restart(t)
	readyIn := time.Since(upAt)
	if err := env.Postfix.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, seen, err = l.WaitOutage(ctx, PrimaryServer, false, oo.RecoveryTime()+30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outage ended %v after Dovecot was started (it greeted after %v; interval × recover_after = %v); status %s", seen.Sub(upAt).Round(time.Millisecond), readyIn.Round(time.Millisecond), oo.RecoveryTime(), st)
	if crashes {
		// The replay progress counts live; the backlog may be recounted
		// only now and then.
		st, err := l.WaitStatus(ctx, PrimaryServer, time.Minute, func(s ServerStatus) bool {
			return s.Replay.Delivered >= backlog/4 || !s.Replay.Running
		})
		if err != nil {
			t.Fatalf("replay did not get going: %v", err)
		}
		if !st.Replay.Running {
			t.Errorf("the replay ended before it could be killed; lower [replay] rate")
		}
		t.Logf("killing during replay after %d of %d recipients delivered", st.Replay.Delivered, backlog)
		if err := l.Kill(); err != nil {
			t.Fatal(err)
		}
		l.Restart(t)
		t.Logf("SIGKILL 3 during replay")
	}
	if err := env.Postfix.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Drained is judged by the mailboxes: the status's backlog is a count
	// that may lag (it reads 0 after a restart until its first recount).
	r, err := WaitDeliveredIn(ctx, env.Postfix, env.Dovecots(), s.ledger, 2*time.Minute)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	t.Logf("custody (%d recipients) and Postfix's deferred mail all delivered %v after the outage ended", backlog, time.Since(seen).Round(time.Millisecond))
	if st, err := l.WaitBacklog(ctx, PrimaryServer, 0, backlogRefresh); err != nil {
		t.Errorf("everything is delivered, but: %v", err)
	} else if st.Replay.Failed > 0 {
		t.Errorf("replay failed recipients: %s", st)
	}
	dups := 0
	for _, ids := range r.Duplicates {
		dups += len(ids)
	}
	t.Logf("delivery accounting over %d messages: %s", len(s.ledger.IDs()), r)
	t.Logf("duplicates: %d (goal 0)", dups)
	if dups > 0 {
		// Where they come from: a message in flight when lifeline was killed
		// during custody (journaled, but Postfix took it too), or an LMTP
		// transaction in flight when it was killed during the replay.
		starts := map[string]time.Time{}
		s.mu.Lock()
		for _, rec := range s.sent {
			starts[rec.id] = rec.start
		}
		s.mu.Unlock()
		queueIDs := map[string]string{}
		s.mu.Lock()
		for _, rec := range s.sent {
			queueIDs[rec.id] = rec.queueID
		}
		s.mu.Unlock()
		resent, err := postfixMaybeResent(env.Postfix.LogPath)
		if err != nil {
			t.Error(err)
		}
		inKill, mta, other := 0, 0, 0
		for _, ids := range r.Duplicates {
			for _, id := range ids {
				switch {
				case resent[queueIDs[id]]:
					mta++
				case excused(starts[id]):
					inKill++
				default:
					other++
				}
			}
		}
		t.Logf("duplicates Postfix itself delivered twice (an LMTP transaction Dovecot completed as it was stopped; Postfix logged \"message may be sent more than once\" and retried; never in Lifeline's custody): %d", mta)
		t.Logf("duplicates sent within 2 s before a SIGKILL during custody, or while lifeline was down: %d; others (replay in flight at its SIGKILL): %d", inKill, other)
		if !crashes && other+inKill > 0 {
			t.Errorf("%d duplicates that are not Postfix's own retries", other+inKill)
		}
	}
	if len(r.Missing) > 0 || len(r.Unexpected) > 0 {
		t.Errorf("delivery accounting: %s", r)
	}
	checkJournal(t, env)
}

// TestManualOutage: `lifeline outage start` puts a healthy server in
// outage; mail to it is held (none reaches Dovecot, none stays in Postfix),
// good probes do not end it, a restart keeps it; `lifeline outage end`
// ends it and the custody mail is replayed once.
func TestManualOutage(t *testing.T) {
	requireE2E(t)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := outageEnv(t, oo)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := env.Lifeline
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.OutageStart(ctx, PrimaryServer, "e2e manual outage"); err != nil {
		t.Fatal(err)
	}
	st, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("manual outage: %s", st)
	if st.Cause != "" && st.Cause != "operator" {
		t.Errorf("cause %q, want operator", st.Cause)
	}

	s := newOutageSender(env)
	s.sendN(ctx, 4, 40)
	s.failIfRefused(t)
	assertHeld(ctx, t, env, s)

	// Probes succeed all along: a manual outage is not ended by them.
	// Watch for several recovery periods.
	watch := 5 * oo.RecoveryTime()
	var ended error
	_ = Poll(ctx, watch, func() (bool, error) {
		st, err := l.Status(ctx)
		if err != nil {
			ended = err
			return true, err
		}
		if !st[PrimaryServer].Outage {
			ended = fmt.Errorf("manual outage ended without an operator: %s", st[PrimaryServer])
			return true, ended
		}
		return false, nil // keep watching until the deadline
	})
	if ended != nil {
		t.Fatal(ended)
	}
	// It survives a restart.
	l.Restart(t)
	if st, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatalf("after a restart: %v", err)
	} else {
		t.Logf("after restart: %s", st)
	}

	if err := l.OutageEnd(ctx, PrimaryServer); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, false, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	env.WaitDelivered(t, s.ledger, time.Minute)
	checkJournal(t, env)
}

// assertHeld checks, once Postfix has delivered what it kept, that no
// message s sent reached a mailbox of the primary domain and that the
// custody backlog counts their recipients there.
func assertHeld(ctx context.Context, t *testing.T, env *Env, s *outageSender) {
	t.Helper()
	if err := env.Postfix.WaitQueueEmpty(ctx, time.Minute); err != nil {
		t.Fatalf("custody recipients must not stay in Postfix's queue: %v", err)
	}
	md := NewMaildirs(env.Dovecot, env.Dovecot2)
	wantA := 0
	for _, box := range s.ledger.Mailboxes() {
		if !strings.HasSuffix(box, "@"+env.Domain) {
			continue
		}
		wantA += len(s.ledger.Expected(box))
		got, err := md.Messages(box)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for id := range got {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if len(s.ledger.Expected(box)) > 0 && contains(s.ledger.Expected(box), id) {
				t.Errorf("%s reached %s during the outage", id, box)
			}
		}
	}
	// The status's backlog may be a count refreshed now and then during an
	// outage (replay's BacklogRefresh); give it that long.
	start := time.Now()
	st, err := env.Lifeline.WaitStatus(ctx, PrimaryServer, backlogRefresh, func(s ServerStatus) bool { return s.Backlog >= int64(wantA) })
	t.Logf("held: %d recipients in %s; status after %v: %s", wantA, env.Domain, time.Since(start).Round(time.Millisecond), st)
	if err != nil {
		t.Errorf("custody backlog: want at least %d recipients: %v", wantA, err)
	}
}

// backlogRefresh is how long the tests wait for `lifeline status` to count
// mail taken into custody (replay recounts a paused server's backlog every
// 30 s by default).
const backlogRefresh = 45 * time.Second

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestMaintenanceWindow: a [[window]] a few seconds ahead puts the server in
// outage at its start (cause window) and out of it at its end; mail sent
// inside it is held and then replayed once.
func TestMaintenanceWindow(t *testing.T) {
	requireE2E(t)
	start := time.Now().Add(8 * time.Second).Truncate(time.Second)
	end := start.Add(12 * time.Second)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2,
		Windows: []Window{{Server: PrimaryServer, Start: start, End: end, Reason: "e2e maintenance"}}}
	env := outageEnv(t, oo)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := env.Lifeline
	if time.Until(start) < time.Second {
		t.Fatalf("the harness took too long to start: the window begins in %v", time.Until(start))
	}
	if st, err := l.Status(ctx); err != nil {
		t.Fatal(err)
	} else if st[PrimaryServer].Outage {
		t.Fatalf("in outage before the window: %s", st[PrimaryServer])
	}
	st, seen, err := l.WaitOutage(ctx, PrimaryServer, true, time.Until(end))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("window outage seen %v after its start: %s", seen.Sub(start).Round(time.Millisecond), st)
	if seen.Before(start) {
		t.Errorf("outage began %v before the window", start.Sub(seen))
	}
	if st.Cause != "" && st.Cause != "window" {
		t.Errorf("cause %q, want window", st.Cause)
	}
	s := newOutageSender(env)
	s.sendN(ctx, 4, 20)
	s.failIfRefused(t)
	if time.Now().After(end) {
		t.Fatalf("sending took past the window's end")
	}
	assertHeld(ctx, t, env, s)
	if time.Now().After(end) {
		t.Fatalf("checking took past the window's end")
	}
	st, seen, err = l.WaitOutage(ctx, PrimaryServer, false, time.Until(end)+30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("window outage ended %v after its end: %s", seen.Sub(end).Round(time.Millisecond), st)
	if seen.Before(end) {
		t.Errorf("outage ended %v before the window's end", end.Sub(seen))
	}
	if _, err := l.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	env.WaitDelivered(t, s.ledger, time.Minute)
	checkJournal(t, env)
}

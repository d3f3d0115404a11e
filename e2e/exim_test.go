package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// eximEnv is real Exim (contrib/exim/lifeline.conf) in front of real
// Dovecot, with `lifeline serve` as journal, custody and policy service.
type eximSetup struct {
	dovecot  *Dovecot
	lifeline *Lifeline
	exim     *Exim
	oo       OutageOptions
	opts     EximOptions // what StartExim got, for a second instance
	ledger   *Ledger
	md       *Maildirs
	n        int
	// phase → test ids sent in it
	sent map[string][]string
	// test id → mailboxes
	boxes map[string][]string
}

var eximUsers = []string{"alice", "bob", "carol"}

func startEximSetup(t *testing.T) *eximSetup {
	t.Helper()
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 3, ProbeTimeout: "1s"}
	d := StartDovecot(t, DovecotOptions{Users: append(append([]string(nil), eximUsers...), CanaryUser)})
	journal := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	custody := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	policy := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	l := StartLifeline(t, LifelineOptions{
		Domains:  []string{d.Domain},
		LMTPAddr: d.LMTPAddr,
		Servers: []LifelineServer{{
			Name: PrimaryServer, Domains: []string{d.Domain}, LMTPAddr: d.LMTPAddr,
			Canary: qualify(CanaryUser, d.Domain),
		}},
		Outage: &oo,
		ExtraTOML: fmt.Sprintf("[ingest]\njournal_listen = %q\ncustody_listen = %q\n\n[policy]\nlisten = %q\n",
			"tcp:"+journal, "tcp:"+custody, "tcp:"+policy),
	})
	for _, addr := range []string{journal, custody} {
		if err := WaitGreeting(context.Background(), addr, "220 ", 30*time.Second); err != nil {
			t.Fatalf("lifeline's LMTP listener: %v", err)
		}
	}
	opts := EximOptions{
		Domains:     []string{d.Domain},
		DovecotLMTP: d.LMTPAddr,
		JournalAddr: journal,
		CustodyAddr: custody,
		PolicyAddr:  policy,
	}
	x := StartExim(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exim config:\n%s", tail(x.ConfigPath, 4096))
			t.Logf("lifeline config:\n%s", tail(l.ConfigPath, 8192))
		}
	})
	return &eximSetup{
		dovecot: d, lifeline: l, exim: x, oo: oo, opts: opts,
		ledger: NewLedger(), md: NewMaildirs(d),
		sent: map[string][]string{}, boxes: map[string][]string{},
	}
}

// recipients cycles through one, two and three recipients.
func (s *eximSetup) recipients(i int) []string {
	var to []string
	for k := 0; k <= i%len(eximUsers); k++ {
		to = append(to, qualify(eximUsers[(i+k)%len(eximUsers)], s.dovecot.Domain))
	}
	return to
}

// send sends count messages into x, each identified by Message-ID and test
// id, and records them under phase. Every one must get its 250.
func (s *eximSetup) send(t *testing.T, x *Exim, phase string, count int) {
	t.Helper()
	ctx := context.Background()
	for range count {
		s.n++
		id := s.ledger.NewID()
		to := s.recipients(s.n)
		data := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\nFrom: sender@example.net\nTo: %s\nSubject: exim %s %d\n\nmessage %s\n",
			id, strings.Join(to, ", "), phase, s.n, id)
		if _, err := Send(ctx, x.SMTPAddr, Mail{From: "sender@example.net", To: to, Data: WithTestID(id, []byte(data))}); err != nil {
			t.Fatalf("%s: message %d not accepted by exim: %v", phase, s.n, err)
		}
		s.ledger.Expect(id, to...)
		s.sent[phase] = append(s.sent[phase], id)
		s.boxes[id] = to
	}
}

// waitDelivered polls until every message of the ledger is in Dovecot (and,
// with queueEmpty, x's queue is empty), then requires exactly once.
func (s *eximSetup) waitDelivered(t *testing.T, x *Exim, queueEmpty bool, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	var last *Report
	err := Poll(ctx, timeout, func() (bool, error) {
		r, err := s.md.Count(s.ledger)
		if err != nil {
			return false, err
		}
		last = r
		if len(r.Missing) > 0 {
			return false, errNotYet
		}
		if queueEmpty {
			n, err := x.QueueCount(ctx)
			if err != nil || n > 0 {
				return false, fmt.Errorf("exim queue: %d messages, %v", n, err)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("not delivered: %v; %v\nexim queue:\n%s", err, last, x.Queue(ctx))
	}
	r, err := s.md.Count(s.ledger, s.dovecot.Users()...)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("delivery accounting: %s", r)
	}
}

// ingest returns lifeline_ingest_recipients_total by listener and result.
func (s *eximSetup) ingest(t *testing.T) map[string]float64 {
	t.Helper()
	page, err := s.lifeline.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, "lifeline_ingest_recipients_total{") {
			continue
		}
		labels, val, _ := strings.Cut(strings.TrimPrefix(line, "lifeline_ingest_recipients_total"), " ")
		var f float64
		if _, err := fmt.Sscan(val, &f); err == nil {
			out[labels] = f
		}
	}
	return out
}

func (s *eximSetup) ingestSum(m map[string]float64, listener, result string) float64 {
	n := 0.0
	for labels, v := range m {
		if strings.Contains(labels, `listener="`+listener+`"`) && strings.Contains(labels, `result="`+result+`"`) {
			n += v
		}
	}
	return n
}

func (s *eximSetup) noProblems(t *testing.T, x *Exim, what string) {
	t.Helper()
	lg, err := x.Log()
	if err != nil {
		t.Fatal(err)
	}
	if p := lg.Problems(); len(p) > 0 {
		t.Errorf("%s: exim bounced, froze or panicked:\n%s", what, strings.Join(firstN(p, 20), "\n"))
	}
	// Lifeline never refuses a copy for good here (no message is too large).
	if len(lg.CopyFailed) > 0 {
		t.Errorf("%s: journal copies failed for good:\n%s", what, strings.Join(firstN(lg.CopyFailed, 20), "\n"))
	}
}

func (s *eximSetup) rcptCount(phase string) int {
	n := 0
	for _, id := range s.sent[phase] {
		n += len(s.boxes[id])
	}
	return n
}

// TestEximLifeline is issue 6's proof with real Exim: the contrib
// configuration journals every message (state mta) while Dovecot is up;
// with Dovecot stopped, Lifeline declares the outage and Exim's custody
// router hands new mail to Lifeline's custody listener, nothing bounced;
// with Dovecot back the custody is replayed and every recipient has every
// message exactly once (by Message-ID); with Lifeline stopped mail still
// reaches Dovecot at once, the journal copies wait in Exim's queue and are
// delivered when Lifeline is back (or given up after LIFELINE_COPY_MAX_AGE,
// without a second delivery to Dovecot).
func TestEximLifeline(t *testing.T) {
	requireE2E(t)
	RequireExim(t)
	began := time.Now()
	s := startEximSetup(t)
	ctx := context.Background()
	t.Logf("setup: %v", time.Since(began).Round(time.Millisecond))

	// (1) Normal flow: delivered to Dovecot and journaled by the copy.
	const n = 30
	phaseStart := time.Now()
	s.send(t, s.exim, "normal", n)
	s.waitDelivered(t, s.exim, true, time.Minute)
	t.Logf("normal: %d messages (%d recipients) delivered and copied in %v", n, s.rcptCount("normal"), time.Since(phaseStart).Round(time.Millisecond))
	m := s.ingest(t)
	if got, want := s.ingestSum(m, "journal", "stored"), float64(s.rcptCount("normal")); got != want {
		t.Errorf("normal: journal listener stored %v recipients, want %v (%v)", got, want, m)
	}
	if got := s.ingestSum(m, "custody", "custody"); got != 0 {
		t.Errorf("normal: custody listener took %v recipients while Dovecot was up", got)
	}
	s.noProblems(t, s.exim, "normal")

	// (2) Dovecot stops. Mail sent before the probes declare the outage is
	// copied and deferred by Exim (Dovecot refuses connections); mail sent
	// after goes to custody.
	phaseStart = time.Now()
	if err := s.dovecot.Stop(); err != nil {
		t.Fatal(err)
	}
	s.send(t, s.exim, "window", 3)
	if _, _, err := s.lifeline.WaitOutage(ctx, PrimaryServer, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("outage declared %v after Dovecot stopped", time.Since(phaseStart).Round(time.Millisecond))
	s.send(t, s.exim, "outage", n)
	want := int64(s.rcptCount("outage"))
	st, err := s.lifeline.WaitStatus(ctx, PrimaryServer, time.Minute, func(st ServerStatus) bool { return st.Backlog >= want })
	if err != nil {
		t.Fatalf("custody backlog: %v\nexim queue:\n%s", err, s.exim.Queue(ctx))
	}
	t.Logf("outage: %d messages, custody backlog %d recipients", n, st.Backlog)
	m = s.ingest(t)
	if got := s.ingestSum(m, "custody", "custody"); got < float64(want) {
		t.Errorf("outage: custody listener took %v recipients, want at least %d (%v)", got, want, m)
	}
	// The outage messages must all have left Exim's queue: only the window
	// messages (deferred before the outage was declared) may remain.
	if q, err := s.exim.QueueCount(ctx); err != nil {
		t.Fatal(err)
	} else if q > len(s.sent["window"]) {
		t.Errorf("outage: exim holds %d messages; only the %d sent before the outage was declared may wait\n%s", q, len(s.sent["window"]), s.exim.Queue(ctx))
	}
	s.noProblems(t, s.exim, "outage")

	// (3) Dovecot back: the outage ends, custody is replayed, Exim's
	// deferred window messages go to Dovecot; exactly once each.
	phaseStart = time.Now()
	s.dovecot.Restart(t)
	if _, _, err := s.lifeline.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.lifeline.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.waitDelivered(t, s.exim, true, time.Minute)
	t.Logf("recovery: replayed and delivered in %v", time.Since(phaseStart).Round(time.Millisecond))
	// A window message with one recipient whose copy was journaled before
	// the outage was declared is refused by the custody listener (4xx: it
	// holds the MTA's own copy) and delivered by Exim after the outage.
	// Whether one arises depends on when the probes declare the outage.
	if d, err := s.exim.CountLog(" == ", "R=lifeline_custody"); err == nil {
		t.Logf("custody deferrals in exim's log (window messages Exim kept): %d", d)
	}
	s.noProblems(t, s.exim, "recovery")

	// (4) Lifeline stopped: mail reaches Dovecot at once; the copies wait.
	// A second Exim with LIFELINE_COPY_MAX_AGE = 2s shows the bound: its
	// copies are given up, the messages leave its queue, nothing is
	// delivered twice.
	phaseStart = time.Now()
	bounded := s.opts
	bounded.CopyMaxAge = 2 * time.Second
	x2 := StartExim(t, bounded)
	if err := s.lifeline.Stop(); err != nil {
		t.Fatal(err)
	}
	s.send(t, s.exim, "down", n)
	s.send(t, x2, "bounded", 5)
	s.waitDelivered(t, s.exim, false, time.Minute)
	t.Logf("lifeline down: %d messages delivered to Dovecot in %v", n, time.Since(phaseStart).Round(time.Millisecond))
	if q, err := s.exim.QueueCount(ctx); err != nil {
		t.Fatal(err)
	} else if q != n {
		t.Errorf("lifeline down: exim holds %d messages, want the %d whose journal copy waits", q, n)
	}
	if err := x2.WaitQueueEmpty(ctx, 30*time.Second); err != nil {
		t.Fatalf("copies past LIFELINE_COPY_MAX_AGE: %v", err)
	}
	s.noProblems(t, x2, "bounded copy")
	s.waitDelivered(t, x2, true, 10*time.Second)

	// Lifeline back: the waiting copies are journaled, Dovecot gets nothing
	// more (the unseen copy's retry does not redeliver the primary).
	phaseStart = time.Now()
	s.lifeline.Restart(t)
	if err := s.exim.WaitQueueEmpty(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("lifeline back: queued copies delivered in %v", time.Since(phaseStart).Round(time.Millisecond))
	m = s.ingest(t)
	if got, want := s.ingestSum(m, "journal", "stored"), float64(s.rcptCount("down")); got != want {
		t.Errorf("lifeline back: journal listener stored %v recipients, want the %v waiting copies (%v)", got, want, m)
	}
	s.waitDelivered(t, s.exim, true, 10*time.Second)
	s.noProblems(t, s.exim, "lifeline back")

	// The journal holds every message that passed Lifeline (copy or custody)
	// in each of its mailboxes, once; none of the given-up copies.
	page, err := s.lifeline.Metrics()
	if err == nil {
		if v, ok := MetricSum(page, "lifeline_panics_total"); ok && v != 0 {
			t.Errorf("lifeline_panics_total = %v", v)
		}
	}
	if err := s.lifeline.Stop(); err != nil {
		t.Fatalf("lifeline serve did not stop cleanly: %v", err)
	}
	if out, err := s.lifeline.Verify(ctx); err != nil {
		t.Errorf("lifeline journal verify: %v", err)
	} else {
		t.Logf("lifeline journal verify:\n%s", out)
	}
	inJournal := map[string]map[string]int{} // mailbox → test id → copies
	for _, u := range eximUsers {
		box := qualify(u, s.dovecot.Domain)
		files, err := s.lifeline.ExportEML(ctx, box, filepath.Join(t.TempDir(), u))
		if err != nil {
			t.Fatal(err)
		}
		inJournal[box] = map[string]int{}
		for _, f := range files {
			inJournal[box][TestIDOfBytes(mustRead(t, f))]++
		}
	}
	var problems []string
	for _, phase := range []string{"normal", "window", "outage", "down", "bounded"} {
		for _, id := range s.sent[phase] {
			for _, box := range s.boxes[id] {
				got := inJournal[box][id]
				switch {
				case phase == "bounded" && got != 0:
					problems = append(problems, fmt.Sprintf("%s (%s) in %s's journal export: its copy was to be given up", id, phase, box))
				case phase == "window" && got == 0:
					// Copied before the outage was declared and possibly
					// taken into custody as well (a message with several
					// recipients): at least once.
					problems = append(problems, fmt.Sprintf("%s (%s) missing from %s's journal export", id, phase, box))
				case phase != "bounded" && phase != "window" && got != 1:
					problems = append(problems, fmt.Sprintf("%s (%s) %d times in %s's journal export, want 1", id, phase, got, box))
				}
			}
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Errorf("journal: %d problems:\n%s", len(problems), strings.Join(firstN(problems, 30), "\n"))
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

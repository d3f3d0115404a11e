package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fault-injection suite (issue 8, part 2). Each TestFault* drives real
// Postfix → Lifeline → Dovecot with a stream of uniquely identified messages
// while one kind of fault strikes, then accounts for every message a sender
// got a 250 for: delivered to Dovecot exactly once (by Postfix, or from
// Lifeline's custody by the replay), none missing. The short form runs in
// `make test`; LIFELINE_FAULTS_LONG=1 runs the long form (more messages and
// faults); LIFELINE_FAULTS_SEED=N repeats a run's random fault moments.

func faultsLong() bool { return os.Getenv("LIFELINE_FAULTS_LONG") == "1" }

// pick returns short or long by the form being run.
func pick(short, long int) int {
	if faultsLong() {
		return long
	}
	return short
}

// faultPace paces each sender of the short form to 10 messages a second
// (CPU is shared with the rest of `make test`); the long form sends as fast
// as Postfix takes them.
func faultPace() time.Duration {
	if faultsLong() {
		return 0
	}
	return 100 * time.Millisecond
}

// faultChaos returns a Chaos with the seed of LIFELINE_FAULTS_SEED, else a
// fresh one; the seed is logged so that a failure can be repeated.
func faultChaos(t *testing.T, minGap, maxGap time.Duration) *Chaos {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LIFELINE_FAULTS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LIFELINE_FAULTS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("chaos seed %d (LIFELINE_FAULTS_SEED=%d repeats it), gaps %v–%v", seed, seed, minGap, maxGap)
	return NewChaos(seed, minGap, maxGap)
}

var faultUsers = []string{"alice", "bob", "carol"}

// faultRecipients cycles through one, two and three recipients.
func faultRecipients(domain string) func(i int) []string {
	a := func(u string) string { return qualify(u, domain) }
	return func(i int) []string {
		switch i % 4 {
		case 0:
			return []string{a("alice")}
		case 1:
			return []string{a("bob"), a("carol")}
		case 2:
			return []string{a("carol")}
		default:
			return []string{a("alice"), a("bob"), a("carol")}
		}
	}
}

// faultEnv starts Postfix, Dovecot and Lifeline with outage mode on (the
// admin API, probes, custody and replay).
func faultEnv(t *testing.T, oo OutageOptions, mod func(*Options)) *Env {
	t.Helper()
	opts := Options{Milter: true, Users: faultUsers, Lifeline: LifelineOptions{Outage: &oo}}
	if mod != nil {
		mod(&opts)
	}
	return Start(t, opts)
}

func waitNoOutage(ctx context.Context, t *testing.T, l *Lifeline) {
	t.Helper()
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// faultContext bounds a scenario: the short form must stay within the
// suite's few minutes; the long form gets far more.
func faultContext(t *testing.T) context.Context {
	d := 3 * time.Minute
	if faultsLong() {
		d = 20 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// killRec is one SIGKILL of `lifeline serve`: when, and when it was healthy
// again.
type killRec struct {
	mode        string
	at, healthy time.Time
}

// accounting says which duplicate deliveries are explained: excuse returns
// the reason for id's copies in box ("" = not explained).
type excuseFunc func(box, id string, copies, replayed int) string

// accountFaults flushes Postfix's queue, waits until every acknowledged
// message is delivered, and counts: missing and unexplained duplicates fail
// the test, as does a delivered message no sender got a 250 for unless the
// sender gave it up after an error (Postfix may have taken it as the
// connection broke: RFC 5321 §6.1's duplicate window, on the client side).
func accountFaults(ctx context.Context, t *testing.T, scenario string, env *Env, load *Load, ledger *Ledger, timeout time.Duration, excuse excuseFunc) FaultRow {
	t.Helper()
	if err := env.Postfix.Flush(ctx); err != nil {
		t.Error(err)
	}
	row := FaultRow{Scenario: scenario, Acked: load.Acked(), Tempfails: load.Tempfails(), Unacked: len(load.Unacknowledged())}
	r, err := WaitDeliveredIn(ctx, env.Postfix, env.Dovecots(), ledger, timeout)
	if err != nil {
		t.Errorf("e2e: %v", err)
		if r == nil {
			return row
		}
	}
	custody, err := ViaCustody(r)
	if err != nil {
		t.Fatal(err)
	}
	row.Expected, row.Delivered = r.Expected, r.Delivered
	for _, box := range ledger.Mailboxes() {
		for _, id := range ledger.Expected(box) {
			if custody[box][id] > 0 {
				row.ViaCustody++
			}
		}
	}
	reasons := map[string]int{}
	var unexplained []string
	for box, ids := range r.Duplicates {
		for _, id := range ids {
			row.Duplicates++
			copies := len(r.Files[box][id])
			why := ""
			if excuse != nil {
				why = excuse(box, id, copies, custody[box][id])
			}
			if why == "" {
				unexplained = append(unexplained, fmt.Sprintf("%s in %s: %d copies, %d replayed", id, box, copies, custody[box][id]))
				continue
			}
			row.Excused++
			reasons[why]++
		}
	}
	for why, n := range reasons {
		t.Logf("%s: %d excused duplicates: %s", scenario, n, why)
	}
	sort.Strings(unexplained)
	if len(unexplained) > 0 {
		// What Postfix logged about them, to tell whose retry it was.
		qid := map[string]string{}
		for _, a := range load.Acknowledged() {
			qid[a.ID] = a.QueueID
		}
		if b, err := os.ReadFile(env.Postfix.LogPath); err == nil {
			var lines []string
			for _, u := range firstN(unexplained, 5) {
				id, _, _ := strings.Cut(u, " ")
				for _, line := range strings.Split(string(b), "\n") {
					if q := qid[id]; q != "" && strings.Contains(line, q+":") {
						lines = append(lines, line)
					}
				}
			}
			t.Logf("Postfix's log about them:\n%s", strings.Join(lines, "\n"))
		}
		t.Errorf("%s: %d duplicate deliveries not explained by a fault:\n%s", scenario, len(unexplained), strings.Join(firstN(unexplained, 20), "\n"))
	}
	for _, ids := range r.Missing {
		row.Missing += len(ids)
	}
	if row.Missing > 0 {
		t.Errorf("%s: acknowledged messages missing: %s", scenario, r)
	}
	unacked := load.Unacknowledged()
	taken := 0
	for box, ids := range r.Unexpected {
		for _, id := range ids {
			if _, ok := unacked[id]; ok && id != "" {
				taken++
				continue
			}
			t.Errorf("%s: %q arrived in %s, but was never sent there", scenario, id, box)
		}
	}
	if taken > 0 {
		t.Logf("%s: %d deliveries of messages the sender got no 250 for (connection lost after DATA); not counted", scenario, taken)
	}
	return row
}

// postfixResentExcuse explains a duplicate Postfix delivered twice itself
// (its LMTP client lost Dovecot's reply and logged "may be sent more than
// once").
func postfixResentExcuse(t *testing.T, env *Env, load *Load) func(id string) string {
	t.Helper()
	resent, err := postfixMaybeResent(env.Postfix.LogPath)
	if err != nil {
		t.Error(err)
	}
	lost, err := postfixLostReply(env.Postfix.LogPath)
	if err != nil {
		t.Error(err)
	}
	qid := map[string]string{}
	for _, a := range load.Acknowledged() {
		qid[a.ID] = a.QueueID
	}
	return func(id string) string {
		switch {
		case resent[qid[id]]:
			return "Postfix delivered twice itself (it logged \"may be sent more than once\")"
		case lost[qid[id]]:
			return "Postfix delivered twice itself (deferred after the end of DATA, e.g. Dovecot's \"421 4.3.2 Shutting down\" after saving)"
		}
		return ""
	}
}

// postfixLostReply returns the queue ids Postfix's LMTP client deferred
// after the end of DATA: the connection lost while waiting for a
// recipient's final reply (RFC 2033 §4.2: one reply per recipient after
// DATA), or a 4xx in reply to it. A Dovecot being stopped saves the message,
// then answers "421 4.3.2 Shutting down" (seen in this suite), so Postfix
// delivers it again. Postfix logs no "may be sent more than once" for these.
func postfixLostReply(logPath string) (map[string]bool, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, fmt.Errorf("reading Postfix's log: %w", err)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "postfix/lmtp[") || !strings.Contains(line, "status=deferred") {
			continue
		}
		if !strings.Contains(line, "in reply to end of DATA command") && !strings.Contains(line, "final server response") && !strings.Contains(line, "end of data") {
			continue
		}
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

// faultJournal stops Lifeline, runs `lifeline journal verify`, and checks
// that the journal holds every message of mustHold (id → mailboxes) through
// `lifeline export`. It returns the summary's journal column.
func faultJournal(ctx context.Context, t *testing.T, env *Env, mustHold map[string][]string) string {
	t.Helper()
	l := env.Lifeline
	if err := l.Stop(); err != nil {
		t.Errorf("lifeline serve did not stop cleanly: %v", err)
	}
	col := "verify ok"
	if out, err := l.Verify(ctx); err != nil {
		t.Errorf("lifeline journal verify: %v", err)
		col = "VERIFY FAILED"
	} else {
		t.Logf("lifeline journal verify:\n%s", out)
	}
	if len(mustHold) == 0 {
		return col
	}
	held := map[string]map[string]bool{} // mailbox → ids in the journal
	root := t.TempDir()
	for _, u := range faultUsers {
		box := qualify(u, env.Domain)
		files, err := l.ExportEML(ctx, box, filepath.Join(root, u))
		if err != nil {
			t.Errorf("export %s: %v", box, err)
			continue
		}
		held[box] = map[string]bool{}
		for _, f := range files {
			id, err := readTestID(f)
			if err != nil {
				t.Fatal(err)
			}
			held[box][id] = true
		}
	}
	var lost []string
	want := 0
	for id, boxes := range mustHold {
		for _, b := range boxes {
			want++
			if !held[b][id] {
				lost = append(lost, id+" → "+b)
			}
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("the journal lacks %d of %d deliveries that passed the milter while Lifeline was up:\n%s", len(lost), want, strings.Join(firstN(lost, 20), "\n"))
	}
	return fmt.Sprintf("%s, %d/%d held", col, want-len(lost), want)
}

// upWindows turns a run from start to end with kills into the spans when
// Lifeline was up.
func upWindows(start, end time.Time, kills []killRec) [][2]time.Time {
	var w [][2]time.Time
	from := start
	for _, k := range kills {
		w = append(w, [2]time.Time{from, k.at})
		from = k.healthy
	}
	return append(w, [2]time.Time{from, end})
}

// heldWhileUp returns the acknowledged messages whose whole SMTP session lay
// in one of the windows: their milter session ran on a live Lifeline, which
// journals before Postfix answers 250.
func heldWhileUp(acked []Attempt, windows [][2]time.Time) map[string][]string {
	m := map[string][]string{}
	for _, a := range acked {
		for _, w := range windows {
			if a.Start.After(w[0]) && a.End.Before(w[1]) {
				m[a.ID] = a.To
				break
			}
		}
	}
	return m
}

// faultRows collects each scenario's row for TestFaultSummary, which runs
// after the scenarios (tests run in source order) and prints them as one
// table.
var faultRows struct {
	sync.Mutex
	rows []FaultRow
}

func logRow(t *testing.T, row FaultRow) {
	t.Helper()
	faultRows.Lock()
	faultRows.rows = append(faultRows.rows, row)
	faultRows.Unlock()
	t.Logf("FAULTS SUMMARY (%s form)\n%s", map[bool]string{false: "short", true: "long"}[faultsLong()], FaultTable([]FaultRow{row}))
}

// TestFaultKillLifeline: SIGKILL of `lifeline serve` at random moments under
// load, in three modes one after the other: normal (no outage: Postfix keeps
// delivering, default_action = accept while Lifeline is down), custody (an
// operator outage with mail flowing into custody) and replay (after the
// outage ends, while the replay runs). Every acknowledged message arrives;
// duplicates only for a message in flight at a custody kill (journaled, and
// Postfix took it too as the milter vanished) or a replay transaction in
// flight at a replay kill; the journal verifies and holds every message
// whose SMTP session ran while Lifeline was up.
func TestFaultKillLifeline(t *testing.T) {
	requireE2E(t)
	perMode, replayKills := pick(4, 10), pick(3, 10)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2,
		// Slow enough that the replay lasts through its kills.
		Replay: ReplayOptions{Rate: pick(12, 10), Concurrency: 2}}
	env := faultEnv(t, oo, nil)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)
	ledger := NewLedger()
	chaos := faultChaos(t, 300*time.Millisecond, 1200*time.Millisecond)
	loadStart := time.Now()
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Pace: faultPace(), Recipients: faultRecipients(env.Domain)})
	defer load.Stop()

	var kills []killRec
	kill := func(mode string) func(int) error {
		return func(int) error {
			// Mail flows between kills.
			if err := load.WaitAcked(ctx, load.Acked()+3, time.Minute); err != nil {
				return err
			}
			at := time.Now()
			if err := l.Kill(); err != nil {
				return err
			}
			l.Restart(t)
			kills = append(kills, killRec{mode, at, time.Now()})
			return nil
		}
	}

	// Normal mode.
	if _, err := chaos.Run(ctx, perMode, kill("normal")); err != nil {
		t.Fatal(err)
	}
	t.Logf("normal mode: %d kills; %s", perMode, load)

	// Custody: an operator outage while Dovecot stays up.
	if err := l.OutageStart(ctx, PrimaryServer, "e2e fault suite"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	custodyStart := time.Now()
	if _, err := chaos.Run(ctx, perMode, kill("custody")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatalf("the operator outage did not survive the kills: %v", err)
	}
	// A little more custody mail, so that the replay lasts.
	if err := load.WaitAcked(ctx, load.Acked()+pick(30, 100), time.Minute); err != nil {
		t.Fatal(err)
	}
	replayStart := time.Now()
	var custodyMsgs []Attempt
	for _, a := range load.Acknowledged() {
		if a.Start.After(custodyStart) && a.End.Before(replayStart) {
			custodyMsgs = append(custodyMsgs, a)
		}
	}
	t.Logf("custody: %d kills; %d messages acknowledged during the outage; %s", perMode, len(custodyMsgs), load)

	// Replay: end the outage, kill while custody mail is still undelivered.
	if err := l.OutageEnd(ctx, PrimaryServer); err != nil {
		t.Fatal(err)
	}
	md := NewMaildirs(env.Dovecot)
	undelivered := func() (int, error) {
		boxes := map[string]map[string][]string{}
		for _, u := range faultUsers {
			box := qualify(u, env.Domain)
			got, err := md.Messages(box)
			if err != nil {
				return 0, err
			}
			boxes[box] = got
		}
		n := 0
		for _, a := range custodyMsgs {
			for _, box := range a.To {
				if len(boxes[box][a.ID]) == 0 {
					n++
				}
			}
		}
		return n, nil
	}
	if left, err := undelivered(); err != nil {
		t.Fatal(err)
	} else {
		st, _ := l.Status(ctx)
		t.Logf("outage ended: %d custody deliveries left; status %s", left, st[PrimaryServer])
	}
	replayChaos := NewChaos(chaos.Seed+1, 200*time.Millisecond, 800*time.Millisecond)
	done, err := replayChaos.Run(ctx, replayKills, func(int) error {
		left, err := undelivered()
		if err != nil {
			return err
		}
		if left == 0 {
			return ErrChaosDone
		}
		at := time.Now()
		if err := l.Kill(); err != nil {
			return err
		}
		l.Restart(t)
		kills = append(kills, killRec{"replay", at, time.Now()})
		t.Logf("replay kill %d with %d custody deliveries left", len(kills)-2*perMode, left)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if done < replayKills {
		t.Logf("the replay finished after %d of %d kills", done, replayKills)
	}
	if done == 0 {
		t.Errorf("no kill landed during the replay; lower [replay] rate")
	}
	load.Stop()
	loadEnd := time.Now()

	resent := postfixResentExcuse(t, env, load)
	attempts := map[string]Attempt{}
	for _, a := range load.Acknowledged() {
		attempts[a.ID] = a
	}
	replayDups := map[string]bool{} // messages: one transaction carries all of a message's recipients
	row := accountFaults(ctx, t, "1 SIGKILL lifeline", env, load, ledger, 3*time.Minute, func(box, id string, copies, replayed int) string {
		if why := resent(id); why != "" && replayed == 0 {
			return why
		}
		a := attempts[id]
		if copies == 2 && replayed == 1 {
			for _, k := range kills {
				if k.mode == "custody" && !a.Start.After(k.at.Add(100*time.Millisecond)) && !a.End.Before(k.at.Add(-100*time.Millisecond)) {
					return "in flight at a SIGKILL during custody (journaled, and Postfix took it as the milter vanished)"
				}
			}
		}
		if replayed >= 2 {
			replayDups[id] = true
			return "replay transaction in flight at a SIGKILL during replay"
		}
		return ""
	})
	if bound := done * oo.Replay.Concurrency; len(replayDups) > bound {
		t.Errorf("%d messages duplicated by the replay; at most %d in flight at %d kills × concurrency %d", len(replayDups), bound, done, oo.Replay.Concurrency)
	}
	row.Faults = len(kills)
	row.JournalCheck = faultJournal(ctx, t, env, heldWhileUp(load.Acknowledged(), upWindows(loadStart, loadEnd, kills)))
	t.Logf("%d kills: %d normal, %d custody, %d replay", len(kills), perMode, perMode, done)
	logRow(t, row)
}

// TestFaultDovecotRestarts: Dovecot stopped and started again and again
// under load; each time the probes declare the outage (custody) and end it
// (replay); in the end every acknowledged message is delivered once.
func TestFaultDovecotRestarts(t *testing.T) {
	requireE2E(t)
	n := pick(5, 20)
	oo := OutageOptions{Interval: "100ms", FailAfter: 3, RecoverAfter: 2, ProbeTimeout: "1s", Replay: ReplayOptions{Concurrency: 2}}
	env := faultEnv(t, oo, nil)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)
	ledger := NewLedger()
	chaos := faultChaos(t, 200*time.Millisecond, 800*time.Millisecond)
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Pace: faultPace(), Recipients: faultRecipients(env.Domain)})
	defer load.Stop()
	var stops []time.Time
	restarts, err := chaos.Run(ctx, n, func(i int) error {
		if err := load.WaitAcked(ctx, load.Acked()+3, time.Minute); err != nil {
			return err
		}
		stops = append(stops, time.Now())
		if err := env.Dovecot.Stop(); err != nil {
			return err
		}
		if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 30*time.Second); err != nil {
			return err
		}
		// Custody under load.
		if err := load.WaitAcked(ctx, load.Acked()+3, time.Minute); err != nil {
			return err
		}
		env.Dovecot.Restart(t)
		if _, _, err := l.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %d restarts: %v", restarts, err)
	}
	load.Stop()
	resent := postfixResentExcuse(t, env, load)
	replayDups := map[string]bool{}
	row := accountFaults(ctx, t, "2 Dovecot restarts", env, load, ledger, 3*time.Minute, func(box, id string, copies, replayed int) string {
		if why := resent(id); why != "" && replayed == 0 {
			return why
		}
		if replayed >= 2 {
			// Dovecot stopped with a replay transaction in flight: it may
			// have saved the message without the reply reaching Lifeline,
			// Postfix's duplicate window (RFC 5321 §6.1) for the replay.
			replayDups[id] = true
			return "replay transaction in flight when Dovecot stopped"
		}
		return ""
	})
	if bound := len(stops) * oo.Replay.Concurrency; len(replayDups) > bound {
		t.Errorf("%d messages duplicated by the replay; at most %d in flight at %d stops × concurrency %d", len(replayDups), bound, len(stops), oo.Replay.Concurrency)
	}
	row.Faults = restarts
	row.JournalCheck = faultJournal(ctx, t, env, nil)
	logRow(t, row)
}

// TestFaultLMTP4xx: during the replay, the mailbox server answers 451 to
// every RCPT TO for a while (an LMTP proxy in front of Dovecot injects it;
// the health probe's canary is spared, so the server stays "up"). The
// replay retries and, once the 451s stop, delivers everything once.
func TestFaultLMTP4xx(t *testing.T) {
	requireE2E(t)
	proxy := NewLMTPFaultProxy(slog.New(slog.NewTextHandler(io.Discard, nil)))
	canary := qualify(CanaryUser, DefaultDomain)
	proxy.Exempt = func(r string) bool { return strings.EqualFold(r, canary) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- proxy.Serve(ln) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := proxy.Shutdown(sctx); err != nil {
			t.Errorf("fault proxy shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("fault proxy: %v", err)
		}
	})
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := faultEnv(t, oo, func(o *Options) {
		o.Lifeline.Servers = []LifelineServer{{Name: PrimaryServer, Domains: []string{DefaultDomain}, LMTPAddr: ln.Addr().String(), Canary: canary}}
	})
	proxy.SetBackend(env.Dovecot.LMTPAddr)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)

	if err := l.OutageStart(ctx, PrimaryServer, "e2e fault suite"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ledger := NewLedger()
	m := pick(30, 300)
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Max: m, Recipients: faultRecipients(env.Domain)})
	<-load.Done()
	if load.Acked() != m {
		t.Fatalf("%d of %d messages acknowledged during the outage: %s", load.Acked(), m, load)
	}
	rcpts := 0
	for _, a := range load.Acknowledged() {
		rcpts += len(a.To)
	}
	if err := env.Postfix.WaitQueueEmpty(ctx, time.Minute); err != nil {
		t.Fatalf("custody mail must not stay with Postfix: %v", err)
	}

	proxy.SetFaulting(true)
	if err := l.OutageEnd(ctx, PrimaryServer); err != nil {
		t.Fatal(err)
	}
	faultFrom := time.Now()
	// Each recipient refused at least twice: the replay retried.
	if err := Poll(ctx, 2*time.Minute, func() (bool, error) { return proxy.Refused() >= int64(2*rcpts), nil }); err != nil {
		t.Fatalf("the replay did not retry: %d RCPT refused for %d recipients: %v", proxy.Refused(), rcpts, err)
	}
	md := NewMaildirs(env.Dovecot)
	if r, err := md.Count(ledger); err != nil {
		t.Fatal(err)
	} else if r.Delivered > 0 {
		t.Errorf("%d deliveries while every RCPT got 451", r.Delivered)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %v of 451s: %d RCPT refused for %d custody recipients; status %s", time.Since(faultFrom).Round(time.Millisecond), proxy.Refused(), rcpts, st[PrimaryServer])
	if st[PrimaryServer].Replay.Failed > 0 {
		t.Errorf("the replay gave up on recipients after 451s: %s", st[PrimaryServer])
	}
	proxy.SetFaulting(false)
	healed := time.Now()

	row := accountFaults(ctx, t, "3 LMTP 451 during replay", env, load, ledger, 2*time.Minute, nil)
	t.Logf("everything delivered %v after the 451s stopped; the proxy passed %d recipients", time.Since(healed).Round(time.Millisecond), proxy.Passed())
	if row.ViaCustody != row.Expected {
		t.Errorf("%d of %d deliveries came from custody; want all", row.ViaCustody, row.Expected)
	}
	if st, err := l.Status(ctx); err != nil {
		t.Error(err)
	} else if st[PrimaryServer].Replay.Failed > 0 {
		t.Errorf("replay failed recipients: %s", st[PrimaryServer])
	}
	row.Faults = int(proxy.Refused())
	row.JournalCheck = faultJournal(ctx, t, env, nil)
	logRow(t, row)
}

// remountJournal moves l's journal onto another filesystem: it stops l,
// moves the journal directory to dir-backing, leaves an empty dir in its
// place for mount to mount something on (backing holds the journal so far,
// for a filesystem that passes through to it), and starts l again. The test
// is skipped when mount fails. Lifeline is stopped, after beforeStop (if
// mount returns one), ahead of the cleanups mount registered, which run
// later (last-in first-out), so that nothing is unmounted under it;
// StartLifeline's own cleanup would stop it too late.
func remountJournal(ctx context.Context, t *testing.T, l *Lifeline, mount func(backing, dir string) (beforeStop func(), err error)) {
	t.Helper()
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	backing := l.JournalDir + "-backing"
	if err := os.Rename(l.JournalDir, backing); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, l.JournalDir)
	beforeStop, err := mount(backing, l.JournalDir)
	if err != nil {
		t.Skipf("not run: %v", err)
	}
	t.Cleanup(func() {
		if beforeStop != nil {
			beforeStop()
		}
		if err := l.Stop(); err != nil {
			t.Errorf("stopping lifeline: %v", err)
		}
	})
	l.Restart(t)
	waitNoOutage(ctx, t, l)
}

// TestFaultJournalDiskFull: the journal lives on a small tmpfs that fills up
// during an outage. Custody cannot be taken, so the milter answers TEMPFAIL
// and the senders get 4xx (nothing acknowledged, nothing queued by Postfix);
// once space is freed the senders' retries are taken into custody and
// replayed.
//
// Postfix itself has nothing to retry here: a milter's TEMPFAIL at smtpd
// becomes the SMTP client's 4xx before anything is queued (the sending MTA
// retries, RFC 5321 §4.5.4.1), which the load generator does with the same
// message id; `postqueue -f` is run anyway and finds nothing.
func TestFaultJournalDiskFull(t *testing.T) {
	requireE2E(t)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := faultEnv(t, oo, nil)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)

	// Move the journal onto a 64 MiB tmpfs with 16 MiB kept in reserve.
	cfg, err := os.ReadFile(l.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	patched := strings.Replace(string(cfg), "[journal]\n", "[journal]\nmin_free = \"16MiB\"\n", 1)
	if patched == string(cfg) {
		t.Fatalf("no [journal] table in %s", l.ConfigPath)
	}
	writeFile(t, l.ConfigPath, patched, 0o644)
	remountJournal(ctx, t, l, func(_, dir string) (func(), error) {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
		})
		return nil, nil
	})

	if err := l.OutageStart(ctx, PrimaryServer, "e2e fault suite"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Leave 8 MiB: below min_free.
	filler := filepath.Join(l.JournalDir, "filler")
	var fs syscall.Statfs_t
	if err := syscall.Statfs(l.JournalDir, &fs); err != nil {
		t.Fatal(err)
	}
	fill := int64(fs.Bavail)*int64(fs.Bsize) - 8<<20
	if err := writeZeros(filler, fill); err != nil {
		t.Fatal(err)
	}
	t.Logf("journal filesystem: filled %d MiB, 8 MiB left (min_free 16 MiB)", fill>>20)

	ledger := NewLedger()
	m := pick(20, 200)
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Max: m, Retry4xx: true, RetryDelay: 300 * time.Millisecond, Recipients: faultRecipients(env.Domain)})
	defer load.Stop()
	if err := Poll(ctx, time.Minute, func() (bool, error) { return load.Begun() >= m && load.Tempfails() >= m, nil }); err != nil {
		t.Fatalf("senders did not get 4xx: %s: %v", load, err)
	}
	if n := load.Acked(); n > 0 {
		t.Errorf("%d messages acknowledged while the journal could not take them", n)
	}
	if q, err := env.Postfix.Queue(ctx); err != nil {
		t.Fatal(err)
	} else if len(q) > 0 {
		t.Errorf("Postfix queued mail it answered 4xx for: %s", describeQueue(q))
	}
	t.Logf("disk full: %s", load)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	if err := env.Postfix.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	<-load.Done()
	t.Logf("space freed: every message acknowledged on the senders' retries %v later; %s", time.Since(freed).Round(time.Millisecond), load)
	if load.Acked() != m {
		t.Fatalf("%d of %d messages acknowledged after the space came back", load.Acked(), m)
	}
	if err := env.Postfix.WaitQueueEmpty(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if r, err := NewMaildirs(env.Dovecot).Count(ledger); err != nil {
		t.Fatal(err)
	} else if r.Delivered > 0 {
		t.Errorf("%d deliveries during the outage: custody mail must wait for the replay", r.Delivered)
	}
	if err := l.OutageEnd(ctx, PrimaryServer); err != nil {
		t.Fatal(err)
	}
	row := accountFaults(ctx, t, "4 journal disk full", env, load, ledger, 2*time.Minute, nil)
	if row.ViaCustody != row.Expected {
		t.Errorf("%d of %d deliveries came from custody; want all", row.ViaCustody, row.Expected)
	}
	row.Faults = 1
	all := map[string][]string{}
	for _, a := range load.Acknowledged() {
		all[a.ID] = a.To
	}
	row.JournalCheck = faultJournal(ctx, t, env, all)
	logRow(t, row)
}

// writeZeros writes n bytes of zeros to path (written, not a sparse
// truncate: tmpfs would not count a hole as used).
func writeZeros(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:c]); err != nil {
			f.Close()
			return err
		}
		n -= c
	}
	return f.Close()
}

// TestFaultPostfixRestart: Postfix stopped (SIGTERM to its master, what
// `postfix stop` sends) and started again while the load runs; the senders
// reconnect. Every acknowledged message is delivered once and, Lifeline
// being up throughout, journaled.
func TestFaultPostfixRestart(t *testing.T) {
	requireE2E(t)
	n := pick(2, 10)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := faultEnv(t, oo, nil)
	ctx := faultContext(t)
	waitNoOutage(ctx, t, env.Lifeline)
	ledger := NewLedger()
	chaos := faultChaos(t, 500*time.Millisecond, 1500*time.Millisecond)
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Pace: faultPace(), Recipients: faultRecipients(env.Domain)})
	defer load.Stop()
	var stops []time.Time
	restarts, err := chaos.Run(ctx, n, func(int) error {
		if err := load.WaitAcked(ctx, load.Acked()+5, time.Minute); err != nil {
			return err
		}
		at := time.Now()
		stops = append(stops, at)
		if err := RestartPostfix(ctx, env.Postfix); err != nil {
			return err
		}
		t.Logf("postfix restarted in %v", time.Since(at).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		t.Fatalf("after %d restarts: %v", restarts, err)
	}
	// The senders got through again.
	if err := load.WaitAcked(ctx, load.Acked()+5, time.Minute); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	attempts := map[string]Attempt{}
	for _, a := range load.Acknowledged() {
		attempts[a.ID] = a
	}
	inDelivery := map[string]bool{}
	row := accountFaults(ctx, t, "5 Postfix restarts", env, load, ledger, 2*time.Minute, func(box, id string, copies, replayed int) string {
		// Postfix stopped while its LMTP client was delivering the
		// message: Dovecot saved it, Postfix (killed by its master's
		// SIGTERM) never recorded it and delivers it again after the
		// start. Postfix's own at-least-once; Lifeline never sees it.
		a := attempts[id]
		for _, st := range stops {
			if replayed == 0 && !a.End.After(st) && a.End.After(st.Add(-5*time.Second)) {
				inDelivery[id] = true
				return "Postfix redelivered a message its LMTP client was delivering when Postfix stopped"
			}
		}
		return ""
	})
	if bound := 2 * len(stops) * 10; len(inDelivery) > bound { // default_destination_concurrency_limit 20 per restart, at most
		t.Errorf("%d messages redelivered by Postfix over %d restarts", len(inDelivery), len(stops))
	}
	row.Faults = restarts
	all := map[string][]string{}
	for _, a := range load.Acknowledged() {
		all[a.ID] = a.To
	}
	row.JournalCheck = faultJournal(ctx, t, env, all)
	logRow(t, row)
}

// TestFaultSlowDisk: the journal's filesystem syncs slowly for a while under
// load in normal mode. The journal is moved onto a SlowFS (a FUSE loopback
// over its directory, served by this test) whose fsync, fdatasync, msync and
// directory fsync wait a delay before the real one: 0, then 200 ms, then 2 s
// (and 8 s in the long form), then 0 again.
//
// What Lifeline does: the milter answers Postfix only once the append is
// durable and sets no deadline of its own on it, so a slow sync makes each
// end-of-data slower but neither tempfails nor accepts without a copy; while
// the append waits it sends SMFIR_PROGRESS every 5 s, which restarts
// Postfix's milter content_timeout (300 s here, as by default), and the
// sender's own limit for the reply to the end of DATA is 10 minutes (RFC
// 5321 §4.5.3.2.6). So the senders get 250s throughout (mail keeps flowing:
// DESIGN.md, step 4), each delivered once by Postfix, and the journal holds
// every one. The SlowFS's count of delayed syncs shows the slowness reached
// the journal, so the test cannot pass with the mount missing.
func TestFaultSlowDisk(t *testing.T) {
	requireE2E(t)
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := faultEnv(t, oo, nil)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)

	// Move the journal onto the SlowFS, over its old directory.
	var sfs *SlowFS
	remountJournal(ctx, t, l, func(backing, dir string) (func(), error) {
		var err error
		sfs, err = MountSlowFS(t, backing, dir)
		if err != nil {
			return nil, fmt.Errorf("FUSE cannot be mounted here: %w", err)
		}
		return func() { sfs.SetDelay(0) }, nil // so that Lifeline stops fast
	})

	type phase struct {
		name  string
		delay time.Duration
		last  time.Duration // at least; longer until minAcks came in
		// minAcks is how many messages must be acknowledged in the
		// phase: mail keeps flowing whatever the disk does.
		minAcks int
		// measured
		from, to       time.Time
		acked, delayed int
		syncs          int64
		slowest        time.Duration // longest SMTP transaction that ended in the phase
	}
	sec := func(short, long int) time.Duration { return time.Duration(pick(short, long)) * time.Second }
	phases := []*phase{
		{name: "fast", delay: 0, last: sec(3, 10), minAcks: pick(3, 10)},
		{name: "200ms", delay: 200 * time.Millisecond, last: sec(5, 30), minAcks: pick(3, 10)},
		// An append costs about two syncs (measured at delay 0: ~2 per
		// message; Badger syncs its value log and its write-ahead log),
		// so 4 s or more here.
		{name: "2s", delay: 2 * time.Second, last: sec(10, 60), minAcks: pick(2, 10)},
	}
	if faultsLong() {
		// An append takes about 16 s: over Lifeline's 5 s progress
		// interval, so Postfix hears SMFIR_PROGRESS.
		phases = append(phases, &phase{name: "8s", delay: 8 * time.Second, last: 40 * time.Second, minAcks: 2})
	}
	phases = append(phases, &phase{name: "fast again", delay: 0, last: sec(3, 10), minAcks: pick(3, 10)})

	ledger := NewLedger()
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Pace: faultPace(), Recipients: faultRecipients(env.Domain)})
	defer load.Stop()
	for _, p := range phases {
		sfs.SetDelay(p.delay)
		p.from = time.Now()
		acked, delayed, syncs := load.Acked(), sfs.Delayed(), sfs.Syncs()
		if !sleepCtx(ctx, p.last) {
			t.Fatal(ctx.Err())
		}
		// Mail keeps flowing whatever the disk does.
		if err := load.WaitAcked(ctx, acked+p.minAcks, 2*time.Minute); err != nil {
			t.Fatalf("phase %s (fsync delay %v): %v; %s", p.name, p.delay, err, sfs)
		}
		p.to = time.Now()
		p.acked, p.delayed, p.syncs = load.Acked()-acked, int(sfs.Delayed()-delayed), sfs.Syncs()-syncs
		t.Logf("phase %s (fsync delay %v, %v): %d acknowledged, %d syncs of which %d delayed; %s",
			p.name, p.delay, p.to.Sub(p.from).Round(time.Millisecond), p.acked, p.syncs, p.delayed, load)
		if p.delay > 0 && p.delayed == 0 {
			t.Errorf("phase %s: no sync was delayed: the journal is not on the SlowFS? %s", p.name, sfs)
		}
	}
	sfs.SetDelay(0)
	load.Stop()
	for _, a := range load.Acknowledged() {
		for _, p := range phases {
			if !a.End.Before(p.from) && a.End.Before(p.to) {
				p.slowest = max(p.slowest, a.End.Sub(a.Start))
			}
		}
	}
	for _, p := range phases {
		t.Logf("phase %s: slowest acknowledged SMTP transaction %v", p.name, p.slowest.Round(time.Millisecond))
	}
	t.Logf("%s; %s", sfs, load)

	if n := load.Tempfails(); n > 0 {
		t.Errorf("%d 4xx replies: a slow journal must not tempfail in normal mode", n)
	}
	if u := load.Unacknowledged(); len(u) > 0 {
		var errs []string
		for id, a := range u {
			errs = append(errs, id+": "+a.Err)
		}
		sort.Strings(errs)
		t.Errorf("%d messages not acknowledged:\n%s", len(u), strings.Join(firstN(errs, 10), "\n"))
	}
	if page, err := l.Metrics(); err != nil {
		t.Error(err)
	} else {
		if n, _ := MetricSum(page, "lifeline_journal_append_errors_total"); n > 0 {
			t.Errorf("lifeline_journal_append_errors_total = %v: appends failed on the slow disk", n)
		}
		sum, _ := MetricSum(page, "lifeline_journal_append_seconds_sum")
		n, _ := MetricSum(page, "lifeline_journal_append_seconds_count")
		if n > 0 {
			t.Logf("milter appends: %.0f, %.3f s on average", n, sum/n)
		}
	}
	// Postfix never gave up on the milter (it would log a timeout and apply
	// default_action = accept: a message with no copy in the journal).
	if b, err := os.ReadFile(env.Postfix.LogPath); err != nil {
		t.Error(err)
	} else {
		var bad []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "milter") && (strings.Contains(line, "warning") || strings.Contains(line, "timed out") || strings.Contains(line, "timeout")) {
				bad = append(bad, line)
			}
		}
		if len(bad) > 0 {
			t.Errorf("Postfix's milter client warned %d times:\n%s", len(bad), strings.Join(firstN(bad, 10), "\n"))
		}
	}

	row := accountFaults(ctx, t, "6 slow journal disk", env, load, ledger, 2*time.Minute, nil)
	if row.ViaCustody > 0 {
		t.Errorf("%d deliveries came from custody in normal mode", row.ViaCustody)
	}
	if sfs.Delayed() == 0 {
		t.Errorf("no sync was delayed: %s", sfs)
	}
	row.Faults = int(sfs.Delayed())
	all := map[string][]string{}
	for _, a := range load.Acknowledged() {
		all[a.ID] = a.To
	}
	row.JournalCheck = faultJournal(ctx, t, env, all)
	logRow(t, row)
}

// TestFaultClockJump is in faults_clock_test.go.

// TestFaultSummary prints the rows of the scenarios that ran before it in
// this process as one table, the figures for the closing note.
func TestFaultSummary(t *testing.T) {
	faultRows.Lock()
	defer faultRows.Unlock()
	if len(faultRows.rows) == 0 {
		t.Skip("no fault scenario ran")
	}
	t.Logf("FAULTS SUMMARY, all scenarios (%s form)\n%s", map[bool]string{false: "short", true: "long"}[faultsLong()], FaultTable(append([]FaultRow(nil), faultRows.rows...)))
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/internal/faultclock"
)

// TestFaultClockJump: the wall clock Lifeline sees jumps, forward by 100 days
// (beyond the 90-day retention) and back by a day, while mail flows in
// normal mode, while mail is in custody during an operator outage, and while
// the replay gives it back. The machine's clock is not touched (other suites
// run beside this one, and Dovecot ends itself when time moves backwards):
// `lifeline serve` reads its wall clock through the fault-injection hook of
// internal/faultclock, an offset in the file LIFELINE_FAULT_CLOCK_FILE names,
// which this test rewrites.
//
// Phases:
//  1. normal mode at offsets 0, +100 days, -1 day, 0: Postfix delivers each
//     message once, Lifeline journals it;
//  2. custody: an operator outage at offset 0, mail taken into custody; the
//     clock jumps +100 days and Lifeline restarts, so that the retention
//     sweep runs at once (it runs at start, then every sweep_interval ≥ 1m):
//     it removes the journal copies of phase 1 that are older than the new
//     horizon, and keeps every message still in custody;
//  3. replay at +100 days: the outage ends while the mailbox server answers
//     451 (LMTPFaultProxy) to every recipient's first attempt, so none may be
//     given up for its 100 days in custody, and each waits for a retry
//     stored as wall time; the clock steps back a day; the 451s stop, and the
//     retries must not wait for the day to pass again;
//  4. normal mode again at offset 0.
//
// Pass: every acknowledged message in Dovecot exactly once (by Postfix, or
// from custody by the replay), the replay delivers all custody mail and
// gives none up, the sweep keeps the custody backlog, the journal verifies.
//
// give_up_after keeps its default (5 days): at +100 days the 451s of phase 3
// must not fail anyone, because replay counts retrying, not the wall clock
// since arrival.
func TestFaultClockJump(t *testing.T) {
	requireE2E(t)
	proxy := startClockFaultProxy(t)
	canary := qualify(CanaryUser, DefaultDomain)
	clockFile := filepath.Join(t.TempDir(), "clock-offset")
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2,
		Replay: ReplayOptions{Rate: pick(10, 20), Concurrency: 2}}
	env := faultEnv(t, oo, func(o *Options) {
		o.Lifeline.Servers = []LifelineServer{{Name: PrimaryServer, Domains: []string{DefaultDomain}, LMTPAddr: proxy.addr, Canary: canary}}
		o.Lifeline.Env = []string{faultclock.EnvVar + "=" + clockFile}
	})
	proxy.SetBackend(env.Dovecot.LMTPAddr)
	l := env.Lifeline
	ctx := faultContext(t)
	waitNoOutage(ctx, t, l)
	if !strings.Contains(tail(l.LogPath, 1<<20), "fault injection: the wall clock follows") {
		t.Fatalf("lifeline serve did not log that the fault clock is active")
	}

	ledger := NewLedger()
	load := StartLoad(ctx, ledger, LoadOptions{Addr: env.Postfix.SMTPAddr, Workers: 2, Pace: faultPace(), Recipients: faultRecipients(env.Domain)})
	defer load.Stop()
	n := pick(6, 60)
	jumps := 0
	// jump returns when the offset file was written and when Lifeline's
	// clock was seen at the offset: a message whose session lies between
	// two jumps' seen and written arrived at the first one's offset.
	jump := func(off time.Duration) (written, seen time.Time) {
		t.Helper()
		written, seen = setFaultClock(ctx, t, l, clockFile, off)
		jumps++
		return written, seen
	}
	flow := func(what string) {
		t.Helper()
		if err := load.WaitAcked(ctx, load.Acked()+n, 2*time.Minute); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// 1. Normal mode. The spans at offset ≤ 0 journal copies that the sweep
	// of phase 2 must remove (the others arrived "in 100 days").
	var old [][2]time.Time
	from := time.Now()
	flow("normal mode, offset 0")
	at, _ := jump(100 * 24 * time.Hour)
	old = append(old, [2]time.Time{from, at})
	flow("normal mode, offset +100 days")
	_, from = jump(-24 * time.Hour)
	flow("normal mode, offset -1 day")
	at, seen := jump(0)
	old = append(old, [2]time.Time{from, at})
	from = seen
	flow("normal mode, offset 0 again")
	// A message in flight as the outage starts may go either way.
	old = append(old, [2]time.Time{from, time.Now()})
	if err := l.OutageStart(ctx, PrimaryServer, "e2e clock-jump fault"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	outageAt := time.Now()
	oldCopies := len(heldWhileUp(load.Acknowledged(), old))
	t.Logf("normal mode: %d jumps; %s; %d journal copies arrived at offset ≤ 0", jumps, load, oldCopies)

	// 2. Custody, then +100 days and a restart: the sweep runs.
	flow("custody, offset 0")
	custodyOld, _ := jump(100 * 24 * time.Hour)
	// Messages in custody that arrived at offset 0: past the horizon after
	// the jump, which the sweep must keep.
	oldCustody := len(heldWhileUp(load.Acknowledged(), [][2]time.Time{{outageAt, custodyOld}}))
	flow("custody, offset +100 days")
	before, err := l.WaitStatus(ctx, PrimaryServer, 10*time.Second, func(s ServerStatus) bool { return s.Backlog > 0 })
	if err != nil {
		t.Fatalf("no custody backlog during the outage: %v", err)
	}
	// While it restarts, Postfix delivers without the milter
	// (default_action = accept): those messages are not in custody.
	down := time.Now()
	l.Restart(t)
	up := time.Now()
	swept := waitSweep(ctx, t, l)
	kept := sweptKept(t, l)
	after, err := l.WaitStatus(ctx, PrimaryServer, 30*time.Second, func(s ServerStatus) bool { return s.Backlog > 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restart at +100 days: the sweep removed %d messages (%d arrived at offset ≤ 0 in normal mode) and kept %d undelivered ones past the horizon (%d arrived in custody at offset 0); custody backlog %d recipients before, %d after",
		swept, oldCopies, kept, oldCustody, before.Backlog, after.Backlog)
	if kept < oldCustody {
		t.Errorf("the sweep kept %d messages past the horizon for their undelivered recipients; %d arrived in custody at offset 0", kept, oldCustody)
	}
	if swept < oldCopies {
		t.Errorf("the sweep 100 days on removed %d messages; want at least the %d copies of normal mode that arrived at offset ≤ 0", swept, oldCopies)
	}
	if after.Backlog < before.Backlog {
		t.Errorf("custody backlog %d after the sweep, %d before: the sweep removed mail in custody", after.Backlog, before.Backlog)
	}
	if !after.Outage {
		t.Errorf("the operator outage did not survive the restart: %s", after)
	}
	flow("custody after the restart, offset +100 days")
	replayStart := time.Now()
	custodyDeliveries := 0
	for _, to := range heldWhileUp(load.Acknowledged(), [][2]time.Time{{outageAt, down}, {up, replayStart}}) {
		custodyDeliveries += len(to)
	}

	// 3. Replay at +100 days, 451s, a day back.
	// Every recipient's first replay attempt meets a 451: the custody mail
	// that arrived at offset 0 is then 100 days old on Lifeline's clock,
	// which must not make the replay give it up (give-up counts retrying).
	proxy.SetFaulting(true)
	refused0 := proxy.Refused()
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	left := st[PrimaryServer].Backlog
	if left == 0 {
		t.Fatalf("no custody backlog before the replay: %s", st[PrimaryServer])
	}
	if err := l.OutageEnd(ctx, PrimaryServer); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, time.Minute, func() (bool, error) { return proxy.Refused()-refused0 >= left, nil }); err != nil {
		t.Fatalf("the replay did not meet the 451s: %d RCPT refused for a backlog of %d: %v", proxy.Refused()-refused0, left, err)
	}
	jump(99 * 24 * time.Hour)
	proxy.SetFaulting(false)
	healed := time.Now()
	// Retries wait at most retry_max (5 s here) plus jitter; a day is a stall.
	if st, err := l.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatalf("the replay stalled after the clock stepped back a day (retries stored as wall time): %v", err)
	} else if st.Replay.Failed > 0 {
		t.Errorf("the replay gave up recipients at +100 days: %s", st)
	}
	t.Logf("replay: %d RCPT refused with 451 for a backlog of %d; after the step back a day, the backlog was delivered in %v",
		proxy.Refused()-refused0, left, time.Since(healed).Round(time.Millisecond))

	// 4. Normal mode at the real time again.
	jump(0)
	flow("normal mode after the replay, offset 0")
	load.Stop()

	resent := postfixResentExcuse(t, env, load)
	row := accountFaults(ctx, t, "7 clock jumps", env, load, ledger, 2*time.Minute, func(box, id string, copies, replayed int) string {
		if why := resent(id); why != "" && replayed == 0 {
			return why
		}
		return ""
	})
	if row.ViaCustody == 0 || row.ViaCustody < custodyDeliveries {
		t.Errorf("%d deliveries came from custody; want at least the %d of the messages the milter took into custody", row.ViaCustody, custodyDeliveries)
	}
	if st, err := l.Status(ctx); err != nil {
		t.Error(err)
	} else if s := st[PrimaryServer]; s.Replay.Failed > 0 || s.Backlog > 0 {
		t.Errorf("after the scenario: %s", s)
	}
	row.Faults = jumps
	row.JournalCheck = faultJournal(ctx, t, env, nil)
	logRow(t, row)
}

// clockFaultProxy is an LMTPFaultProxy on a loopback port, its listener's
// address beside it.
type clockFaultProxy struct {
	*LMTPFaultProxy
	addr string
}

// startClockFaultProxy starts an LMTP fault proxy that spares the health
// probe's canary, stopped at the end of the test.
func startClockFaultProxy(t *testing.T) clockFaultProxy {
	t.Helper()
	p := NewLMTPFaultProxy(slog.New(slog.NewTextHandler(io.Discard, nil)))
	canary := qualify(CanaryUser, DefaultDomain)
	p.Exempt = func(r string) bool { return strings.EqualFold(r, canary) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			t.Errorf("fault proxy shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("fault proxy: %v", err)
		}
	})
	return clockFaultProxy{p, ln.Addr().String()}
}

// setFaultClock writes the offset and waits until Lifeline's admin API
// reports a time at that offset from the real one; it returns when it wrote
// the file and when it saw the offset.
func setFaultClock(ctx context.Context, t *testing.T, l *Lifeline, file string, off time.Duration) (written, seen time.Time) {
	t.Helper()
	written = time.Now()
	if err := faultclock.Write(file, off); err != nil {
		t.Fatal(err)
	}
	var said time.Time
	err := Poll(ctx, 10*time.Second, func() (bool, error) {
		lt, err := lifelineTime(ctx, l)
		if err != nil {
			return false, err
		}
		said = lt
		if d := lt.Sub(time.Now().Add(off)); d > -time.Minute && d < time.Minute {
			return true, nil
		}
		return false, errNotYet
	})
	if err != nil {
		t.Fatalf("lifeline's clock did not take the offset %v: it says %v: %v", off, said, err)
	}
	t.Logf("lifeline's wall clock at offset %v: %s", off, said.UTC().Format(time.RFC3339))
	return written, time.Now()
}

// lifelineTime is the "time" of GET /v1/status: the daemon's wall clock.
func lifelineTime(ctx context.Context, l *Lifeline) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.HTTPAddr+"/v1/status", nil)
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+l.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("GET /v1/status: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Time time.Time `json:"time"`
	}
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("GET /v1/status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return time.Time{}, fmt.Errorf("GET /v1/status: %w", err)
	}
	return st.Time, nil
}

// waitSweep waits for the retention sweep `lifeline serve` runs at start and
// returns how many messages it removed (lifeline_retention_removed_total of
// the fresh process).
func waitSweep(ctx context.Context, t *testing.T, l *Lifeline) int {
	t.Helper()
	var removed float64
	err := Poll(ctx, time.Minute, func() (bool, error) {
		page, err := l.Metrics()
		if err != nil {
			return false, err
		}
		if n, ok := MetricSum(page, "lifeline_retention_sweep_seconds_count"); !ok || n < 1 {
			return false, errNotYet
		}
		if n, ok := MetricSum(page, "lifeline_retention_errors_total"); ok && n > 0 {
			return true, fmt.Errorf("the retention sweep failed (lifeline_retention_errors_total %v)", n)
		}
		removed, _ = MetricSum(page, "lifeline_retention_removed_total")
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for the retention sweep after the restart: %v", err)
	}
	return int(removed)
}

// sweptKept reads kept_undelivered from the last "retention sweep" line of
// serve's log: messages past the horizon the sweep kept because a recipient
// is in custody or retrying (0 when the sweep logged nothing).
func sweptKept(t *testing.T, l *Lifeline) int {
	t.Helper()
	kept := 0
	for _, line := range strings.Split(tail(l.LogPath, 4<<20), "\n") {
		if !strings.Contains(line, `msg="retention sweep"`) {
			continue
		}
		_, v, ok := strings.Cut(line, "kept_undelivered=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("retention sweep log line %q: %v", line, err)
		}
		kept = n
	}
	return kept
}

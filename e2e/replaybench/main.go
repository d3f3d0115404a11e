// Command replaybench measures how fast Lifeline gives held mail back to
// Dovecot after an outage, beside Postfix's own LMTP delivery of the same
// messages to the same Dovecot in the same run.
//
// Each run holds N messages of one size, then releases them and times until
// the last one is in the mailbox:
//
//   - lifeline: a manual outage (`lifeline outage start`) makes the milter take
//     custody of every message smtp-source sends; `lifeline outage end`
//     starts the replay over LMTP.
//   - postfix: the same Postfix has defer_transports = lmtp, so it queues and
//     defers every message it accepts; `postqueue -f` (which overrides
//     defer_transports, as `sendmail -q` does) releases them.
//
// Runs alternate their order; the summary prints the median of each and of
// the ratio lifeline/postfix (the goal: at least 1.0). It needs root
// (see package e2e).
//
//	go run ./e2e/replaybench [-count 10000] [-size 4096[,102400]] [-pairs 1] [-sessions 20] [-concurrency 0]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifelinemail/lifeline/e2e"
)

type options struct {
	count       int
	sizes       []int
	pairs       int
	sessions    int
	concurrency int
	rate        int
	inFlowDelay string
	timeout     time.Duration
	out         io.Writer
}

func main() {
	var o options
	var sizes string
	flag.IntVar(&o.count, "count", 10000, "messages held per run")
	flag.StringVar(&sizes, "size", "4096", "message body sizes in bytes (smtp-source -l), comma-separated")
	flag.IntVar(&o.pairs, "pairs", 1, "paired runs (lifeline and postfix, order alternating) per size")
	flag.IntVar(&o.sessions, "sessions", 20, "concurrent SMTP sessions filling the queue (smtp-source -s)")
	flag.IntVar(&o.concurrency, "concurrency", 0, "[replay] concurrency (0: Lifeline's default)")
	flag.IntVar(&o.rate, "rate", 0, "[replay] rate (0: unlimited)")
	flag.StringVar(&o.inFlowDelay, "in-flow-delay", "", "Postfix in_flow_delay (\"\": Postfix's default, 1s)")
	flag.DurationVar(&o.timeout, "run-timeout", 15*time.Minute, "limit for one run")
	flag.Parse()
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fatal("-size: %q is not a positive number", f)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.count < 1 || o.pairs < 1 || o.sessions < 1 {
		fatal("-count, -pairs and -sessions must be at least 1")
	}
	o.out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := &e2e.Main{}
	err := m.Run(func(tb e2e.TB) { bench(ctx, tb, o) })
	e2e.RemoveBuilt()
	if err != nil {
		os.Exit(1)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replaybench: "+format+"\n", args...)
	os.Exit(2)
}

type bencher struct {
	o        options
	env      *e2e.Env
	next     int
	accepted float64 // msg/s of the last fill
}

func bench(ctx context.Context, tb e2e.TB, o options) {
	runs := 2 * len(o.sizes) * o.pairs
	var users []string
	for i := 1; i <= runs; i++ {
		users = append(users, fmt.Sprintf("bench%03d", i))
	}
	tb.Logf("replaybench: starting Postfix (defer_transports = lmtp), Dovecot and Lifeline")
	oo := &e2e.OutageOptions{Interval: "1s", Replay: e2e.ReplayOptions{Concurrency: o.concurrency, Rate: o.rate}}
	pmain := map[string]string{"defer_transports": "lmtp"}
	if o.inFlowDelay != "" {
		pmain["in_flow_delay"] = o.inFlowDelay
	}
	b := &bencher{o: o, env: e2e.Start(tb, e2e.Options{
		Milter:   true,
		Users:    users,
		Lifeline: e2e.LifelineOptions{LogLevel: "warn", Outage: oo},
		Postfix:  e2e.PostfixOptions{Main: pmain},
	})}
	conc := "Lifeline's default"
	if o.concurrency > 0 {
		conc = strconv.Itoa(o.concurrency)
	}
	fmt.Fprintf(o.out, "Held mail released to Dovecot (LMTP, maildir): %d messages per run, one recipient each; filled by smtp-source -s %d.\n", o.count, o.sessions)
	fmt.Fprintf(o.out, "lifeline = custody during a manual outage, replayed after `lifeline outage end` ([replay] concurrency %s);\n", conc)
	fmt.Fprintf(o.out, "postfix  = the same messages deferred by defer_transports = lmtp, released by `postqueue -f` (default_destination_concurrency_limit 20).\n\n")
	fmt.Fprintf(o.out, "accepted/s is how fast Postfix (with the milter) took the messages while holding them: in custody, or deferred.\n\n")
	fmt.Fprintf(o.out, "%-8s %-4s %-9s %11s %10s %12s\n", "size", "pair", "side", "accepted/s", "seconds", "delivered/s")

	type pair struct{ lifeline, postfix float64 }
	results := map[int][]pair{}
	for _, size := range o.sizes {
		for p := 0; p < o.pairs; p++ {
			sides := []string{"lifeline", "postfix"}
			if p%2 == 1 {
				sides = []string{"postfix", "lifeline"}
			}
			var pr pair
			for _, side := range sides {
				if ctx.Err() != nil {
					tb.Fatalf("replaybench: interrupted")
				}
				var took time.Duration
				if side == "lifeline" {
					took = b.lifeline(ctx, tb, size)
					pr.lifeline = float64(o.count) / took.Seconds()
				} else {
					took = b.postfix(ctx, tb, size)
					pr.postfix = float64(o.count) / took.Seconds()
				}
				fmt.Fprintf(o.out, "%-8s %-4d %-9s %11.1f %10.2f %12.1f\n", sizeName(size), p+1, side, b.accepted, took.Seconds(), float64(o.count)/took.Seconds())
			}
			results[size] = append(results[size], pr)
		}
	}
	fmt.Fprintf(o.out, "\nSummary: median delivered msg/s, and the median over pairs of lifeline/postfix (goal ≥ 1.00).\n")
	fmt.Fprintf(o.out, "%-8s %12s %12s %8s\n", "size", "lifeline", "postfix", "ratio")
	for _, size := range o.sizes {
		var lr, pr, ratio []float64
		for _, p := range results[size] {
			lr, pr, ratio = append(lr, p.lifeline), append(pr, p.postfix), append(ratio, p.lifeline/p.postfix)
		}
		fmt.Fprintf(o.out, "%-8s %12.1f %12.1f %8.2f\n", sizeName(size), median(lr), median(pr), median(ratio))
	}
}

// fill sends count messages of size to rcpt with smtp-source and reports
// the accept rate.
func (b *bencher) fill(ctx context.Context, tb e2e.TB, rcpt string, size int) {
	tb.Helper()
	defer func(start time.Time) { b.accepted = float64(b.o.count) / time.Since(start).Seconds() }(time.Now())
	cmd := exec.CommandContext(ctx, "/usr/sbin/smtp-source",
		"-s", strconv.Itoa(b.o.sessions), "-m", strconv.Itoa(b.o.count), "-l", strconv.Itoa(size),
		"-f", "bench@example.net", "-t", rcpt, "-M", "bench.lifeline.test", b.env.Postfix.SMTPAddr)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("replaybench: smtp-source: %v\n%s", err, out)
	}
	tb.Logf("replaybench: %d messages of %s accepted in %v", b.o.count, sizeName(size), time.Since(start).Round(time.Millisecond))
}

func (b *bencher) mailbox(tb e2e.TB) (string, string) {
	b.next++
	rcpt := b.env.Addr(fmt.Sprintf("bench%03d", b.next))
	return rcpt, b.env.Dovecot.Maildir(rcpt)
}

// lifeline holds count messages in custody and times their replay.
func (b *bencher) lifeline(ctx context.Context, tb e2e.TB, size int) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	l := b.env.Lifeline
	rcpt, maildir := b.mailbox(tb)
	if err := l.OutageStart(ctx, e2e.PrimaryServer, "replaybench"); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	if _, _, err := l.WaitOutage(ctx, e2e.PrimaryServer, true, time.Minute); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	b.fill(ctx, tb, rcpt, size)
	if _, err := l.WaitStatus(ctx, e2e.PrimaryServer, b.o.timeout, func(s e2e.ServerStatus) bool { return s.Backlog >= int64(b.o.count) }); err != nil {
		tb.Fatalf("replaybench: custody: %v", err)
	}
	if err := b.env.Postfix.WaitQueueEmpty(ctx, time.Minute); err != nil {
		tb.Fatalf("replaybench: custody mail must not be in Postfix's queue: %v", err)
	}
	if n, _ := countNew(maildir); n != 0 {
		tb.Fatalf("replaybench: %d messages reached the mailbox during the outage", n)
	}
	start := time.Now()
	if err := l.OutageEnd(ctx, e2e.PrimaryServer); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	took := waitMaildir(ctx, tb, maildir, b.o.count, start, b.o.timeout)
	if _, err := l.WaitBacklog(ctx, e2e.PrimaryServer, 0, time.Minute); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	cleanMailbox(tb, maildir)
	return took
}

// postfix has Postfix queue count messages (deferred: defer_transports) and
// times their delivery after `postqueue -f`.
func (b *bencher) postfix(ctx context.Context, tb e2e.TB, size int) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	p := b.env.Postfix
	rcpt, maildir := b.mailbox(tb)
	b.fill(ctx, tb, rcpt, size)
	// Every message is in the deferred queue and nothing is in flight.
	var q map[string]int
	err := e2e.Poll(ctx, b.o.timeout, func() (bool, error) {
		var err error
		q, err = queueFiles(p.QueueDir)
		return err == nil && q["deferred"] >= b.o.count && q["incoming"]+q["active"]+q["maildrop"] == 0, err
	})
	if err != nil {
		tb.Fatalf("replaybench: waiting for Postfix to defer %d messages: %v (queue files %v)", b.o.count, err, q)
	}
	if n, _ := countNew(maildir); n != 0 {
		tb.Fatalf("replaybench: %d messages reached the mailbox before the flush", n)
	}
	start := time.Now()
	if err := p.Flush(ctx); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	took := waitMaildir(ctx, tb, maildir, b.o.count, start, b.o.timeout)
	if err := p.WaitQueueEmpty(ctx, time.Minute); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
	cleanMailbox(tb, maildir)
	return took
}

// waitMaildir polls (every 20 ms at most) until maildir/new holds want
// messages and returns the time since start.
func waitMaildir(ctx context.Context, tb e2e.TB, maildir string, want int, start time.Time, timeout time.Duration) time.Duration {
	tb.Helper()
	var n int
	err := e2e.PollUpTo(ctx, timeout, 20*time.Millisecond, func() (bool, error) {
		var err error
		n, err = countNew(maildir)
		return n >= want, err
	})
	took := time.Since(start)
	if err != nil {
		tb.Fatalf("replaybench: %d of %d messages delivered: %v", n, want, err)
	}
	if n != want {
		tb.Fatalf("replaybench: %d messages delivered, %d held", n, want)
	}
	return took
}

func cleanMailbox(tb e2e.TB, maildir string) {
	if err := os.RemoveAll(filepath.Dir(maildir)); err != nil {
		tb.Fatalf("replaybench: %v", err)
	}
}

// countNew counts the messages in a maildir's new/.
func countNew(maildir string) (int, error) {
	ents, err := os.ReadDir(filepath.Join(maildir, "new"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	return len(ents), err
}

// queueFiles counts the queue files in each of Postfix's queues (cheaper
// than postqueue -j for ten thousand messages).
func queueFiles(queueDir string) (map[string]int, error) {
	out := map[string]int{}
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		err := filepath.WalkDir(filepath.Join(queueDir, q), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil // a file moved to another queue meanwhile
				}
				return err
			}
			if !d.IsDir() {
				out[q]++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

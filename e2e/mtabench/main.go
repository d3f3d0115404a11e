// Command mtabench measures what Lifeline's milter costs a real Postfix →
// Dovecot delivery path: Postfix's smtp-source drives a private Postfix
// without a milter and identical ones with Lifeline's milter on a loopback
// port (tcp) and on a unix socket (unix), in rounds of one run each whose
// order rotates, and prints each run's accepted and delivered messages per
// second and the median ratio with/without per milter transport, message size
// and session count. It then measures Lifeline's peak memory while it
// journals one large message. `make bench` runs it; it needs root (see
// package e2e).
//
//	go run ./e2e/mtabench [-pairs 5] [-count 2000] [-sizes 4096,102400] [-sessions 1,20] [-milters tcp,unix] [-rss-size 50000000]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	pairs    int
	count    int
	sizes    []int
	sessions []int
	rssSize  int
	rssGoal  int64
	timeout  time.Duration
	milters  []string
	out      io.Writer
}

func main() {
	var o options
	var sizes, sessions, milters string
	flag.IntVar(&o.pairs, "pairs", 5, "rounds per configuration: one run of each setup, order rotating")
	flag.IntVar(&o.count, "count", 2000, "messages per run")
	flag.StringVar(&sizes, "sizes", "4096,102400", "message body sizes in bytes (smtp-source -l), comma-separated")
	flag.StringVar(&sessions, "sessions", "1,20", "concurrent SMTP sessions (smtp-source -s), comma-separated")
	flag.IntVar(&o.rssSize, "rss-size", 50_000_000, "size of the message for the memory measurement in bytes (0 skips it)")
	flag.Int64Var(&o.rssGoal, "rss-goal", 64<<20, "peak memory above idle that the memory measurement should stay under, in bytes")
	flag.DurationVar(&o.timeout, "run-timeout", 10*time.Minute, "limit for one run")
	flag.StringVar(&milters, "milters", "tcp,unix", "how Postfix reaches the milter in the setups with it (tcp, unix), comma-separated; each is compared with the same Postfix without the milter")
	flag.Parse()
	var err error
	if o.sizes, err = ints(sizes); err != nil {
		fatal("-sizes: %v", err)
	}
	if o.sessions, err = ints(sessions); err != nil {
		fatal("-sessions: %v", err)
	}
	for _, m := range strings.Split(milters, ",") {
		if m = strings.TrimSpace(m); m != "tcp" && m != "unix" {
			fatal("-milters: %q is not tcp or unix", m)
		}
		o.milters = append(o.milters, strings.TrimSpace(m))
	}
	if o.pairs < 1 || o.count < 1 {
		fatal("-pairs and -count must be at least 1")
	}
	o.out = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := &e2e.Main{}
	err = m.Run(func(tb e2e.TB) { bench(ctx, tb, o) })
	e2e.RemoveBuilt()
	if err != nil {
		os.Exit(1)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mtabench: "+format+"\n", args...)
	os.Exit(2)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// setup is one side of a pair: a Postfix → Dovecot path, with or without
// Lifeline's milter.
type setup struct {
	name string
	env  *e2e.Env
	next int // next unused bench mailbox
}

// run is the outcome of one smtp-source run.
type run struct {
	accepted  float64 // messages / wall time of smtp-source
	delivered float64 // messages / time until the last is in the maildir
}

type config struct{ size, sessions int }

func (c config) String() string { return fmt.Sprintf("%s × %d", sizeName(c.size), c.sessions) }

func bench(ctx context.Context, tb e2e.TB, o options) {
	runs := len(o.sizes) * len(o.sessions) * o.pairs
	// Each run delivers to a mailbox of its own, removed after the run, so
	// that maildirs do not grow over the whole benchmark.
	var users []string
	for i := 1; i <= runs; i++ {
		users = append(users, fmt.Sprintf("bench%03d", i))
	}
	users = append(users, "rss")
	tb.Logf("mtabench: starting Postfix, Dovecot and Lifeline (one setup without the milter, one per milter transport)")
	without := &setup{name: "without", env: e2e.Start(tb, e2e.Options{Users: users})}
	setups := []*setup{without}
	for _, m := range o.milters {
		lo := e2e.LifelineOptions{LogLevel: "warn", MilterUnix: m == "unix"}
		setups = append(setups, &setup{name: m, env: e2e.Start(tb, e2e.Options{Milter: true, Users: users, Lifeline: lo})})
	}

	fmt.Fprintf(o.out, "Postfix → Dovecot (LMTP, maildir), smtp-source, %d messages per run, %d rounds per configuration, order rotating.\n", o.count, o.pairs)
	fmt.Fprintf(o.out, "without = Postfix without smtpd_milters; tcp, unix = the same Postfix with Lifeline's milter (journaling every message) on a loopback port or a unix socket.\n\n")
	fmt.Fprintf(o.out, "%-16s %-5s %-7s %12s %12s\n", "config", "round", "setup", "accepted/s", "delivered/s")

	results := map[config][]map[*setup]run{}
	var order []config
	for _, size := range o.sizes {
		for _, sess := range o.sessions {
			c := config{size, sess}
			order = append(order, c)
			for p := 0; p < o.pairs; p++ {
				round := map[*setup]run{}
				for i := range setups {
					s := setups[(i+p)%len(setups)]
					if ctx.Err() != nil {
						tb.Fatalf("mtabench: interrupted")
					}
					r := measure(ctx, tb, s, c, o)
					fmt.Fprintf(o.out, "%-16s %-5d %-7s %12.1f %12.1f\n", c, p+1, s.name, r.accepted, r.delivered)
					round[s] = r
				}
				results[c] = append(results[c], round)
			}
		}
	}

	fmt.Fprintf(o.out, "\nSummary: median msg/s of each setup, and the median over rounds of the ratio with/without the milter (1.00 = no cost).\n")
	fmt.Fprintf(o.out, "%-16s %-6s %14s %14s %10s   %14s %14s %10s\n", "config", "milter", "accepted w/o", "accepted with", "ratio", "delivered w/o", "delivered with", "ratio")
	for _, c := range order {
		for _, with := range setups[1:] {
			var aw, ao, dw, do, ar, dr []float64
			for _, round := range results[c] {
				w, wo := round[with], round[without]
				aw, ao = append(aw, w.accepted), append(ao, wo.accepted)
				dw, do = append(dw, w.delivered), append(do, wo.delivered)
				ar = append(ar, w.accepted/wo.accepted)
				dr = append(dr, w.delivered/wo.delivered)
			}
			fmt.Fprintf(o.out, "%-16s %-6s %14.1f %14.1f %10.2f   %14.1f %14.1f %10.2f\n", c, with.name, median(ao), median(aw), median(ar), median(do), median(dw), median(dr))
		}
	}

	if o.rssSize > 0 && len(setups) > 1 {
		measureRSS(ctx, tb, setups[1], o)
	}
}

// measure runs smtp-source once against s and waits until every message is
// in the run's maildir and Postfix's queue is empty.
func measure(ctx context.Context, tb e2e.TB, s *setup, c config, o options) run {
	tb.Helper()
	env := s.env
	s.next++
	rcpt := env.Addr(fmt.Sprintf("bench%03d", s.next))
	maildir := env.Dovecot.Maildir(rcpt)
	// Both setups idle before a run: nothing left from the previous one.
	if err := env.Postfix.WaitQueueEmpty(ctx, o.timeout); err != nil {
		tb.Fatalf("mtabench: %s: before the run: %v", s.name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/smtp-source",
		"-s", strconv.Itoa(c.sessions), "-m", strconv.Itoa(o.count), "-l", strconv.Itoa(c.size),
		"-f", "bench@example.net", "-t", rcpt, "-M", "bench.lifeline.test", env.Postfix.SMTPAddr)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	acceptedIn := time.Since(start)
	if err != nil {
		tb.Fatalf("mtabench: smtp-source: %v\n%s", err, out)
	}
	var n int
	// Every 20 ms at most: the delivered rate is measured to within 1 %
	// of a run of a few seconds, and reading the directory costs little.
	err = e2e.PollUpTo(ctx, o.timeout, 20*time.Millisecond, func() (bool, error) {
		n, err = countNew(maildir)
		return n >= o.count, err
	})
	deliveredIn := time.Since(start)
	if err != nil {
		tb.Fatalf("mtabench: %s %s: %d of %d messages delivered: %v", s.name, c, n, o.count, err)
	}
	if n != o.count {
		tb.Fatalf("mtabench: %s %s: %d messages delivered, %d sent", s.name, c, n, o.count)
	}
	if err := env.Postfix.WaitQueueEmpty(ctx, o.timeout); err != nil {
		tb.Fatalf("mtabench: %s: %v", s.name, err)
	}
	// Nothing delivers to this mailbox any more.
	if err := os.RemoveAll(filepath.Dir(maildir)); err != nil {
		tb.Fatalf("mtabench: %v", err)
	}
	return run{
		accepted:  float64(o.count) / acceptedIn.Seconds(),
		delivered: float64(o.count) / deliveredIn.Seconds(),
	}
}

// countNew counts the messages in a maildir's new/ (smtp-source's mail is
// never read, so it stays there).
func countNew(maildir string) (int, error) {
	ents, err := os.ReadDir(filepath.Join(maildir, "new"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	return len(ents), err
}

// measureRSS sends one large message through the setup with the milter and
// reports Lifeline's peak resident memory above its idle level.
func measureRSS(ctx context.Context, tb e2e.TB, s *setup, o options) {
	tb.Helper()
	env := s.env
	pid := env.Lifeline.Pid()
	if err := env.Postfix.WaitQueueEmpty(ctx, o.timeout); err != nil {
		tb.Fatalf("mtabench: %v", err)
	}
	msg := e2e.CRLF(e2e.MessageOfSize(o.rssSize, "rss@example.test"))
	// Reset VmHWM to the current RSS so that the peak measured belongs to
	// this message, not to start-up or the throughput runs.
	if err := e2e.ResetPeak(pid); err != nil {
		tb.Fatalf("mtabench: %v", err)
	}
	idle, err := e2e.ReadMemory(pid)
	if err != nil {
		tb.Fatalf("mtabench: %v", err)
	}
	start := time.Now()
	// Postfix answers the end of DATA only after the milter's answer, which
	// Lifeline gives once the message is durable in the journal.
	if _, err := e2e.Send(ctx, env.Postfix.SMTPAddr, e2e.Mail{From: "rss@example.net", To: []string{env.Addr("rss")}, Data: msg}); err != nil {
		tb.Fatalf("mtabench: sending %s: %v", sizeName(len(msg)), err)
	}
	took := time.Since(start)
	after, err := e2e.ReadMemory(pid)
	if err != nil {
		tb.Fatalf("mtabench: %v", err)
	}
	above := after.Peak - idle.RSS
	verdict := "under"
	if above >= o.rssGoal {
		verdict = "NOT under"
	}
	fmt.Fprintf(o.out, "\nLifeline memory journaling one %s message (%.1f MB as sent, accepted in %v):\n", sizeName(o.rssSize), float64(len(msg))/1e6, took.Round(time.Millisecond))
	fmt.Fprintf(o.out, "  VmRSS idle before %.1f MiB, VmHWM during %.1f MiB, peak above idle %.1f MiB (%s the %.0f MiB goal)\n",
		mib(idle.RSS), mib(after.Peak), mib(above), verdict, mib(o.rssGoal))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func sizeName(n int) string {
	switch {
	case n >= 1e6 && n%1e6 == 0:
		return fmt.Sprintf("%d MB", n/1e6)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
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

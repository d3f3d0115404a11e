// Command imapbench measures how fast Lifeline's IMAP server hands a large
// mailbox to a client, beside Dovecot serving the same messages in the same
// run, and Lifeline's memory while it sends one very large message.
//
// It starts Postfix with Lifeline's milter, Dovecot and Lifeline (IMAP on,
// serve = "always"), sends -count messages (about -size bytes each, text, a
// few of -large-size among them) to one user through Postfix: Postfix
// delivers them to Dovecot over LMTP and the milter journals the same bytes.
// Then one client — go-imap v2's imapclient, the same code for both servers
// — logs in, selects INBOX and runs UID FETCH 1:* BODY.PEEK[] against each
// server, first once each to warm caches and indexes (not counted), then in
// -pairs pairs whose order alternates. It prints a markdown table of every
// run and the medians of messages/s and MB/s with the ratio
// Lifeline/Dovecot (the goal: at least 1.00).
//
// It also times -single messages fetched with one UID FETCH command each,
// one after the other (what mbsync does, with some pipelining), in the same
// alternating pairs: the cost of a command rather than of a byte.
//
// Finally it sends one -rss-size message, restarts Lifeline (so that the
// heap the fetches above left behind does not hide the message's cost),
// logs in once, resets Lifeline's peak RSS (/proc/PID/clear_refs), reads its
// idle VmRSS, fetches the message over IMAP and reads VmHWM: the peak above
// idle (the goal: under 64 MiB). It needs root (see package e2e).
//
//	go run ./e2e/imapbench [-count 10000] [-size 4096] [-large 5] [-large-size 1000000] [-pairs 3] [-single 1000] [-rss-size 50000000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/lifelinemail/lifeline/e2e"
)

type options struct {
	count     int
	size      int
	large     int
	largeSize int
	pairs     int
	single    int
	sessions  int
	rssSize   int
	rssGoal   int64
	timeout   time.Duration
	out       io.Writer
}

func main() {
	var o options
	flag.IntVar(&o.count, "count", 10000, "messages in the mailbox")
	flag.IntVar(&o.size, "size", 4096, "approximate size of most messages in bytes")
	flag.IntVar(&o.large, "large", 5, "how many of the messages are large")
	flag.IntVar(&o.largeSize, "large-size", 1_000_000, "approximate size of the large messages in bytes")
	flag.IntVar(&o.pairs, "pairs", 3, "paired fetches (Lifeline and Dovecot, order alternating)")
	flag.IntVar(&o.single, "single", 1000, "messages fetched with one UID FETCH command each, per run (0 skips it)")
	flag.IntVar(&o.sessions, "sessions", 20, "concurrent SMTP sessions filling the mailbox")
	flag.IntVar(&o.rssSize, "rss-size", 50_000_000, "size of the message for the memory measurement in bytes (0 skips it)")
	flag.Int64Var(&o.rssGoal, "rss-goal", 64<<20, "peak memory above idle that the memory measurement should stay under, in bytes")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "limit for filling the mailbox and for one fetch")
	flag.Parse()
	if o.count < 1 || o.pairs < 1 || o.sessions < 1 || o.size < 200 || o.large < 0 || o.large > o.count || o.single < 0 || o.single > o.count {
		fatal("-count, -pairs and -sessions must be at least 1, -size at least 200, -large and -single between 0 and -count")
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
	fmt.Fprintf(os.Stderr, "imapbench: "+format+"\n", args...)
	os.Exit(2)
}

// server is one side: an IMAP address and the login of the bench user.
type server struct {
	name, addr, user, pass string
}

// run is one timed fetch of the whole mailbox.
type run struct {
	msgs  int
	bytes int64
	took  time.Duration
}

func (r run) msgsPerSec() float64 { return float64(r.msgs) / r.took.Seconds() }
func (r run) mbPerSec() float64   { return float64(r.bytes) / 1e6 / r.took.Seconds() }

func bench(ctx context.Context, tb e2e.TB, o options) {
	const password = e2e.DefaultPassword // Dovecot's; Lifeline's passwd-file gets the same
	users := []string{"bench", "rss"}
	logins := map[string]string{}
	for _, u := range users {
		logins[u+"@"+e2e.DefaultDomain] = password
	}
	tb.Logf("imapbench: starting Postfix with Lifeline's milter, Dovecot and Lifeline (IMAP, serve = \"always\")")
	env := e2e.Start(tb, e2e.Options{
		Milter: true,
		Users:  users,
		Lifeline: e2e.LifelineOptions{
			LogLevel: "warn",
			Sidecar:  &e2e.SidecarOptions{Serve: e2e.ServeAlways, Users: logins},
		},
	})
	benchUser := env.Addr("bench")
	lifeline := server{"Lifeline", env.Lifeline.IMAPAddr, benchUser, password}
	dovecot := server{"Dovecot", env.Dovecot.IMAPAddr, benchUser, password}

	fill(ctx, tb, env, o, benchUser)

	fmt.Fprintf(o.out, "\n## IMAP: UID FETCH 1:* BODY.PEEK[] of a %d-message mailbox, Lifeline beside Dovecot\n\n", o.count)
	fmt.Fprintf(o.out, "Messages of about %d bytes (%d of about %d bytes), sent through Postfix: Dovecot 2.3 stores them (maildir, via LMTP), "+
		"Lifeline journals the same bytes (milter). One client (go-imap v2 imapclient) for both; login and SELECT are not timed. "+
		"Each server's bytes are its own BODY[] literals (Dovecot's copies carry the Return-Path, Delivered-To and Received lines of delivery). "+
		"Machine: %s, other processes running; warm-up runs are not counted.\n\n",
		o.size, o.large, o.largeSize, machine())
	fmt.Fprintf(o.out, "| run | server | messages | MB | seconds | msgs/s | MB/s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(label string, s server, r run) {
		fmt.Fprintf(o.out, "| %s | %s | %d | %.1f | %.2f | %.0f | %.1f |\n", label, s.name, r.msgs, float64(r.bytes)/1e6, r.took.Seconds(), r.msgsPerSec(), r.mbPerSec())
	}
	for _, s := range []server{dovecot, lifeline} {
		row("warm-up", s, fetchAll(ctx, tb, s, o))
	}
	bulk := pairs(ctx, tb, o, lifeline, dovecot, "", fetchAll, row)
	var single summary
	if o.single > 0 {
		single = pairs(ctx, tb, o, lifeline, dovecot, fmt.Sprintf(" (%d × UID FETCH n)", o.single), fetchEach, row)
	}
	fmt.Fprintf(o.out, "\nMedians over %d pairs (ratio: median of the per-pair ratios Lifeline/Dovecot; goal ≥ 1.00):\n\n", o.pairs)
	fmt.Fprintf(o.out, "| | Dovecot | Lifeline | ratio |\n| --- | ---: | ---: | ---: |\n")
	fmt.Fprintf(o.out, "| UID FETCH 1:* msgs/s | %.0f | %.0f | %.2f |\n", median(bulk.dm), median(bulk.lm), median(bulk.rm))
	fmt.Fprintf(o.out, "| UID FETCH 1:* MB/s | %.1f | %.1f | %.2f |\n", median(bulk.db), median(bulk.lb), median(bulk.rb))
	if o.single > 0 {
		fmt.Fprintf(o.out, "| one UID FETCH per message, msgs/s | %.0f | %.0f | %.2f |\n", median(single.dm), median(single.lm), median(single.rm))
	}

	if o.rssSize > 0 {
		measureRSS(ctx, tb, env, o, server{"Lifeline", env.Lifeline.IMAPAddr, env.Addr("rss"), password})
	}
	page, err := env.Lifeline.Metrics()
	if err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	if n, ok := e2e.MetricSum(page, "lifeline_panics_total"); ok && n != 0 {
		tb.Errorf("imapbench: lifeline_panics_total = %v", n)
	}
}

// summary holds per-pair figures: messages/s and MB/s of each server and
// their ratios Lifeline/Dovecot.
type summary struct{ lm, dm, lb, db, rm, rb []float64 }

// pairs runs measure against both servers o.pairs times, the order
// alternating, and prints each run.
func pairs(ctx context.Context, tb e2e.TB, o options, lifeline, dovecot server, label string,
	measure func(context.Context, e2e.TB, server, options) run, row func(string, server, run)) summary {
	var s summary
	for p := 0; p < o.pairs; p++ {
		order := []server{lifeline, dovecot}
		if p%2 == 1 {
			order = []server{dovecot, lifeline}
		}
		var l, d run
		for _, srv := range order {
			r := measure(ctx, tb, srv, o)
			row(fmt.Sprintf("pair %d%s", p+1, label), srv, r)
			if srv == lifeline {
				l = r
			} else {
				d = r
			}
		}
		s.lm, s.dm = append(s.lm, l.msgsPerSec()), append(s.dm, d.msgsPerSec())
		s.lb, s.db = append(s.lb, l.mbPerSec()), append(s.db, d.mbPerSec())
		s.rm, s.rb = append(s.rm, l.msgsPerSec()/d.msgsPerSec()), append(s.rb, l.mbPerSec()/d.mbPerSec())
	}
	return s
}

// fill sends the messages through Postfix and waits until Dovecot has stored
// them all and Lifeline's IMAP server lists them all.
func fill(ctx context.Context, tb e2e.TB, env *e2e.Env, o options, to string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	large := map[int]bool{}
	for i := 0; i < o.large; i++ {
		large[(i+1)*o.count/(o.large+1)] = true
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var sent atomic.Int64
	for range o.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > o.count || ctx.Err() != nil {
					return
				}
				var data []byte
				if large[i] {
					data = e2e.CRLF(e2e.MessageOfSize(o.largeSize, to))
				} else {
					data = textMessage(i, o.size, to)
				}
				n := len(data)
				if _, err := e2e.Send(ctx, env.Postfix.SMTPAddr, e2e.Mail{From: "bench@example.net", To: []string{to}, Data: data}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("message %d: %w", i, err))
					mu.Unlock()
					return
				}
				sent.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("imapbench: sending: %v", errors.Join(errs...))
	}
	accepted := time.Since(start)
	maildir := env.Dovecot.Maildir(to)
	var n int
	err := e2e.Poll(ctx, o.timeout, func() (bool, error) {
		var err error
		n, err = e2e.CountMaildir(maildir)
		return n >= o.count, err
	})
	if err != nil || n != o.count {
		tb.Fatalf("imapbench: Dovecot has %d of %d messages: %v", n, o.count, err)
	}
	if err := env.Postfix.WaitQueueEmpty(ctx, o.timeout); err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	if err := e2e.WaitIMAPCount(ctx, env.Lifeline.IMAPAddr, to, e2e.DefaultPassword, uint32(o.count), time.Minute); err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	tb.Logf("imapbench: %d messages (%.1f MB as sent) accepted in %v, in both stores after %v",
		o.count, float64(sent.Load())/1e6, accepted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// words make the generated bodies look like text (compressible as mail
// is), with a different sequence in every message.
var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which but have an they
you were her she there been one all we their has would when if so no will more can out up other into them could some about time
mailbox server outage message delivery journal recovery postfix dovecot lifeline continuity custody replay backup invoice meeting
report quarterly schedule attached please find regards thanks tomorrow project budget review draft final update customer order`)

// textMessage returns message i: headers and a plain-text body of about
// size bytes in 72-column lines, CRLF.
func textMessage(i, size int, to string) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 0x1f1e))
	var b strings.Builder
	b.Grow(size + 100)
	fmt.Fprintf(&b, "Message-ID: <bench-%d@imapbench.lifeline.test>\r\nDate: %s\r\nFrom: Bench Sender <bench@example.net>\r\nTo: %s\r\nSubject: benchmark message %d\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", i, time.Now().Format(time.RFC1123Z), to, i)
	line := 0
	for b.Len() < size {
		w := words[r.IntN(len(words))]
		if line+len(w)+1 > 72 {
			b.WriteString("\r\n")
			line = 0
		} else if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// fetchAll logs in to s, selects INBOX and times UID FETCH 1:* BODY.PEEK[],
// reading every literal to the end.
func fetchAll(ctx context.Context, tb e2e.TB, s server, o options) run {
	tb.Helper()
	return session(ctx, tb, s, o, func(c *imapclient.Client, sel *imap.SelectData) run {
		var r run
		start := time.Now()
		var err error
		r.msgs, err = e2e.IMAPFetchBodies(c, e2e.AllUIDs, func(_ imap.UID, body io.Reader) error {
			n, err := io.Copy(io.Discard, body)
			r.bytes += n
			return err
		})
		r.took = time.Since(start)
		if err != nil {
			tb.Fatalf("imapbench: %s: UID FETCH: %v", s.name, err)
		}
		if r.msgs != int(sel.NumMessages) {
			tb.Fatalf("imapbench: %s: fetched %d bodies of %d messages", s.name, r.msgs, sel.NumMessages)
		}
		return r
	})
}

// fetchEach times o.single UID FETCH n BODY.PEEK[] commands, one after the
// other, for the first o.single UIDs.
func fetchEach(ctx context.Context, tb e2e.TB, s server, o options) run {
	tb.Helper()
	return session(ctx, tb, s, o, func(c *imapclient.Client, sel *imap.SelectData) run {
		var r run
		start := time.Now()
		for uid := imap.UID(1); uid <= imap.UID(o.single); uid++ {
			n, err := e2e.IMAPFetchBodies(c, imap.UIDSetNum(uid), func(_ imap.UID, body io.Reader) error {
				n, err := io.Copy(io.Discard, body)
				r.bytes += n
				return err
			})
			if err != nil || n != 1 {
				tb.Fatalf("imapbench: %s: UID FETCH %d: %d bodies, %v", s.name, uid, n, err)
			}
			r.msgs++
		}
		r.took = time.Since(start)
		return r
	})
}

// session logs in to s, selects INBOX read-only, runs f and logs out.
func session(ctx context.Context, tb e2e.TB, s server, o options, f func(*imapclient.Client, *imap.SelectData) run) run {
	tb.Helper()
	if ctx.Err() != nil {
		tb.Fatalf("imapbench: interrupted")
	}
	c, err := e2e.IMAPLogin(s.addr, nil, s.user, s.pass)
	if err != nil {
		tb.Fatalf("imapbench: %s: %v", s.name, err)
	}
	defer c.Close()
	// A fetch that hangs must not hang the benchmark.
	timer := time.AfterFunc(o.timeout, func() { c.Close() })
	defer timer.Stop()
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		tb.Fatalf("imapbench: %s: SELECT INBOX: %v", s.name, err)
	}
	r := f(c, sel)
	if err := c.Logout().Wait(); err != nil {
		tb.Errorf("imapbench: %s: LOGOUT: %v", s.name, err)
	}
	return r
}

// measureRSS journals one large message and reports Lifeline's peak RSS
// above idle while a client fetches it over IMAP.
func measureRSS(ctx context.Context, tb e2e.TB, env *e2e.Env, o options, s server) {
	tb.Helper()
	msg := e2e.CRLF(e2e.MessageOfSize(o.rssSize, s.user))
	if _, err := e2e.Send(ctx, env.Postfix.SMTPAddr, e2e.Mail{From: "rss@example.net", To: []string{s.user}, Data: msg}); err != nil {
		tb.Fatalf("imapbench: sending the %d-byte message: %v", len(msg), err)
	}
	if err := e2e.WaitIMAPCount(ctx, s.addr, s.user, s.pass, 1, time.Minute); err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	// Let Dovecot's delivery of it settle, then restart Lifeline: its heap
	// still holds what the fetches above left, which would hide the cost
	// of this one. One login first, so that idle includes a session's
	// set-up.
	if err := env.Postfix.WaitQueueEmpty(ctx, o.timeout); err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	env.Lifeline.Restart(tb)
	if err := e2e.WaitIMAPCount(ctx, s.addr, s.user, s.pass, 1, time.Minute); err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	pid := env.Lifeline.Pid()
	reset := "VmHWM reset (clear_refs) before the fetch"
	if err := e2e.ResetPeak(pid); err != nil {
		// Then VmHWM includes everything since start, and the figure is an
		// upper bound.
		reset = fmt.Sprintf("VmHWM could not be reset (%v): the peak is since start, an upper bound", err)
	}
	idle, err := e2e.ReadMemory(pid)
	if err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	r := fetchAll(ctx, tb, s, o)
	after, err := e2e.ReadMemory(pid)
	if err != nil {
		tb.Fatalf("imapbench: %v", err)
	}
	// Postfix's cleanup adds the Message-Id and Date the message lacks.
	if r.msgs != 1 || r.bytes < int64(len(msg)) || r.bytes > int64(len(msg))+1024 {
		tb.Errorf("imapbench: fetched %d messages, %d bytes; want 1 of about %d bytes", r.msgs, r.bytes, len(msg))
	}
	above := after.Peak - idle.RSS
	verdict := "under"
	if above >= o.rssGoal {
		verdict = "NOT under"
	}
	fmt.Fprintf(o.out, "\n## Lifeline memory while one %.1f MB message is fetched over IMAP (%.1f MB/s)\n\n", float64(len(msg))/1e6, r.mbPerSec())
	fmt.Fprintf(o.out, "| VmRSS idle before | VmHWM during | peak above idle | goal |\n| ---: | ---: | ---: | --- |\n")
	fmt.Fprintf(o.out, "| %.1f MiB | %.1f MiB | %.1f MiB | %s %.0f MiB |\n\n%s.\n", mib(idle.RSS), mib(after.Peak), mib(above), verdict, mib(o.rssGoal), reset)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func machine() string {
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%d CPUs, load average %s (1, 5, 15 min) when the fetches began, this run's own filling included", runtime.NumCPU(), load)
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

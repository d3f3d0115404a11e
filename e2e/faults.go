package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// This file holds the fault-injection harness (issue 8): a load generator
// that streams uniquely identified messages into an MTA and records which
// ones were acknowledged, a chaos helper that injects a fault at random
// moments, an LMTP proxy that answers 451 on demand, and the accounting that
// tells what became of every acknowledged message.

// LoadOptions configures StartLoad.
type LoadOptions struct {
	Addr    string // the MTA's SMTP listener, 127.0.0.1:PORT
	Workers int    // concurrent connections (default 2)
	// Recipients returns the envelope recipients of the i-th message (i
	// from 1); each must be a mailbox address (no +detail), as the ledger
	// expects one copy in each.
	Recipients func(i int) []string
	// Max stops after that many fresh messages (0: until Stop).
	Max int
	// Retry4xx sends a message refused with a 4xx reply again later, with
	// the same id, as a sending MTA does (RFC 5321 §4.5.4.1); without it a
	// 4xx leaves the message unacknowledged like any other failure.
	Retry4xx bool
	// RetryDelay is the wait before such a retry (default 200ms), and the
	// pause of a worker after a failed connection (Postfix restarting).
	RetryDelay time.Duration
	// Pace is the least time between the starts of one worker's messages
	// (0: as fast as the MTA answers); it keeps a short run's CPU and
	// message count down on a shared machine.
	Pace time.Duration
}

// Attempt is one message the load generator sent.
type Attempt struct {
	ID         string
	To         []string
	Start, End time.Time // of the attempt that got the final answer
	QueueID    string    // Postfix's, when acknowledged
	Tries      int
	Err        string // the last error when not acknowledged
}

// Load streams uniquely identified messages into an MTA over several
// connections until stopped. Only a message the MTA acknowledged (250 after
// the end of DATA, RFC 5321 §4.1.1.4) is entered in the ledger: anything
// else is the sender's to retry, not the MTA's to deliver.
type Load struct {
	opts   LoadOptions
	ledger *Ledger
	n      atomic.Int64 // fresh messages begun
	stop   chan struct{}
	done   chan struct{}

	mu        sync.Mutex
	acked     []Attempt
	unacked   map[string]Attempt // id → last failed attempt, dropped
	pending   []Attempt          // refused with 4xx, to be retried
	inFlight  int                // pending retries taken by a worker
	turn      int                // alternates retries and fresh messages
	tempfails int                // 4xx replies
	failures  int                // other failed attempts
}

// StartLoad starts opts.Workers senders; Stop ends them.
func StartLoad(ctx context.Context, l *Ledger, opts LoadOptions) *Load {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 200 * time.Millisecond
	}
	g := &Load{opts: opts, ledger: l, stop: make(chan struct{}), done: make(chan struct{}), unacked: map[string]Attempt{}}
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.work(ctx)
		}()
	}
	go func() { wg.Wait(); close(g.done) }()
	return g
}

// next returns the next message to send: a retry that is due or a fresh
// message (unless stopped or at Max), taking turns; ok is false when the
// worker should end, and wait > 0 when it should wait for a retry to come
// due.
func (g *Load) next() (a Attempt, wait time.Duration, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	due := func() (Attempt, bool) {
		now := time.Now()
		for i, p := range g.pending {
			if !p.End.Add(g.opts.RetryDelay).After(now) {
				g.pending = append(g.pending[:i], g.pending[i+1:]...)
				g.inFlight++
				return p, true
			}
		}
		return Attempt{}, false
	}
	stopped := false
	select {
	case <-g.stop:
		stopped = true
	default:
	}
	fresh := !stopped && (g.opts.Max == 0 || g.n.Load() < int64(g.opts.Max))
	// Retries and fresh messages take turns, so that neither starves the
	// other while the MTA refuses everything.
	g.turn++
	if !fresh || g.turn%2 == 0 {
		if p, ok := due(); ok {
			return p, 0, true
		}
	}
	if fresh {
		i := int(g.n.Add(1))
		return Attempt{ID: g.ledger.NewID(), To: g.opts.Recipients(i)}, 0, true
	}
	if len(g.pending) > 0 || g.inFlight > 0 {
		return Attempt{}, g.opts.RetryDelay / 4, true // retries still to come
	}
	return Attempt{}, 0, false
}

func (g *Load) work(ctx context.Context) {
	for ctx.Err() == nil {
		a, wait, ok := g.next()
		if !ok {
			return
		}
		if wait > 0 {
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		retry := a.Tries > 0
		a.Tries++
		// Message-ID and the test id are the same, as in the outage tests.
		data := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\nFrom: sender@example.net\nTo: %s\nSubject: fault test %s\n\nmessage %s\n",
			a.ID, strings.Join(a.To, ", "), a.ID, a.ID)
		a.Start = time.Now()
		res, err := Send(ctx, g.opts.Addr, Mail{From: "sender@example.net", To: a.To, Data: WithTestID(a.ID, []byte(data))})
		a.End = time.Now()
		var se *SMTPError
		pause := err != nil
		g.mu.Lock()
		if retry {
			g.inFlight--
		}
		switch {
		case err == nil:
			a.QueueID = res.QueueID
			a.Err = ""
			delete(g.unacked, a.ID)
			g.acked = append(g.acked, a)
			g.ledger.Expect(a.ID, a.To...)
		case errors.As(err, &se) && se.Code >= 400 && se.Code < 500:
			g.tempfails++
			a.Err = err.Error()
			if g.opts.Retry4xx && ctx.Err() == nil {
				// Its retry waits in pending; the worker goes on with
				// the next message meanwhile.
				g.pending = append(g.pending, a)
				pause = false
			} else {
				g.unacked[a.ID] = a
			}
		default:
			g.failures++
			a.Err = err.Error()
			g.unacked[a.ID] = a
		}
		g.mu.Unlock()
		if pause && !sleepCtx(ctx, g.opts.RetryDelay) {
			return
		}
		if rest := g.opts.Pace - time.Since(a.Start); !pause && rest > 0 && !sleepCtx(ctx, rest) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Stop ends the fresh messages and waits until the workers have returned;
// with Retry4xx they first retry what is pending until it is acknowledged
// or ctx ends.
func (g *Load) Stop() {
	g.mu.Lock()
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.mu.Unlock()
	<-g.done
}

// Begun returns how many fresh messages were begun (retries not counted).
func (g *Load) Begun() int { return int(g.n.Load()) }

// Done is closed when every worker has returned: after Stop, or once Max
// messages are begun and every retry is acknowledged or given up.
func (g *Load) Done() <-chan struct{} { return g.done }

// Acked returns how many messages were acknowledged so far.
func (g *Load) Acked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.acked)
}

// WaitAcked polls until at least n messages are acknowledged.
func (g *Load) WaitAcked(ctx context.Context, n int, timeout time.Duration) error {
	if err := Poll(ctx, timeout, func() (bool, error) { return g.Acked() >= n, nil }); err != nil {
		return fmt.Errorf("load: %d of %d messages acknowledged: %w (%s)", g.Acked(), n, err, g)
	}
	return nil
}

// Acknowledged returns the acknowledged attempts, in order.
func (g *Load) Acknowledged() []Attempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Attempt(nil), g.acked...)
}

// Unacknowledged returns the messages given up without a 250, by id.
func (g *Load) Unacknowledged() map[string]Attempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := make(map[string]Attempt, len(g.unacked))
	for k, v := range g.unacked {
		m[k] = v
	}
	return m
}

// Tempfails returns the number of 4xx replies the senders got.
func (g *Load) Tempfails() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tempfails
}

func (g *Load) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fmt.Sprintf("%d acknowledged, %d 4xx replies, %d other failures, %d unacknowledged, %d waiting for a retry",
		len(g.acked), g.tempfails, g.failures, len(g.unacked), len(g.pending)+g.inFlight)
}

// Chaos injects a fault at random moments: the gap before each is drawn
// uniformly from [MinGap, MaxGap). The seed is in the struct so that a
// failing run can be repeated (LIFELINE_FAULTS_SEED in the tests). It is
// not safe for concurrent use: one test goroutine drives it.
type Chaos struct {
	Seed           uint64
	MinGap, MaxGap time.Duration
	rng            *rand.Rand
}

// NewChaos returns a Chaos drawing from seed.
func NewChaos(seed uint64, minGap, maxGap time.Duration) *Chaos {
	return &Chaos{Seed: seed, MinGap: minGap, MaxGap: maxGap, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Gap draws the next random gap.
func (c *Chaos) Gap() time.Duration {
	if c.MaxGap <= c.MinGap {
		return c.MinGap
	}
	return c.MinGap + time.Duration(c.rng.Int64N(int64(c.MaxGap-c.MinGap)))
}

// Run calls fault n times, each after a random gap, in the caller's
// goroutine; it stops at the first error or when ctx ends. fault may return
// ErrChaosDone to end early (the condition the faults need has passed).
func (c *Chaos) Run(ctx context.Context, n int, fault func(i int) error) (int, error) {
	for i := range n {
		if !sleepCtx(ctx, c.Gap()) {
			return i, ctx.Err()
		}
		if err := fault(i); err != nil {
			if errors.Is(err, ErrChaosDone) {
				return i, nil
			}
			return i, err
		}
	}
	return n, nil
}

// ErrChaosDone ends Chaos.Run early without an error.
var ErrChaosDone = errors.New("chaos: done")

// LMTPFaultProxy is an LMTP server (RFC 2033) that passes every transaction
// on to a real LMTP server, except that while Faulting is set it answers 451
// to RCPT TO for every recipient Exempt does not spare (a health probe's
// canary, say): a mailbox server that is up but temporarily refuses
// deliveries. The whole message is read before the backend is dialled, so a
// transaction the backend refuses leaves nothing behind.
type LMTPFaultProxy struct {
	// Exempt, when set, spares recipients from the injected 451.
	Exempt func(rcpt string) bool

	log      *slog.Logger
	srv      *smtp.Server
	backend  atomic.Pointer[string]
	faulting atomic.Bool
	refused  atomic.Int64
	passed   atomic.Int64
}

// NewLMTPFaultProxy returns a proxy; Serve starts it, SetBackend names the
// real server (until then every transaction gets 451).
func NewLMTPFaultProxy(log *slog.Logger) *LMTPFaultProxy {
	p := &LMTPFaultProxy{log: log}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &faultSession{p: p}, nil }))
	s.LMTP = true
	s.Domain = "fault-proxy.lifeline.test"
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	s.MaxMessageBytes = 64 << 20
	s.MaxRecipients = 1000
	p.srv = s
	return p
}

// Serve answers connections on ln until Shutdown.
func (p *LMTPFaultProxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(ln)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for open sessions up to ctx.
func (p *LMTPFaultProxy) Shutdown(ctx context.Context) error { return p.srv.Shutdown(ctx) }

// SetBackend names the real LMTP server, 127.0.0.1:PORT.
func (p *LMTPFaultProxy) SetBackend(addr string) { p.backend.Store(&addr) }

// SetFaulting turns the injected 451 on or off.
func (p *LMTPFaultProxy) SetFaulting(on bool) { p.faulting.Store(on) }

// Refused is how many RCPT TO got the injected 451.
func (p *LMTPFaultProxy) Refused() int64 { return p.refused.Load() }

// Passed is how many recipients the backend accepted after DATA.
func (p *LMTPFaultProxy) Passed() int64 { return p.passed.Load() }

type faultSession struct {
	p     *LMTPFaultProxy
	from  string
	mopts *smtp.MailOptions
	rcpts []string
}

func (s *faultSession) Reset()        { s.from, s.mopts, s.rcpts = "", nil, nil }
func (s *faultSession) Logout() error { return nil }

func (s *faultSession) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.mopts = from, opts
	return nil
}

// injected451 is what the proxy answers while faulting: RFC 5321 §4.2.2 451
// "local error in processing" with the RFC 3463 enhanced code 4.3.0, a
// transient mail system failure.
var injected451 = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "injected fault: try again later"}

func (s *faultSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.p.faulting.Load() && (s.p.Exempt == nil || !s.p.Exempt(to)) {
		s.p.refused.Add(1)
		return injected451
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *faultSession) Data(r io.Reader) error {
	_, _ = io.Copy(io.Discard, r)
	return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "LMTP only"}
}

// LMTPData relays the transaction and hands back the backend's reply for
// each recipient (RFC 2033 §4.2: one reply per accepted RCPT).
func (s *faultSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("fault proxy: reading DATA: %w", err)
	}
	tempfail := func(err error) error {
		s.p.log.Warn("fault proxy: backend failed", "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "backend: " + err.Error()}
	}
	addr := s.p.backend.Load()
	if addr == nil {
		return tempfail(errors.New("no backend yet"))
	}
	conn, err := net.DialTimeout("tcp", *addr, 10*time.Second)
	if err != nil {
		return tempfail(err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("fault-proxy.lifeline.test"); err != nil {
		return tempfail(err)
	}
	if err := c.Mail(s.from, s.mopts); err != nil {
		return tempfail(err)
	}
	var accepted []string
	for _, rc := range s.rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			status.SetStatus(rc, err)
			continue
		}
		accepted = append(accepted, rc)
	}
	if len(accepted) == 0 {
		return nil // every recipient has its status
	}
	w, err := c.Data()
	if err != nil {
		return tempfail(err)
	}
	if _, err := w.Write(body); err != nil {
		return tempfail(err)
	}
	resp, err := w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if err != nil && !errors.As(err, &lerr) {
		return tempfail(err)
	}
	for _, rc := range accepted {
		if e, ok := lerr[rc]; ok {
			status.SetStatus(rc, e)
			continue
		}
		if _, ok := resp[rc]; ok {
			s.p.passed.Add(1)
			status.SetStatus(rc, nil)
			continue
		}
		status.SetStatus(rc, tempfail(fmt.Errorf("no reply for %s", rc)))
	}
	// Every recipient has its reply; a failed QUIT changes none of them.
	_ = c.Quit()
	return nil
}

// ViaCustody splits the delivered copies of the ledger's messages into those
// Postfix delivered and those Lifeline's replay delivered from custody. A
// copy Postfix delivered carries its smtpd's "Received: … (Postfix) with
// ESMTP id" line; the journal never has it (Postfix does not show it to
// milters, see README.md), so a replayed copy does not either.
func ViaCustody(r *Report) (custody map[string]map[string]int, err error) {
	custody = map[string]map[string]int{} // mailbox → id → replayed copies
	for box, byID := range r.Files {
		for id, files := range byID {
			if id == "" {
				continue
			}
			for _, f := range files {
				pf, err := deliveredByPostfix(f)
				if err != nil {
					if os.IsNotExist(err) {
						continue
					}
					return nil, err
				}
				if !pf {
					if custody[box] == nil {
						custody[box] = map[string]int{}
					}
					custody[box][id]++
				}
			}
		}
	}
	return custody, nil
}

// deliveredByPostfix reports whether a maildir file's header section has
// Postfix smtpd's Received line.
func deliveredByPostfix(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if bytes.Contains(line, []byte("(Postfix) with ESMTP")) {
			return true, nil
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 || err != nil {
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
				return false, err
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			return false, nil
		}
	}
}

// FaultRow is one scenario's line in the fault suite's summary.
type FaultRow struct {
	Scenario     string
	Faults       int // kills, restarts, … injected
	Acked        int // messages acknowledged with 250
	Expected     int // deliveries the ledger expects (message × mailbox)
	Delivered    int // expected deliveries found at least once
	ViaCustody   int // of those, delivered by Lifeline's replay
	Duplicates   int // deliveries found more than once
	Excused      int // of those, explained (Postfix's own retry, in flight at a kill)
	Missing      int
	Unacked      int // messages the senders gave up without a 250
	Tempfails    int // 4xx replies the senders got
	JournalCheck string
}

// FaultTable formats rows as a markdown table.
func FaultTable(rows []FaultRow) string {
	var b strings.Builder
	b.WriteString("| scenario | faults | acknowledged | deliveries expected | delivered | via custody | duplicates (excused) | missing | unacknowledged | 4xx replies | journal |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Scenario < rows[j].Scenario })
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d (%d) | %d | %d | %d | %s |\n",
			r.Scenario, r.Faults, r.Acked, r.Expected, r.Delivered, r.ViaCustody, r.Duplicates, r.Excused, r.Missing, r.Unacked, r.Tempfails, r.JournalCheck)
	}
	return b.String()
}

// RestartPostfix stops Postfix (SIGTERM to its master, what `postfix stop`
// sends; Stop waits for every daemon to exit) and starts it again with the
// same config and queue, ready when smtpd greets.
func RestartPostfix(ctx context.Context, p *Postfix) error {
	if err := p.Stop(); err != nil {
		return fmt.Errorf("restart postfix: %w", err)
	}
	p.stopped = false // the test's cleanup stops the new master
	if out, err := p.Command(ctx, "postfix", "start"); err != nil {
		return fmt.Errorf("restart postfix: %w: %s", err, out)
	}
	return WaitGreeting(ctx, p.SMTPAddr, "220 ", 30*time.Second)
}

package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
	"golang.org/x/time/rate"
)

// queue is the scheduler of one server: one goroutine that walks the
// custody queue and Concurrency workers that run the transactions. It sleeps
// on a timer to the next due recipient or on the wake channel, like a mail
// queue manager, and never polls.
type queue struct {
	r       *Replayer
	srv     Server
	log     *slog.Logger
	d       *Deliverer
	wake    chan struct{}
	jobs    chan *job
	limiter *rate.Limiter

	mu   sync.Mutex
	prog ServerProgress
	// pending holds outcomes whose journal write failed, by message: the
	// next time the message comes up they are written instead of delivering
	// it again.
	pending map[journal.ID][]journal.Change
}

// job is one transaction: one message, its due recipients of this server.
type job struct {
	seq   uint64
	id    journal.ID
	rcpts []int
	pass  *passState
}

// passState collects what the workers report during one pass.
type passState struct {
	wg          sync.WaitGroup
	mu          sync.Mutex
	recorded    int       // transactions whose outcome was written
	journalErrs int       // jobs that failed on the journal
	outage      bool      // a worker found the server in outage
	unreachable bool      // a connection could not be made
	nextRetry   time.Time // earliest NextAttempt written
}

func (p *passState) report(o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch o.kind {
	case outRecorded:
		p.recorded++
	case outJournalErr:
		p.journalErrs++
	case outOutage:
		p.outage = true
	}
	if o.unreachable {
		p.unreachable = true
	}
	if !o.nextRetry.IsZero() && (p.nextRetry.IsZero() || o.nextRetry.Before(p.nextRetry)) {
		p.nextRetry = o.nextRetry
	}
}

type outcomeKind int

const (
	outSkipped     outcomeKind = iota // nothing to do (state changed meanwhile)
	outRecorded                       // delivered and the outcome written
	outJournalErr                     // the journal failed; back off
	outOutage                         // the server went into outage; pause
	outInterrupted                    // shutting down
)

type outcome struct {
	kind        outcomeKind
	unreachable bool
	nextRetry   time.Time
}

// passResult is what one walk found.
type passResult struct {
	backlog     int
	oldest      time.Time
	walked      bool      // the walk saw the whole queue (the counts are complete)
	nextDue     time.Time // earliest NextAttempt in the future
	dispatched  int
	recorded    int  // transactions whose outcome was written
	interrupted bool // stopped early: outage, shutdown
	backoff     bool // the journal or the server failed: wait before the next pass
	err         error
}

var errPage = errors.New("page full")

func (q *queue) inOutage() bool {
	return q.r.opts.Outage != nil && q.r.opts.Outage.InOutage(q.srv.Name)
}

// serve is the scheduler loop; it returns when the Replayer stops.
func (q *queue) serve(ctx context.Context) {
	var workers sync.WaitGroup
	for i := 0; i < q.r.opts.Concurrency; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range q.jobs {
				o := q.safeProcess(ctx, j)
				j.pass.report(o)
				j.pass.wg.Done()
			}
		}()
	}
	defer workers.Wait()
	defer close(q.jobs)

	var settle time.Time // when to look once more after a Wake
	for {
		if q.r.stopping() || ctx.Err() != nil {
			return
		}
		if q.inOutage() {
			q.setPaused(true)
			// The backlog keeps growing during an outage; keep the gauges
			// and `lifeline status` current.
			began := time.Now()
			res := q.count(ctx)
			if res.err != nil && ctx.Err() == nil {
				q.log.Warn("counting custody backlog", "err", res.err)
			}
			if q.sleep(ctx, countInterval(time.Since(began), q.r.opts.BacklogRefresh)) {
				settle = time.Now().Add(q.r.opts.Settle)
			}
			continue
		}
		q.setPaused(false)
		res := q.pass(ctx)
		if res.err != nil && ctx.Err() == nil {
			q.log.Error("walking custody queue", "err", res.err)
		}
		if res.walked {
			q.setBacklog(res)
		}
		if res.interrupted {
			continue // outage or stop: the top of the loop decides
		}
		var wait time.Duration
		switch {
		case res.backoff || res.err != nil:
			// The journal or the server failed: do not spin on it.
			wait = min(q.r.opts.RetryMin, 30*time.Second)
		case res.recorded > 0:
			// Look again at once: the walk that finds nothing due is the one
			// that gives the true backlog and the next due time. (Only after
			// progress: custody entries that turn out to need nothing must
			// not make this loop spin.)
			continue
		default:
			if res.dispatched > 0 {
				q.log.Warn("custody entries dispatched but nothing to deliver; the custody index may disagree with the messages",
					"dispatched", res.dispatched)
			}
			now := q.r.opts.Clock()
			if res.walked && res.backlog == 0 {
				q.finishRun(ctx, now)
			}
			wait = q.r.opts.Rescan
			if !res.nextDue.IsZero() {
				wait = min(wait, res.nextDue.Sub(now))
			}
			if !settle.IsZero() {
				wait = min(wait, time.Until(settle))
				if time.Until(settle) <= 0 {
					settle = time.Time{}
					continue
				}
			}
		}
		q.mu.Lock()
		q.prog.NextAttempt = res.nextDue
		q.mu.Unlock()
		if q.sleep(ctx, wait) {
			settle = time.Now().Add(q.r.opts.Settle)
		}
	}
}

// countInterval is how long a paused queue waits before it recounts its
// backlog: often enough that `lifeline status` follows a growing backlog
// (every 2 s), but never spending more than a tenth of the time walking the
// custody index, and at most refresh.
func countInterval(took, refresh time.Duration) time.Duration {
	return min(max(2*time.Second, 10*took), refresh)
}

// sleep waits for d, a Wake or the end; it reports whether it was woken.
func (q *queue) sleep(ctx context.Context, d time.Duration) (woken bool) {
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-q.wake:
		return true
	case <-q.r.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

func (q *queue) setPaused(p bool) {
	q.mu.Lock()
	q.prog.Paused = p
	q.mu.Unlock()
}

func (q *queue) setBacklog(res passResult) {
	q.mu.Lock()
	q.prog.Backlog = res.backlog
	q.prog.Oldest = res.oldest
	q.mu.Unlock()
}

// startRun marks the beginning of a replay run on its first transaction.
func (q *queue) startRun(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.prog.Running {
		return
	}
	q.prog.Running = true
	q.prog.RunStarted = now
	q.prog.RunFinished = time.Time{}
	q.prog.Delivered, q.prog.Retrying, q.prog.Failed = 0, 0, 0
	q.log.Info("replay started")
}

// finishRun ends a run when the backlog is empty and tells the Notifier.
func (q *queue) finishRun(ctx context.Context, now time.Time) {
	q.mu.Lock()
	if !q.prog.Running {
		q.mu.Unlock()
		return
	}
	q.prog.Running = false
	q.prog.RunFinished = now
	p := q.prog
	q.mu.Unlock()
	dur := now.Sub(p.RunStarted)
	q.log.Info("replay finished", "delivered", p.Delivered, "failed", p.Failed,
		"retries", p.Retrying, "duration", dur)
	if q.r.opts.Notifier != nil && p.Delivered+p.Failed > 0 {
		q.r.opts.Notifier.Notify(ctx, notify.Event{
			Kind: notify.KindReplayFinished, Server: q.srv.Name, Time: now,
			Delivered: int(p.Delivered), Failed: int(p.Failed), Duration: dur,
		})
	}
}

// count walks the queue only to count this server's backlog.
func (q *queue) count(ctx context.Context) passResult {
	var res passResult
	var oldestID journal.ID
	err := q.r.opts.Journal.Custody(ctx, 0, func(it journal.CustodyItem) error {
		if it.Server != q.srv.Name {
			return nil
		}
		if res.backlog == 0 {
			oldestID = it.ID
		}
		res.backlog++
		return nil
	})
	if err != nil {
		res.err = fmt.Errorf("custody walk: %w", err)
		return res
	}
	res.walked = true
	res.oldest = q.oldest(ctx, res.backlog, oldestID)
	q.setBacklog(res)
	return res
}

func (q *queue) oldest(ctx context.Context, backlog int, id journal.ID) time.Time {
	if backlog == 0 {
		return time.Time{}
	}
	e, err := q.r.opts.Journal.Get(ctx, id)
	if err != nil {
		return time.Time{}
	}
	if !e.Envelope.Received.IsZero() {
		return e.Envelope.Received
	}
	return e.Stored
}

// pass walks the custody queue page by page from the start and dispatches
// every due message of this server to the workers in arrival order, then
// waits for them. It stops dispatching at once when the server goes into
// outage or the Replayer stops.
func (q *queue) pass(ctx context.Context) passResult {
	var res passResult
	ps := &passState{}
	now := q.r.opts.Clock()
	var from uint64
	var oldestID journal.ID
	cut := false // dispatching stopped early because the server is unreachable
	for {
		var page []*job
		more := false
		err := q.r.opts.Journal.Custody(ctx, from, func(it journal.CustodyItem) error {
			if it.Server != q.srv.Name {
				return nil
			}
			// Stop only between messages, so that a message's recipients
			// stay in one transaction.
			if len(page) >= q.r.opts.PageSize && it.Seq != page[len(page)-1].seq {
				more, from = true, it.Seq
				return errPage
			}
			if res.backlog == 0 {
				oldestID = it.ID
			}
			res.backlog++
			if q.r.waiting(it.NextAttempt, now) {
				if res.nextDue.IsZero() || it.NextAttempt.Before(res.nextDue) {
					res.nextDue = it.NextAttempt
				}
				return nil
			}
			if n := len(page); n > 0 && page[n-1].seq == it.Seq && page[n-1].id == it.ID {
				page[n-1].rcpts = append(page[n-1].rcpts, it.Rcpt)
				return nil
			}
			page = append(page, &job{seq: it.Seq, id: it.ID, rcpts: []int{it.Rcpt}, pass: ps})
			return nil
		})
		if err != nil && !errors.Is(err, errPage) {
			res.err = fmt.Errorf("custody walk: %w", err)
			break
		}
		for _, j := range page {
			if q.r.stopping() || ctx.Err() != nil || q.inOutage() {
				res.interrupted = true
				break
			}
			if ps.stopped() {
				cut = true
				break
			}
			if res.dispatched == 0 {
				q.startRun(now)
			}
			ps.wg.Add(1)
			select {
			case q.jobs <- j:
				res.dispatched++
			case <-q.r.stop:
				ps.wg.Done()
				res.interrupted = true
			case <-ctx.Done():
				ps.wg.Done()
				res.interrupted = true
			}
			if res.interrupted {
				break
			}
		}
		if res.interrupted || cut || !more {
			break
		}
	}
	ps.wg.Wait()
	ps.mu.Lock()
	res.recorded = ps.recorded
	if ps.outage {
		res.interrupted = true
	}
	if ps.journalErrs > 0 || ps.unreachable {
		res.backoff = true
	}
	if !ps.nextRetry.IsZero() && (res.nextDue.IsZero() || ps.nextRetry.Before(res.nextDue)) {
		res.nextDue = ps.nextRetry
	}
	ps.mu.Unlock()
	if res.err == nil && !res.interrupted && !cut {
		res.walked = true
		res.oldest = q.oldest(ctx, res.backlog, oldestID)
	}
	return res
}

// waiting reports whether a recipient whose next attempt is at next must
// still wait at now. NextAttempt is wall time kept in the journal, while no
// backoff this Replayer writes lies more than RetryMax plus the jitter's
// 25 % ahead of the clock. A next attempt further ahead than that was written
// before the wall clock stepped back (NTP, a resumed VM, an operator's date
// command): waiting for it would stall the recipient for the length of the
// step, a day for a day's step, while the server takes mail. It is due now;
// at worst one attempt comes early, and its outcome writes a NextAttempt on
// the clock as it is now.
func (r *Replayer) waiting(next, now time.Time) bool {
	if !next.After(now) {
		return false
	}
	return next.Sub(now) <= r.opts.RetryMax+r.opts.RetryMax/4
}

// stopped reports whether a worker saw a reason to stop dispatching: an
// outage, or a server that cannot be reached (every further transaction
// would fail the same way and cost each recipient an attempt).
func (p *passState) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outage || p.unreachable
}

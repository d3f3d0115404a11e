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

// ServerProgress is one server's replay state, for `lifeline status`.
type ServerProgress struct {
	Server string
	// Backlog is the number of recipients in custody or retrying for the
	// server, and Oldest the arrival time of the oldest such message, as of
	// the last walk of the custody queue (zero before the first).
	Backlog int
	Oldest  time.Time
	// Running is true from the first transaction of a replay run until the
	// backlog is empty again; Paused while the server is in outage.
	Running bool
	Paused  bool
	// NextAttempt is when the scheduler next finds something due (zero when
	// nothing waits).
	NextAttempt time.Time
	// Recipient outcomes since RunStarted (the current run, or the last one
	// when none is running).
	Delivered, Retrying, Failed int64
	RunStarted                  time.Time
	RunFinished                 time.Time // zero while running
}

// Replayer gives custody mail back to the mailbox servers. Create it with
// New, run it with Serve, stop it with Shutdown.
type Replayer struct {
	opts       Options
	log        *slog.Logger
	m          *metrics
	queues     []*queue
	byName     map[string]*queue
	submitNet  string
	submitAddr string

	mu       sync.Mutex
	started  bool
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	workCtx  context.Context
	cancel   context.CancelFunc
}

// New checks opts and returns a Replayer. Nothing runs until Serve.
func New(opts Options) (*Replayer, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	r := &Replayer{
		opts:   opts,
		log:    opts.Logger,
		byName: make(map[string]*queue, len(opts.Servers)),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if opts.DSN {
		var err error
		r.submitNet, r.submitAddr, err = notify.SplitAddress(opts.Submit)
		if err != nil {
			return nil, fmt.Errorf("replay: submit: %w", err)
		}
	}
	var reNet, reAddr string
	if opts.Mode == ModeSMTP {
		var err error
		reNet, reAddr, err = notify.SplitAddress(opts.Reinject)
		if err != nil {
			return nil, fmt.Errorf("replay: reinject: %w", err)
		}
	}
	for _, s := range opts.Servers {
		do := opts.Deliverer
		do.MaxIdle = opts.Concurrency
		if do.LocalName == "" {
			do.LocalName = opts.Hostname
		}
		if opts.Mode == ModeSMTP {
			do.Network, do.Address, do.SMTP = reNet, reAddr, true
		} else {
			do.Network, do.Address, do.SMTP = s.Network, s.Address, false
		}
		q := &queue{
			r:       r,
			srv:     s,
			log:     r.log.With("server", s.Name),
			d:       NewDeliverer(do),
			wake:    make(chan struct{}, 1),
			jobs:    make(chan *job),
			pending: map[journal.ID][]journal.Change{},
		}
		q.prog.Server = s.Name
		if opts.Rate > 0 {
			burst := int(opts.Rate)
			if burst < 1 {
				burst = 1
			}
			q.limiter = rate.NewLimiter(rate.Limit(opts.Rate), burst)
		}
		r.queues = append(r.queues, q)
		r.byName[s.Name] = q
	}
	m, err := newMetrics(opts.Registerer, opts.Panics, r)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

// ErrServing is returned by a second call of Serve.
var ErrServing = errors.New("replay: already serving")

// Serve runs the scheduler of every server until Shutdown (then it returns
// nil) or until ctx ends (then it aborts transactions in flight and returns
// ctx.Err()). Custody found in the journal at start is replayed without a
// Wake: the queue's state lives in the journal, so a restart resumes it.
func (r *Replayer) Serve(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return ErrServing
	}
	r.started = true
	r.workCtx, r.cancel = context.WithCancel(ctx)
	r.mu.Unlock()
	defer r.cancel()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.warnOrphans(r.workCtx)
	}()
	for _, q := range r.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.serve(r.workCtx)
		}()
	}
	wg.Wait()
	close(r.done)
	var errs []error
	for _, q := range r.queues {
		if err := q.d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.log.Warn("closing replay connections", "err", err)
	}
	select {
	case <-r.stop:
		return nil
	default:
		return ctx.Err()
	}
}

// warnOrphans logs, once at start, the custody recipients of servers this
// Replayer has no queue for: a [[server]] renamed or removed while mail was
// in its custody (or, in lmtp mode, one without an lmtp address). Nothing
// replays them; an operator must bring the server back under its old name
// (or give it an lmtp address) for them to be delivered.
func (r *Replayer) warnOrphans(ctx context.Context) {
	orphans := map[string]int{}
	err := r.opts.Journal.Custody(ctx, 0, func(it journal.CustodyItem) error {
		if r.stopping() {
			return errStopping // Shutdown must not wait for this walk
		}
		if r.byName[it.Server] == nil {
			orphans[it.Server]++
		}
		return nil
	})
	if errors.Is(err, errStopping) {
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("checking the custody queue for servers without a replay queue", "err", err)
		}
		return
	}
	for server, n := range orphans {
		r.log.Warn("custody recipients of a server replay has no queue for (renamed or removed [[server]], or no lmtp address in lmtp mode): they are not replayed",
			"server", server, "recipients", n)
	}
}

var errStopping = errors.New("replay: stopping")

// Shutdown stops dispatching at once, lets the transactions in flight finish
// and record their outcome, and returns when they have. If ctx ends first,
// it aborts them (their recipients are recorded as retrying: the server may
// or may not have taken the message) and returns ctx's error once the
// outcomes are written.
func (r *Replayer) Shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() { close(r.stop) })
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		var errs []error
		for _, q := range r.queues {
			errs = append(errs, q.d.Close())
		}
		return errors.Join(errs...)
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	}
	r.cancel()
	<-r.done
	return fmt.Errorf("replay: shutdown: %w", ctx.Err())
}

// Wake makes the scheduler of server look at its custody queue now; ""
// wakes every server. It never blocks. The daemon calls it when an outage
// ends (InOutage is polled, not pushed) and when an operator re-queues
// failed recipients. It is not needed after a replay run or a retry: the
// scheduler keeps its own timer to the next due recipient, and a wake would
// only cost one more walk of the queue. For messages that the milter was
// journaling in custody at the very moment an outage ended, the scheduler
// looks once more Settle after each Wake by itself.
func (r *Replayer) Wake(server string) {
	for _, q := range r.queues {
		if server == "" || q.srv.Name == server {
			select {
			case q.wake <- struct{}{}:
			default: // a wake is already pending; one is enough
			}
		}
	}
}

// Progress returns each server's replay state, in the order of
// Options.Servers.
func (r *Replayer) Progress() []ServerProgress {
	out := make([]ServerProgress, 0, len(r.queues))
	for _, q := range r.queues {
		q.mu.Lock()
		out = append(out, q.prog)
		q.mu.Unlock()
	}
	return out
}

func (r *Replayer) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// backoff is the delay before retry number attempts+1: RetryMin·2^attempts,
// capped at RetryMax, then jittered by ±25 % so that recipients deferred
// together do not come back together.
// retried is how long the retry schedule has held a recipient whose
// attempts failed attempts times before this one: the backoffs between them
// without their jitter. GiveUpAfter is measured with it rather than with the
// wall clock since the message arrived, for two reasons. Mail held in custody
// through an outage longer than GiveUpAfter must not fail at the first 4xx
// after the recovery (a busy server just back is the common case): the time
// it spent in custody was not spent failing. And a wall clock that jumps
// forward (NTP, a resumed VM) must not fail every retrying recipient at once:
// attempts are counted, each after a backoff timed on the monotonic clock.
func (r *Replayer) retried(attempts int) time.Duration {
	var held time.Duration
	d := r.opts.RetryMin
	for i := 0; i < attempts && held < r.opts.GiveUpAfter; i++ {
		held += d
		d = min(2*d, r.opts.RetryMax)
	}
	return held
}

func (r *Replayer) backoff(attempts int) time.Duration {
	d := r.opts.RetryMin
	for i := 0; i < attempts && d < r.opts.RetryMax; i++ {
		d *= 2
	}
	if d > r.opts.RetryMax {
		d = r.opts.RetryMax
	}
	j := 0.75 + 0.5*r.opts.Rand()
	return time.Duration(float64(d) * j)
}

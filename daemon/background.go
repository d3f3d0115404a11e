package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// every runs fn right away and then interval after each run ends, until ctx
// is done.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
		t.Reset(interval)
	}
}

// runSweeper removes messages past retention every interval, first right away,
// and then the users' flags of the removed messages (views may be nil), with
// the horizons h gives. The journal's Sweep never removes a message with a
// recipient in custody or retrying, whatever the horizon.
func runSweeper(ctx context.Context, j journal.Journal, views *userview.Store, h *retentionHorizon, interval time.Duration, log *slog.Logger, m *metrics, clock func() time.Time) {
	every(ctx, interval, func() {
		horizon, held := h.next(clock(), time.Now())
		if held > heldQuiet {
			log.Warn("the wall clock is ahead of the time that has passed since the last retention sweep (stepped forward?): "+
				"the horizon moves with the time passed, so that no mail is removed early; a restart takes the wall clock as it is",
				"horizon", horizon.UTC().Format(time.RFC3339), "held_back", held.Round(time.Second).String())
		}
		sweepOnce(ctx, j, views, horizon, log, m)
	})
}

// heldQuiet is how far a horizon may be held back before it is logged.
const heldQuiet = time.Minute

// retentionHorizon gives the horizons of one process's retention sweeps: what
// arrived before one is past retention. Arrival times in the journal are wall
// times, so the wall clock decides, but the horizon moves forward no faster
// than time passes on the monotonic clock since the sweep before. A wall clock
// stepped months ahead (a wrong time source, a typo in `date -s`) would
// otherwise have the next sweep remove every delivered copy older than the new
// horizon at once: the archive the service exists to keep. A step back is
// followed at once (it only keeps mail longer). A restart has no monotonic
// reference and takes the wall clock as it is. (The monotonic clock stops
// while the machine is suspended: after a resume the horizon lags by the
// time asleep, and mail is kept that much longer, until a restart.)
type retentionHorizon struct {
	retention time.Duration

	mu     sync.Mutex
	last   time.Time // the last sweep's horizon; zero before the first
	lastAt time.Time // when it was taken (time.Now, with its monotonic reading)
}

func newRetentionHorizon(retention time.Duration) *retentionHorizon {
	return &retentionHorizon{retention: retention}
}

// next returns the horizon of a sweep starting with the wall clock at wall and
// time.Now() at now, and how far it is held back from wall minus retention;
// the sweep after it moves on from there.
func (h *retentionHorizon) next(wall, now time.Time) (time.Time, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	horizon, held := h.peekLocked(wall, now)
	h.last, h.lastAt = horizon, now
	return horizon, held
}

// peek is next without moving on: the horizon a sweep starting now would
// take, for `lifeline status`.
func (h *retentionHorizon) peek(wall, now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	horizon, _ := h.peekLocked(wall, now)
	return horizon
}

func (h *retentionHorizon) peekLocked(wall, now time.Time) (time.Time, time.Duration) {
	want := wall.Add(-h.retention)
	if h.last.IsZero() {
		return want, 0
	}
	if bound := h.last.Add(now.Sub(h.lastAt)); want.After(bound) {
		return bound, want.Sub(bound)
	}
	return want, 0
}

// maxPruneMailboxes bounds the mailboxes remembered for one sweep's prune; the
// rest are pruned by a later sweep, when they have fewer old messages left.
const maxPruneMailboxes = 100_000

func sweepOnce(ctx context.Context, j journal.Journal, views *userview.Store, horizon time.Time, log *slog.Logger, m *metrics) {
	defer func() {
		if r := recover(); r != nil {
			m.panics.WithLabelValues("retention").Inc()
			log.Error("panic in retention sweep", "panic", fmt.Sprint(r))
		}
	}()
	start := time.Now() // for the duration, on the monotonic clock
	// The journal does not say which mailboxes a sweep touched: note them
	// first, among the messages the sweep may remove.
	var swept map[string]struct{}
	if views != nil {
		swept = map[string]struct{}{}
		err := j.Scan(ctx, time.Time{}, horizon, func(e journal.Entry) error {
			for _, r := range e.Envelope.Recipients {
				for _, mb := range r.Mailboxes {
					if len(swept) < maxPruneMailboxes {
						swept[mb] = struct{}{}
					}
				}
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			log.Warn("listing the mailboxes of expired messages; their flags are pruned by a later sweep", "err", err)
		}
	}
	res, err := j.Sweep(ctx, horizon)
	m.sweepDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			m.sweepErrors.Inc()
			log.Error("retention sweep failed", "err", err)
		}
		return
	}
	m.sweepRemoved.Add(float64(res.Removed))
	if res.Removed > 0 && views != nil {
		pruneViews(ctx, views, swept, log)
	}
	if res.Removed > 0 || res.Kept > 0 {
		log.Info("retention sweep", "removed", res.Removed, "kept_undelivered", res.Kept,
			"horizon", horizon.UTC().Format(time.RFC3339), "took", time.Since(start).String())
	}
}

// journalSnapshot is the journal's statistics as of the last refresh, for
// `lifeline status`: Stats walks the journal directory, too slow to run on
// every status request (scripts poll it).
type journalSnapshot struct {
	journal.Stats
	DiskFree, DiskSize int64 // 0 when unknown
	At                 time.Time
}

// journalStats holds the last snapshot; its zero value holds none.
type journalStats struct {
	last atomic.Pointer[journalSnapshot]
}

func (s *journalStats) get() (journalSnapshot, bool) {
	if p := s.last.Load(); p != nil {
		return *p, true
	}
	return journalSnapshot{}, false
}

// runStats refreshes the journal gauges and the snapshot every interval.
func runStats(ctx context.Context, j journal.Journal, dir string, interval time.Duration, log *slog.Logger, m *metrics, snap *journalStats) {
	every(ctx, interval, func() { refreshStats(ctx, j, dir, log, m, snap) })
}

func refreshStats(ctx context.Context, j journal.Journal, dir string, log *slog.Logger, m *metrics, snap *journalStats) {
	st, err := j.Stats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.statsErrors.Inc()
			log.Warn("reading journal statistics", "err", err)
		}
		return
	}
	m.journalBytes.Set(float64(st.BytesOnDisk))
	m.journalRaw.Set(float64(st.BytesRaw))
	m.journalMsgs.Set(float64(st.Messages))
	oldest := 0.0
	if !st.Oldest.IsZero() {
		oldest = float64(st.Oldest.Unix())
	}
	m.journalOldest.Set(oldest)
	s := &journalSnapshot{Stats: st, At: time.Now()}
	if free, size, err := diskSpace(dir); err != nil {
		m.statsErrors.Inc()
		log.Warn("reading the journal's free disk space", "err", err)
	} else {
		s.DiskFree, s.DiskSize = free, size
		m.diskFree.Set(float64(free))
		m.diskSize.Set(float64(size))
	}
	if snap != nil {
		snap.last.Store(s)
	}
}

// pruneViews removes the flags and hidden marks users kept for messages the
// sweep removed (userview keys that point at nothing).
func pruneViews(ctx context.Context, views *userview.Store, mailboxes map[string]struct{}, log *slog.Logger) {
	pruned := 0
	for mb := range mailboxes {
		n, err := views.Prune(ctx, mb)
		pruned += n
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("pruning a mailbox's flags after the sweep", "mailbox", mb, "err", err)
			}
			return
		}
	}
	if pruned > 0 {
		log.Info("pruned flags of swept messages", "keys", pruned, "mailboxes", len(mailboxes))
	}
}

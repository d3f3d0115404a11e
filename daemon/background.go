package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lifelinemail/lifeline/journal"
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

// runSweeper removes messages past retention every interval, first right away.
func runSweeper(ctx context.Context, j journal.Journal, retention, interval time.Duration, log *slog.Logger, m *metrics) {
	every(ctx, interval, func() { sweepOnce(ctx, j, retention, log, m) })
}

func sweepOnce(ctx context.Context, j journal.Journal, retention time.Duration, log *slog.Logger, m *metrics) {
	defer func() {
		if r := recover(); r != nil {
			m.panics.WithLabelValues("retention").Inc()
			log.Error("panic in retention sweep", "panic", fmt.Sprint(r))
		}
	}()
	start := time.Now()
	horizon := start.Add(-retention)
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
	if res.Removed > 0 || res.Kept > 0 {
		log.Info("retention sweep", "removed", res.Removed, "kept_undelivered", res.Kept,
			"horizon", horizon.UTC().Format(time.RFC3339), "took", time.Since(start).String())
	}
}

// runStats refreshes the journal gauges every interval.
func runStats(ctx context.Context, j journal.Journal, interval time.Duration, log *slog.Logger, m *metrics) {
	every(ctx, interval, func() { refreshStats(ctx, j, log, m) })
}

func refreshStats(ctx context.Context, j journal.Journal, log *slog.Logger, m *metrics) {
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
}

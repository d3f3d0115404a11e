package daemon

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	panics        *prometheus.CounterVec
	journalBytes  prometheus.Gauge
	journalRaw    prometheus.Gauge
	journalMsgs   prometheus.Gauge
	journalOldest prometheus.Gauge
	diskFree      prometheus.Gauge
	diskSize      prometheus.Gauge
	sweepRemoved  prometheus.Counter
	sweepErrors   prometheus.Counter
	sweepDuration prometheus.Histogram
	statsErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeline_panics_total", Help: "Panics recovered, by component. Any increase is a bug.",
		}, []string{"component"}),
		journalBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_bytes", Help: "Bytes the journal occupies on disk.",
		}),
		journalRaw: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_raw_bytes", Help: "Sum of the raw sizes of journaled messages.",
		}),
		journalMsgs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_messages", Help: "Messages in the journal.",
		}),
		journalOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_oldest_timestamp_seconds", Help: "Arrival time of the oldest journaled message (0 when empty).",
		}),
		diskFree: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_disk_free_bytes", Help: "Bytes available to Lifeline on the journal's filesystem (df's Avail); appends are refused below journal.min_free.",
		}),
		diskSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeline_journal_disk_size_bytes", Help: "Size of the journal's filesystem (df's Size).",
		}),
		sweepRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeline_retention_removed_total", Help: "Messages removed by the retention sweep.",
		}),
		sweepErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeline_retention_errors_total", Help: "Retention sweeps that failed.",
		}),
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lifeline_retention_sweep_seconds", Help: "Duration of retention sweeps.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		statsErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeline_journal_stats_errors_total", Help: "Failures to read journal statistics.",
		}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lifeline_build_info", Help: "Always 1; the version label names the build.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	reg.MustRegister(m.panics, m.journalBytes, m.journalRaw, m.journalMsgs, m.journalOldest, m.diskFree, m.diskSize,
		m.sweepRemoved, m.sweepErrors, m.sweepDuration, m.statsErrors, build)
	// Export the series at 0 so that a rule on increase() sees the first panic.
	m.panics.WithLabelValues("milter")
	m.panics.WithLabelValues("retention")
	return m
}

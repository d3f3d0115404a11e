package replay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Results of lifeline_replay_recipients_total.
const (
	resultDelivered = "delivered"
	resultRetrying  = "retrying"
	resultFailed    = "failed"
)

type metrics struct {
	recipients *prometheus.CounterVec
	seconds    prometheus.Histogram
	dsn        *prometheus.CounterVec
	panics     prometheus.Counter
	journalErr prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, panics prometheus.Counter, r *Replayer) (*metrics, error) {
	m := &metrics{}
	var errs []error
	var err error
	m.recipients, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_replay_recipients_total",
		Help: "Recipient outcomes of replay transactions, by server and result (delivered, retrying, failed).",
	}, []string{"server", "result"}))
	errs = append(errs, err)
	m.seconds, err = promreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "lifeline_replay_seconds",
		Help:    "Duration of one replay transaction (one message to one server), reading from the journal included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}))
	errs = append(errs, err)
	m.dsn, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_replay_dsn_total",
		Help: "Delivery status notifications for permanent failures, by result (sent, error).",
	}, []string{"result"}))
	errs = append(errs, err)
	m.journalErr, err = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_replay_journal_errors_total",
		Help: "Journal reads or outcome writes of replay that failed (the outcome is retried in memory).",
	}))
	errs = append(errs, err)
	m.panics, err = promreg.Panics(reg, panics, "replay")
	errs = append(errs, err)
	// The backlog gauges are computed at scrape time from the last walk, so
	// that the oldest entry's age keeps growing between walks.
	errs = append(errs, reg.Register(backlogCollector{r}))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("replay: register metrics: %w", err)
	}
	for _, s := range r.opts.Servers {
		for _, res := range []string{resultDelivered, resultRetrying, resultFailed} {
			m.recipients.WithLabelValues(s.Name, res)
		}
	}
	m.dsn.WithLabelValues("sent")
	m.dsn.WithLabelValues("error")
	return m, nil
}

var (
	backlogDesc = prometheus.NewDesc("lifeline_custody_backlog",
		"Recipients in custody or retrying for a server, as of the last walk of the custody queue.",
		[]string{"server"}, nil)
	oldestDesc = prometheus.NewDesc("lifeline_custody_oldest_seconds",
		"Age of the oldest message with a recipient in custody or retrying for a server; 0 when none.",
		[]string{"server"}, nil)
)

type backlogCollector struct{ r *Replayer }

func (c backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- oldestDesc
}

func (c backlogCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.r.opts.Clock()
	for _, p := range c.r.Progress() {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(p.Backlog), p.Server)
		age := 0.0
		if !p.Oldest.IsZero() && p.Backlog > 0 {
			age = now.Sub(p.Oldest).Seconds()
			if age < 0 {
				age = 0
			}
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, p.Server)
	}
}

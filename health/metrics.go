package health

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// metrics are the Monitor's collectors, on the injected Registerer (never
// package variables), so that two Monitors can run in one test process.
type metrics struct {
	up            *prometheus.GaugeVec
	outage        *prometheus.GaugeVec
	transitions   *prometheus.CounterVec
	probeSeconds  *prometheus.HistogramVec
	probeFailures *prometheus.CounterVec
	panics        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, panics prometheus.Counter) (*metrics, error) {
	m := &metrics{}
	var errs []error
	var err error
	m.up, err = promreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lifeline_mailbox_server_up",
		Help: "1 if the last probe round of the mailbox server succeeded, 0 if it failed.",
	}, []string{"server"}))
	errs = append(errs, err)
	m.outage, err = promreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lifeline_outage_active",
		Help: "1 while Lifeline holds the mailbox server in outage mode (custody), else 0.",
	}, []string{"server"}))
	errs = append(errs, err)
	m.transitions, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_outage_transitions_total",
		Help: "Outage starts and ends of the mailbox server, by cause (probe, operator, window).",
	}, []string{"server", "cause"}))
	errs = append(errs, err)
	m.probeSeconds, err = promreg.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lifeline_probe_seconds",
		Help: "Duration of health probes, by mailbox server and probe type.",
		// 1 ms (a local LMTP greeting) up to 10 s (beyond any probe timeout).
		Buckets: prometheus.ExponentialBucketsRange(0.001, 10, 14),
	}, []string{"server", "type"}))
	errs = append(errs, err)
	m.probeFailures, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_probe_failures_total",
		Help: "Failed health probes, by mailbox server and probe type.",
	}, []string{"server", "type"}))
	errs = append(errs, err)
	m.panics, err = promreg.Panics(reg, panics, "health")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

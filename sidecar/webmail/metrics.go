package webmail

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// pages is the fixed set of values of the page label.
var pages = []string{"login", "logout", "list", "message", "body", "part", "raw", "flags", "compose", "send",
	"admin", "outage", "static", "other"}

type metrics struct {
	sessions prometheus.Gauge
	logins   *prometheus.CounterVec
	requests *prometheus.CounterVec
	panics   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, panics prometheus.Counter) (*metrics, error) {
	m := &metrics{}
	var errs []error
	var err error
	m.sessions, err = promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lifeline_webmail_sessions",
		Help: "Webmail sessions logged in now.",
	}))
	errs = append(errs, err)
	m.logins, err = promreg.Logins(reg, "webmail")
	errs = append(errs, err)
	m.requests, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_webmail_requests_total",
		Help: "Webmail HTTP requests, by page and status code.",
	}, []string{"page", "code"}))
	errs = append(errs, err)
	m.panics, err = promreg.Panics(reg, panics, "webmail")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

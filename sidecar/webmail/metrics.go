package webmail

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Values of the result label of lifeline_logins_total{protocol="webmail"}:
// the set package imap and pop3 use, so that one dashboard panel shows all.
const (
	loginOK          = "success"
	loginFailed      = "failure"
	loginError       = "error"
	loginNotServing  = "not_serving"
	loginInUse       = "in_use" // unused by webmail; kept for the shared label set
	loginPlainRefuse = "plaintext_refused"
)

var loginResults = []string{loginOK, loginFailed, loginError, loginNotServing, loginInUse, loginPlainRefuse}

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
	// Name, help and labels must stay identical to package imap's and
	// pop3's, so that all register the one collector.
	m.logins, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_logins_total",
		Help: "Login attempts to the continuity mailbox, by protocol and result.",
	}, []string{"protocol", "result"}))
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
	for _, r := range loginResults {
		m.logins.WithLabelValues("webmail", r)
	}
	return m, nil
}

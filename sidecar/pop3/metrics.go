package pop3

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of lifeline_logins_total{protocol="pop3"}.
const (
	loginOK          = "success"
	loginFailed      = "failure"     // bad credentials
	loginError       = "error"       // temporary failure of the authenticator
	loginNotServing  = "not_serving" // good credentials, but Lifeline does not serve the mailbox now
	loginInUse       = "in_use"      // another session holds the mailbox
	loginPlainRefuse = "plaintext_refused"
)

var loginResults = []string{loginOK, loginFailed, loginError, loginNotServing, loginInUse, loginPlainRefuse}

// commands is the fixed set of values of the command label; anything else
// counts as "unknown".
var commands = []string{"USER", "PASS", "AUTH", "CAPA", "STLS", "APOP", "STAT", "LIST", "RETR", "TOP",
	"UIDL", "DELE", "NOOP", "RSET", "QUIT", "unknown"}

type metrics struct {
	sessions  prometheus.Gauge
	logins    *prometheus.CounterVec
	commands  *prometheus.CounterVec
	bytesSent prometheus.Counter
	panics    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, panics prometheus.Counter) (*metrics, error) {
	m := &metrics{}
	var errs []error
	var err error
	m.sessions, err = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lifeline_pop3_sessions",
		Help: "POP3 connections open now.",
	}))
	errs = append(errs, err)
	m.logins, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_logins_total",
		Help: "Login attempts to the continuity mailbox, by protocol and result.",
	}, []string{"protocol", "result"}))
	errs = append(errs, err)
	m.commands, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_pop3_commands_total",
		Help: "POP3 commands received, by command.",
	}, []string{"command"}))
	errs = append(errs, err)
	m.bytesSent, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_pop3_bytes_sent_total",
		Help: "Bytes sent to POP3 clients (responses and messages, before TLS).",
	}))
	errs = append(errs, err)
	if panics != nil {
		m.panics = panics
	} else {
		var vec *prometheus.CounterVec
		vec, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeline_panics_total",
			Help: "Panics recovered, by component. Any increase is a bug.",
		}, []string{"component"}))
		errs = append(errs, err)
		if vec != nil {
			m.panics = vec.WithLabelValues("pop3")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, r := range loginResults {
		m.logins.WithLabelValues("pop3", r)
	}
	for _, c := range commands {
		m.commands.WithLabelValues(c)
	}
	return m, nil
}

// register registers c on reg, or returns the identical collector already
// registered there (a second Server, or IMAP's lifeline_logins_total).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("pop3: register metric: %w", err)
}

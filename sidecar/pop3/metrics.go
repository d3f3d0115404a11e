package pop3

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

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
	m.sessions, err = promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lifeline_pop3_sessions",
		Help: "POP3 connections open now.",
	}))
	errs = append(errs, err)
	m.logins, err = promreg.Logins(reg, "pop3")
	errs = append(errs, err)
	m.commands, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_pop3_commands_total",
		Help: "POP3 commands received, by command.",
	}, []string{"command"}))
	errs = append(errs, err)
	m.bytesSent, err = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_pop3_bytes_sent_total",
		Help: "Bytes sent to POP3 clients (responses and messages, before TLS).",
	}))
	errs = append(errs, err)
	m.panics, err = promreg.Panics(reg, panics, "pop3")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, c := range commands {
		m.commands.WithLabelValues(c)
	}
	return m, nil
}

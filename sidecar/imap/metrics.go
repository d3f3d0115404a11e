package imap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// commands is the fixed set of values of the command label. The library
// answers CAPABILITY, NOOP, CHECK, LOGOUT, STARTTLS and ENABLE itself; those
// are not counted. LOGIN counts AUTHENTICATE PLAIN too, SELECT counts EXAMINE,
// UNSELECT counts CLOSE.
var commands = []string{"LOGIN", "SELECT", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
	"LIST", "NAMESPACE", "STATUS", "APPEND", "IDLE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE",
	"COPY", "MOVE"}

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
		Name: "lifeline_imap_sessions",
		Help: "IMAP connections open now.",
	}))
	errs = append(errs, err)
	m.logins, err = promreg.Logins(reg, "imap")
	errs = append(errs, err)
	m.commands, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_imap_commands_total",
		Help: "IMAP commands handled by the mailbox backend, by command.",
	}, []string{"command"}))
	errs = append(errs, err)
	m.bytesSent, err = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_imap_bytes_sent_total",
		Help: "Bytes sent to IMAP clients on the wire (TLS records included).",
	}))
	errs = append(errs, err)
	m.panics, err = promreg.Panics(reg, panics, "imap")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, c := range commands {
		m.commands.WithLabelValues(c)
	}
	return m, nil
}

package imap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Values of the result label of lifeline_logins_total{protocol="imap"}; the
// same set as package pop3 uses, so that one dashboard panel shows both.
const (
	loginOK          = "success"
	loginFailed      = "failure"     // bad credentials
	loginError       = "error"       // temporary failure of the authenticator or the journal
	loginNotServing  = "not_serving" // good credentials, but Lifeline does not serve the mailbox now
	loginInUse       = "in_use"      // unused by IMAP (no mailbox lock); kept for the shared label set
	loginPlainRefuse = "plaintext_refused"
)

var loginResults = []string{loginOK, loginFailed, loginError, loginNotServing, loginInUse, loginPlainRefuse}

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
	// Name, help and labels must stay identical to package pop3's, so that
	// both register the one collector.
	m.logins, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_logins_total",
		Help: "Login attempts to the continuity mailbox, by protocol and result.",
	}, []string{"protocol", "result"}))
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
	for _, r := range loginResults {
		m.logins.WithLabelValues("imap", r)
	}
	for _, c := range commands {
		m.commands.WithLabelValues(c)
	}
	return m, nil
}

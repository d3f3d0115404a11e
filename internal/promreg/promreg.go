// Package promreg registers Prometheus collectors that several components of
// one process share. `lifeline serve` runs two IMAP or POP3 servers, or both
// (lifeline_logins_total has a protocol label), and the tests start several
// servers on one registry: the second registration of an identical collector
// must return the first instead of failing.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg, or returns the identical collector already
// registered there (same name, help and labels). A different collector under
// the same name is an error.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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
	return zero, fmt.Errorf("register metric: %w", err)
}

// Panics returns the panic counter of one component: panics itself when the
// caller passes one (the daemon shares a lifeline_panics_total across its
// components), else component's child of a lifeline_panics_total registered
// on reg.
func Panics(reg prometheus.Registerer, panics prometheus.Counter, component string) (prometheus.Counter, error) {
	if panics != nil {
		return panics, nil
	}
	vec, err := Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_panics_total",
		Help: "Panics recovered, by component. Any increase is a bug.",
	}, []string{"component"}))
	if err != nil {
		return nil, err
	}
	return vec.WithLabelValues(component), nil
}

// Results of lifeline_logins_total, one set for every protocol (IMAP, POP3,
// webmail), so that one dashboard panel and one alert cover them all.
const (
	LoginOK               = "success"
	LoginFailed           = "failure"           // bad credentials
	LoginError            = "error"             // temporary failure of the authenticator or the journal
	LoginNotServing       = "not_serving"       // good credentials, but Lifeline does not serve the mailbox now
	LoginInUse            = "in_use"            // the mailbox is locked by another session (POP3)
	LoginPlaintextRefused = "plaintext_refused" // a plaintext login off loopback without TLS
)

// LoginResults are the values of the result label.
var LoginResults = []string{LoginOK, LoginFailed, LoginError, LoginNotServing, LoginInUse, LoginPlaintextRefused}

// Logins returns lifeline_logins_total{protocol, result}, shared by the
// servers of one registry, with protocol's children created at zero (so
// that rate() and the dashboard see them before the first login).
func Logins(reg prometheus.Registerer, protocol string) (*prometheus.CounterVec, error) {
	vec, err := Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_logins_total",
		Help: "Login attempts to the continuity mailbox, by protocol and result.",
	}, []string{"protocol", "result"}))
	if err != nil {
		return nil, err
	}
	for _, r := range LoginResults {
		vec.WithLabelValues(protocol, r)
	}
	return vec, nil
}

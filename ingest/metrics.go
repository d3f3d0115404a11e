package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Metric results.
const (
	resultStored    = "stored"    // journal listener: appended
	resultCustody   = "custody"   // custody listener: every recipient taken
	resultDuplicate = "duplicate" // already stored; nothing written
	resultPartial   = "partial"   // custody: some recipients 4xx
	resultTempFail  = "tempfail"  // 4xx: the MTA retries
	resultTooLarge  = "too_large" // 552
	resultRefused   = "refused"   // recipient refused at RCPT TO or with the message
)

type metrics struct {
	messages   *prometheus.CounterVec
	recipients *prometheus.CounterVec
}

// newMetrics registers the counters, sharing them between the two listeners
// of one process (promreg).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	msgs, err := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_ingest_messages_total",
		Help: "LMTP transactions ended with DATA, by listener (journal, custody) and result.",
	}, []string{"listener", "result"}))
	if err != nil {
		return nil, err
	}
	rcpts, err := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_ingest_recipients_total",
		Help: "LMTP recipients by listener (journal, custody) and the result they were answered with.",
	}, []string{"listener", "result"}))
	if err != nil {
		return nil, err
	}
	return &metrics{messages: msgs, recipients: rcpts}, nil
}

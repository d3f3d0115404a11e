package milter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

// Values of the result label of lifeline_milter_messages_total. The set is
// fixed and small (STYLE.md, metrics): never an address or a message id.
const (
	resultJournaled      = "journaled"              // Append stored the message
	resultDuplicate      = "duplicate"              // Append found it already stored
	resultErrorAccepted  = "journal_error_accepted" // not journaled, answered ACCEPT
	resultErrorTempFail  = "journal_error_tempfail" // not journaled, answered TEMPFAIL
	resultAborted        = "aborted"                // MTA aborted the message (RSET, QUIT, lost connection)
	componentLabelMilter = "milter"
)

// Results of outage mode (custody.go). They describe the answer, so they take
// precedence over journaled and duplicate: a message offered again whose
// stored recipients are in custody counts as custody once more.
const (
	resultCustody         = "custody"          // every recipient is Lifeline's: answered DISCARD
	resultPartialCustody  = "partial_custody"  // some recipients are Lifeline's: DELRCPT for them, then ACCEPT
	resultCustodyTempFail = "custody_tempfail" // custody could not be made durable (or checked): TEMPFAIL
)

var allResults = []string{resultJournaled, resultDuplicate, resultErrorAccepted, resultErrorTempFail, resultAborted,
	resultCustody, resultPartialCustody, resultCustodyTempFail}

// metrics are the milter's collectors. They live on the Server, never in
// package variables, so that two Servers can run in one test process.
type metrics struct {
	messages      *prometheus.CounterVec
	appendSeconds prometheus.Histogram
	appendErrors  prometheus.Counter
	// custodyRecipients counts recipients removed from the MTA's message
	// (DELRCPT or DISCARD) because Lifeline has them in custody.
	custodyRecipients prometheus.Counter
	panics            prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, panics prometheus.Counter) (*metrics, error) {
	m := &metrics{}
	var err error
	var errs []error

	m.messages, err = promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lifeline_milter_messages_total",
		Help: "Messages seen by the milter at end-of-message or abort, by result.",
	}, []string{"result"}))
	errs = append(errs, err)

	m.appendSeconds, err = promreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lifeline_journal_append_seconds",
		Help: "Time for journal appends to become durable, as seen by the milter.",
		// 0.5 ms (an fsync shared with other appends on a fast disk) up to
		// 10 s (a stalled disk); Postfix gives a milter 300 s in all.
		Buckets: prometheus.ExponentialBucketsRange(0.0005, 10, 16),
	}))
	errs = append(errs, err)

	m.appendErrors, err = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_journal_append_errors_total",
		Help: "Journal appends from the milter that returned an error.",
	}))
	errs = append(errs, err)

	m.custodyRecipients, err = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lifeline_milter_custody_recipients_total",
		Help: "Recipients the milter took away from the MTA (DELRCPT, or DISCARD of the whole message) because they are in Lifeline's custody; a message offered again counts again.",
	}))
	errs = append(errs, err)

	m.panics, err = promreg.Panics(reg, panics, componentLabelMilter)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Export every result from the start, so that rate() and alerts see 0
	// rather than an absent series.
	for _, r := range allResults {
		m.messages.WithLabelValues(r)
	}
	return m, nil
}

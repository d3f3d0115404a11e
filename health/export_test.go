package health

// Test helpers for the external test package (dovecot_test.go).
var (
	NewProbeT        = newProbe
	CheckT           = check
	OpenStoreT       = openStore
	PollT            = poll
	MetricValueT     = metricValue
	MustErrContainT  = mustErrContain
	WantTransitionsT = wantTransitions
	TestLoggerT      = testLogger
)

type RecorderT = recorder

func (r *recorder) Add(t Transition)  { r.add(t) }
func (r *recorder) Get() []Transition { return r.get() }

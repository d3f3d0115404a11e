package health

import (
	"time"
)

// Transition is one change of a server's effective outage state, as stored
// in the event log "outage" (JSON) and given to Options.OnTransition.
type Transition struct {
	Server string    `json:"server"`
	Time   time.Time `json:"time"`
	Outage bool      `json:"outage"` // true: the outage started; false: it ended
	// Cause is what started the outage, or what ended it: CauseProbe,
	// CauseOperator or CauseWindow.
	Cause  string `json:"cause"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`     // the operator, for CauseOperator
	Window string `json:"window,omitempty"` // the window's ID, for CauseWindow
}

// control is a server's outage state: the three causes and the effective
// outage they add up to. It is a value, so that a change can be computed on
// a copy and applied only once it is durable.
type control struct {
	manual       bool
	manualSince  time.Time
	manualReason string
	manualBy     string

	probe       bool
	probeSince  time.Time
	probeReason string

	windowID     string // the active maintenance window, "" if none
	windowReason string

	// The effective outage: manual || window || probe.
	outage bool
	since  time.Time
	cause  string
	reason string
	by     string
}

// effective is what the causes add up to. When several hold, the cause
// shown is the one that will hold longest: the operator's (only EndOutage
// ends it), then the window's (ends at a known time), then the probes'.
func (c *control) effective() (outage bool, cause, reason, by, window string) {
	switch {
	case c.manual:
		return true, CauseOperator, c.manualReason, c.manualBy, ""
	case c.windowID != "":
		return true, CauseWindow, c.windowReason, "", c.windowID
	case c.probe:
		return true, CauseProbe, c.probeReason, "", ""
	}
	return false, "", "", "", ""
}

// ending says what ended an outage, for the Transition that records it.
type ending struct {
	cause, reason, by, window string
}

// settle recomputes the effective outage of c and returns the transition if
// it changed.
func settle(c *control, server string, now time.Time, end ending) *Transition {
	outage, cause, reason, by, window := c.effective()
	was := c.outage
	c.outage, c.cause, c.reason, c.by = outage, cause, reason, by
	switch {
	case outage && !was:
		c.since = now
		return &Transition{Server: server, Time: now, Outage: true, Cause: cause, Reason: reason, By: by, Window: window}
	case !outage && was:
		c.since = time.Time{}
		return &Transition{Server: server, Time: now, Outage: false, Cause: end.cause, Reason: end.reason, By: end.by, Window: end.window}
	}
	return nil
}

// persisted is a server's state under the ControlStore key outage/<server>.
// The probe counters are not kept: after a restart a probe-declared outage
// needs RecoverAfter good rounds like any other.
type persisted struct {
	Outage bool      `json:"outage"`
	Since  time.Time `json:"since,omitzero"`
	Cause  string    `json:"cause,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`

	Manual       bool      `json:"manual"`
	ManualSince  time.Time `json:"manual_since,omitzero"`
	ManualReason string    `json:"manual_reason,omitempty"`
	ManualBy     string    `json:"manual_by,omitempty"`

	Probe       bool      `json:"probe"`
	ProbeSince  time.Time `json:"probe_since,omitzero"`
	ProbeReason string    `json:"probe_reason,omitempty"`

	// Window is informational: windows are evaluated again at start.
	Window string `json:"window,omitempty"`
}

func (c *control) persisted() persisted {
	return persisted{
		Outage: c.outage, Since: c.since, Cause: c.cause, Reason: c.reason, By: c.by,
		Manual: c.manual, ManualSince: c.manualSince, ManualReason: c.manualReason, ManualBy: c.manualBy,
		Probe: c.probe, ProbeSince: c.probeSince, ProbeReason: c.probeReason,
		Window: c.windowID,
	}
}

// restore is the inverse of persisted; the active window is left to the
// next evaluation.
func restore(p persisted) control {
	c := control{
		manual: p.Manual, manualSince: p.ManualSince, manualReason: p.ManualReason, manualBy: p.ManualBy,
		probe: p.Probe, probeSince: p.ProbeSince, probeReason: p.ProbeReason,
		outage: p.Outage, since: p.Since, cause: p.Cause, reason: p.Reason, by: p.By,
	}
	if p.Outage && p.Cause == CauseWindow {
		// Keep the window until evaluation says whether it still holds, so
		// that its end (if it ended while Lifeline was down) is a transition.
		c.windowID = p.Window
		c.windowReason = p.Reason
	}
	return c
}

func (p persisted) equal(q persisted) bool {
	return p.Outage == q.Outage && p.Since.Equal(q.Since) && p.Cause == q.Cause && p.Reason == q.Reason && p.By == q.By &&
		p.Manual == q.Manual && p.ManualSince.Equal(q.ManualSince) && p.ManualReason == q.ManualReason && p.ManualBy == q.ManualBy &&
		p.Probe == q.Probe && p.ProbeSince.Equal(q.ProbeSince) && p.ProbeReason == q.ProbeReason &&
		p.Window == q.Window
}

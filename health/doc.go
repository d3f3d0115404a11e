// Package health decides, per mailbox server, whether Lifeline is in outage
// mode for it: probes check the server, a state machine with hysteresis turns
// probe rounds into outages, operators start and end outages by hand, and
// maintenance windows put a server in outage for a scheduled time. The state
// and every transition live in the journal's ControlStore, so that a restart
// during an outage stays in the outage.
//
// # Detection time and the defaults
//
// A server is probed every Interval (DefaultInterval, 10 s); a round fails
// when any of its probes fails. FailAfter (DefaultFailAfter, 3) consecutive
// failed rounds declare an outage, so detection takes Interval × FailAfter,
// 30 s by default (plus at most one probe timeout). RecoverAfter
// (DefaultRecoverAfter, 3) consecutive successful rounds end it, 30 s after
// the server is back. Why not faster:
//
//   - One lost probe must not start an outage: a Dovecot reload (doveadm
//     reload, a config change, a certificate renewal) closes its listeners
//     for a moment, and a single slow answer under load looks the same.
//   - Postfix already queues mail for a short blip and retries it by itself;
//     nothing is lost in the 30 s before custody starts, mail only waits.
//   - The two kinds of mistake cost differently. A false outage costs a
//     replay (mail taken into custody and handed back later than Postfix
//     would have delivered it); a missed or late one loses nothing either,
//     it makes users wait for Postfix's retry schedule. Neither is worth
//     flapping for, so both directions need three rounds in a row.
//
// DefaultTimeout (5 s) bounds each probe: half the interval, so that a hung
// server is a failed round and not a stalled loop, and well above the
// milliseconds a healthy local LMTP needs.
//
// # Causes
//
// The effective outage of a server is operator || window || probe:
//
//   - operator: StartOutage; only EndOutage ends it, never probes.
//   - window: a maintenance window [Start, End) for the server.
//   - probe: FailAfter failed rounds; RecoverAfter good rounds end it, also
//     across a restart.
//
// When the cause that started an outage goes away while another still holds
// (a window ends while probes fail), the server stays in outage under the
// remaining cause; only changes of the effective state are transitions.
package health

import "time"

// Defaults for a Server's zero fields and a ProbeConfig's zero Timeout.
const (
	DefaultInterval     = 10 * time.Second
	DefaultFailAfter    = 3
	DefaultRecoverAfter = 3
	DefaultTimeout      = 5 * time.Second
)

// Causes of a transition (Transition.Cause, ServerStatus.Cause, the cause
// label of lifeline_outage_transitions_total).
const (
	CauseProbe    = "probe"
	CauseOperator = "operator"
	CauseWindow   = "window"
)

var allCauses = []string{CauseProbe, CauseOperator, CauseWindow}

package journal

import "fmt"

// State is a recipient's delivery state. The state machine:
//
//	mta                         the MTA delivers it; Lifeline keeps a copy
//	mta      -> custody         the MTA hands that copy's recipient over instead
//	                            of delivering it (Exim: a copy journaled by the
//	                            unseen router, then the mailbox server failed
//	                            and the custody router offered it); only the
//	                            LMTP custody listener does this, the milter never
//	custody  -> delivered       replay got 2xx from the mailbox server (RFC 2033 §4.2)
//	custody  -> retrying        replay got 4xx or could not connect; tried again later
//	custody  -> failed          replay got 5xx; kept and reported, never dropped
//	retrying -> delivered | retrying | failed
//	failed   -> custody         an operator re-queues it
//
// custody and retrying are "undelivered": retention never removes such a message.
type State uint8

const (
	StateUnknown State = iota
	StateMTA
	StateCustody
	StateRetrying
	StateDelivered
	StateFailed
)

var stateNames = [...]string{"unknown", "mta", "custody", "retrying", "delivered", "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseState parses a state name as printed by String.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if n == name && i != 0 {
			return State(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("journal: unknown state %q", name)
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s >= StateMTA && s <= StateFailed }

// Undelivered reports whether Lifeline still owes this recipient a delivery.
func (s State) Undelivered() bool { return s == StateCustody || s == StateRetrying }

// CanBecome reports whether the state machine allows s -> to.
func (s State) CanBecome(to State) bool {
	switch s {
	case StateCustody, StateRetrying:
		return to == StateDelivered || to == StateRetrying || to == StateFailed
	case StateFailed, StateMTA:
		return to == StateCustody
	default: // delivered is final
		return false
	}
}

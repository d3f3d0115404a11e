package journal

import (
	"context"
	"time"
)

// CustodyItem is one recipient Lifeline still owes a delivery (its state is
// custody or retrying), as the custody queue hands it to replay.
type CustodyItem struct {
	Seq   uint64 // the message's arrival order (Entry.Seq)
	ID    ID
	Rcpt  int // index into the message's Envelope.Recipients
	State State
	// Server and NextAttempt are copied from the recipient so that replay can
	// pick what is due for a server without reading every message.
	Server      string
	NextAttempt time.Time
}

// ControlStore is the durable state of Lifeline's control plane: outage state
// per mailbox server, maintenance windows, and the log of outage transitions.
// It lives in the journal so that it survives restarts (and later replicates
// with it). Values are opaque to the journal; their owners encode them.
type ControlStore interface {
	// SetControl durably stores value under key, replacing what was there;
	// a nil value deletes the key.
	SetControl(ctx context.Context, key string, value []byte) error
	// Control returns the value stored under key, or ErrNotFound.
	Control(ctx context.Context, key string) ([]byte, error)
	// Controls calls fn for each key with the prefix, in lexical order.
	Controls(ctx context.Context, prefix string, fn func(key string, value []byte) error) error
	// AppendEvent durably appends value to the named event log and returns its
	// sequence number (1, 2, ... within the log).
	AppendEvent(ctx context.Context, log string, value []byte) (uint64, error)
	// Events calls fn for each event of the log with seq >= fromSeq, in order.
	Events(ctx context.Context, log string, fromSeq uint64, fn func(seq uint64, value []byte) error) error
}

// MessageIDIndex is implemented by backends that index messages by their
// Message-ID header field (DESIGN.md: "by Message-ID for look-ups").
type MessageIDIndex interface {
	// ByMessageID calls fn with the ID of every stored message whose Message-ID
	// field (Summary.MessageID) equals msgid, with or without its angle brackets.
	ByMessageID(ctx context.Context, msgid string, fn func(ID) error) error
}

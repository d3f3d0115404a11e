package journal

import "context"

// CustodyItem is one recipient Lifeline still owes a delivery (its state is
// custody or retrying), as the custody queue hands it to replay.
type CustodyItem struct {
	Seq   uint64 // the message's arrival order (Entry.Seq)
	ID    ID
	Rcpt  int // index into the message's Envelope.Recipients
	State State
}

// CustodyQueue is implemented by backends that keep an index of undelivered
// recipients in arrival order, so that replay reads the backlog without scanning
// every message. It is separate from Journal until the replay issue settles its
// shape; callers type-assert for it.
type CustodyQueue interface {
	// Custody calls fn for every undelivered recipient with Seq >= fromSeq, in
	// arrival order (then recipient order). fn returning an error stops the walk
	// and Custody returns that error. Recipients whose state changes during the
	// walk may or may not be seen.
	Custody(ctx context.Context, fromSeq uint64, fn func(CustodyItem) error) error
}

// MessageIDIndex is implemented by backends that index messages by their
// Message-ID header field (DESIGN.md: "by Message-ID for look-ups").
type MessageIDIndex interface {
	// ByMessageID calls fn with the ID of every stored message whose Message-ID
	// field (Summary.MessageID) equals msgid, with or without its angle brackets.
	ByMessageID(ctx context.Context, msgid string, fn func(ID) error) error
}

// Package journal defines Lifeline's durable message store: every message the MTA
// hands to Lifeline is appended here, with its envelope, a header summary and a
// delivery state per recipient, before Lifeline answers the MTA.
//
// The Journal interface is what every other package uses. It deliberately exposes
// no storage types (no Badger transactions, no keys): a later backend on a
// replicated log (NATS JetStream) must fit behind it, and no caller may assume the
// journal lives in its own process or that it can read its own writes from a cache.
package journal

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/lifelinemail/lifeline/mimestruct"
)

// DefaultRetention is how long entries are kept when the config does not say.
const DefaultRetention = 90 * 24 * time.Hour

// Errors returned by every backend. Callers test them with errors.Is.
var (
	ErrNotFound     = errors.New("journal: not found")
	ErrClosed       = errors.New("journal: closed")
	ErrInvalidState = errors.New("journal: invalid state transition")
	ErrTooLarge     = errors.New("journal: message too large")
	// ErrDiskFull: the journal keeps a reserve of free disk space and refuses
	// new messages rather than run the filesystem full (where a store that
	// writes through memory maps would crash on SIGBUS).
	ErrDiskFull = errors.New("journal: not enough free disk space")
)

// ID identifies a stored message. It is derived from the message's identity (see
// Identity) so that the same message offered twice maps to the same ID.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the hex form produced by ID.String.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("journal: bad message id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// Envelope is the SMTP envelope of a message as the MTA saw it (RFC 5321 §3.3).
type Envelope struct {
	MailFrom   string      // reverse path without angle brackets; "" for the null sender
	Recipients []Recipient // in RCPT TO order
	QueueID    string      // the MTA's queue id (Postfix macro "i"); informational only
	Received   time.Time   // when the MTA handed the message over
	AuthUser   string      // SMTP AUTH user ({auth_authen}), "" if none
	Source     string      // which front end journaled it: "milter", later "lmtp"
}

// Recipient is one RCPT TO and where it goes.
type Recipient struct {
	Address   string   // the RCPT TO address as given, without angle brackets
	Mailboxes []string // the continuity mailboxes it maps to; empty for foreign domains
	Server    string   // the configured mailbox server it belongs to, "" if none
	Mailer    string   // Postfix {rcpt_mailer} (transport), informational
	Host      string   // Postfix {rcpt_host} (next hop), informational
	State     State
	// Attempts, LastReply, NextAttempt and Done record replay progress.
	Attempts    int       // delivery attempts made by replay
	LastReply   string    // the last reply (or error) replay got for it
	Updated     time.Time // when State last changed
	NextAttempt time.Time // retrying: when replay tries again
	// Done lists the mailboxes replay has already delivered this recipient to,
	// when it maps to several (an alias) and only some accepted: a retry skips
	// them, so that nobody gets the message twice.
	Done []string
}

// Change is one recipient's outcome of a delivery attempt, for Update.
type Change struct {
	Rcpt        int    // index into Envelope.Recipients
	To          State  // the new state
	Reply       string // the reply or error that decided it, stored as LastReply
	NextAttempt time.Time
	Done        []string // replaces Recipient.Done when not nil
}

// Summary is the header summary stored beside a message for listings and search.
// Values are the raw, unfolded header field bodies (RFC 5322 §2.2.3); decoding of
// RFC 2047 encoded words is left to the reader.
type Summary struct {
	From, To, Cc, Subject, Date, MessageID string
}

// Entry is everything the journal knows about one message except its bytes.
type Entry struct {
	ID       ID
	Seq      uint64 // arrival order, unique and increasing within one journal
	Envelope Envelope
	Summary  Summary
	Size     int64     // raw message size in bytes
	Stored   time.Time // when the append became durable
}

// AppendResult tells the caller what Append did.
type AppendResult struct {
	ID        ID
	Duplicate bool // the message was already stored; nothing was written
}

// MailboxInfo is the IMAP view of a continuity mailbox (RFC 3501 §2.3.1.1).
type MailboxInfo struct {
	Name        string
	UIDValidity uint32
	UIDNext     uint32
	Messages    int
}

// MailboxItem is one message in a mailbox, in UID order.
type MailboxItem struct {
	UID      uint32
	ID       ID
	Received time.Time
	Size     int64
	// Body is where the backend that listed the item keeps the message's
	// bytes, for ItemOpener; zero when it does not say.
	Body BodyRef
}

// BodyRef locates a message's stored bytes; only the backend that gave it
// out reads it.
type BodyRef struct {
	N      uint64
	Chunks uint32
}

// IsZero reports whether the ref says nothing.
func (b BodyRef) IsZero() bool { return b == BodyRef{} }

// ItemOpener is implemented by journals that open a listed message from its
// MailboxItem faster than Open does from its ID (an IMAP FETCH of a whole
// mailbox opens every message once). OpenItem reads the same bytes as
// Open(ctx, it.ID); it may serve a message whose record a retention sweep
// is removing at that moment, as a read begun just before would.
type ItemOpener interface {
	OpenItem(ctx context.Context, it MailboxItem) (io.ReadCloser, error)
}

// OpenItem opens a listed message through j's ItemOpener when it has one,
// else by ID.
func OpenItem(ctx context.Context, j Journal, it MailboxItem) (io.ReadCloser, error) {
	if o, ok := j.(ItemOpener); ok {
		return o.OpenItem(ctx, it)
	}
	return j.Open(ctx, it.ID)
}

// ItemReader is implemented by journals that read many small listed
// messages whole into a caller's buffers more cheaply than through a reader
// each (one snapshot, one walk over the stored bodies in their order, no
// reader, no copy): what a FETCH reading ahead wants. ReadItems reads the
// messages of items that it can read that way (a body place, one chunk), in
// an order of its choosing: for item k it appends the message to buf(k)[:0]
// (or to a larger buffer of its own) and calls got(k, msg). An item it does
// not read (several chunks, no body place, gone, damaged) gets no call: the
// caller opens it, and meets any error there. The error is the read's as a
// whole (the journal closing, ctx done).
type ItemReader interface {
	ReadItems(ctx context.Context, items []MailboxItem, buf func(k int) []byte, got func(k int, msg []byte)) error
}

// SweepResult reports what a retention sweep did.
type SweepResult struct {
	Removed int // messages removed
	Kept    int // messages older than the horizon kept because a recipient is undelivered
}

// Stats is what `lifeline journal stats` prints.
type Stats struct {
	Messages    int64
	Mailboxes   int64
	BytesRaw    int64     // sum of raw message sizes
	BytesOnDisk int64     // what the backend occupies on disk
	Oldest      time.Time // zero when empty
}

// Problem is one inconsistency found by Verify.
type Problem struct {
	ID     ID // zero when not about one message
	Detail string
}

// Journal is the store. All methods are safe for concurrent use.
type Journal interface {
	// Append stores the raw message read from r (exactly the bytes the MTA will
	// deliver) with its envelope and returns only when the write is durable
	// (fsync'd). The header summary and the MIME structure (see Structure) are
	// parsed from r as it streams. Concurrent appends share
	// fsyncs. Appending a message whose identity is already stored writes nothing
	// and reports Duplicate. The caller must not use env after the call.
	Append(ctx context.Context, env Envelope, r io.Reader) (AppendResult, error)

	// Get returns a message's entry.
	Get(ctx context.Context, id ID) (Entry, error)

	// Open streams the raw message. The reader holds at most a chunk in memory.
	Open(ctx context.Context, id ID) (io.ReadCloser, error)

	// Structure returns the message's MIME structure, computed by
	// mimestruct when it was appended and stored beside it: its IMAP
	// ENVELOPE and BODYSTRUCTURE, and where each part's header and body lie
	// in what Open returns, so that a FETCH never parses the message again
	// and a malformed message cannot fail one. It returns ErrNotFound for an
	// unknown message, and for one journaled before structures were stored
	// (or by a parser whose encoding this one does not read): the caller
	// then runs mimestruct.Parse over Open, and may keep the result.
	Structure(ctx context.Context, id ID) (*mimestruct.Info, error)

	// Scan calls fn for every entry received in [since, until) in arrival order;
	// a zero until means no upper bound. fn returning an error stops the scan
	// and Scan returns that error.
	Scan(ctx context.Context, since, until time.Time, fn func(Entry) error) error

	// Mailbox returns a mailbox's UIDVALIDITY and counts, ErrNotFound if unknown.
	Mailbox(ctx context.Context, name string) (MailboxInfo, error)

	// CreateMailbox makes sure a mailbox exists and returns it: an existing
	// one unchanged, a new one empty with its UIDVALIDITY fixed now. An IMAP
	// folder shown before its first message (Sent) needs it, because a
	// UIDVALIDITY that changes when the first message arrives makes clients
	// discard their state for it (RFC 3501 §2.3.1.1).
	CreateMailbox(ctx context.Context, name string) (MailboxInfo, error)

	// Mailboxes calls fn for each known mailbox name in lexical order.
	Mailboxes(ctx context.Context, fn func(name string) error) error

	// List calls fn for each message of a mailbox with UID >= fromUID, in UID order.
	List(ctx context.Context, mailbox string, fromUID uint32, fn func(MailboxItem) error) error

	// SetState moves recipient number rcpt (index into Envelope.Recipients) of a
	// message to state to, recording reply as its LastReply. A transition that
	// State.CanBecome forbids returns ErrInvalidState.
	SetState(ctx context.Context, id ID, rcpt int, to State, reply string) error

	// Update applies the changes to one message's recipients atomically, in one
	// durable write (all recipients of one LMTP transaction share an fsync).
	// A transition out of custody or retrying counts one attempt. A transition
	// that State.CanBecome forbids fails the whole update with ErrInvalidState.
	Update(ctx context.Context, id ID, changes ...Change) error

	// Custody calls fn for every undelivered recipient (custody or retrying)
	// with Seq >= fromSeq, in arrival order, then recipient order. fn returning
	// an error stops the walk and Custody returns that error. Recipients whose
	// state changes during the walk may or may not be seen.
	Custody(ctx context.Context, fromSeq uint64, fn func(CustodyItem) error) error

	ControlStore

	// Sweep removes every message received before horizon unless one of its
	// recipients is undelivered (State.Undelivered), and reclaims disk space.
	Sweep(ctx context.Context, horizon time.Time) (SweepResult, error)

	// Stats summarises the journal.
	Stats(ctx context.Context) (Stats, error)

	// Verify checks the journal's internal consistency (every index entry points
	// at a message, every message's chunks are present and decode to its size,
	// every recipient's mailbox index holds it) and returns what is wrong.
	Verify(ctx context.Context) ([]Problem, error)

	Close() error
}

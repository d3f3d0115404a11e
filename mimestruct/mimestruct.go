// Package mimestruct computes, in one streaming pass over a raw message, what an
// IMAP server needs to answer FETCH ENVELOPE, BODYSTRUCTURE and BODY[section]
// without reading the message again to find its parts (RFC 3501 §7.4.2,
// RFC 9051 §7.5.2, RFC 2045, RFC 2046, RFC 2183).
//
// The journal tees every message it appends into a Parser and stores the
// encoded Info beside it, so that the structure is computed once, at append
// time, and a malformed message can never break a later FETCH.
//
// # Robustness
//
// Parse never fails on what a message contains: only a read error is an error.
// Whatever the bytes, the result keeps these invariants, which the fuzzer checks:
//
//   - 0 <= HeaderStart <= BodyStart <= End <= the message's length, and
//     Size == End-BodyStart; the top-level part spans the whole message.
//   - Children lie inside their parent's body, in order, without overlapping.
//   - A multipart has at least one child. A multipart whose boundary is missing
//     or never seen, or that lies beyond MaxDepth or MaxParts, is described as
//     text/plain (RFC 2045 §5.2: an invalid Content-Type means the default).
//   - A message/rfc822 (or message/global, RFC 6532 §3.5) part has exactly one
//     child, the embedded message's top-level part, spanning its whole body, and
//     a non-nil Message. Beyond MaxDepth or MaxParts it is described as
//     application/octet-stream instead.
//   - Every string is valid UTF-8 without NUL, CR or LF.
//
// Memory is bounded whatever the size of the message: a body is never held,
// only the first bytes of a line that may be a boundary delimiter and the header
// fields the result needs (each capped at maxField bytes, all of a message's
// together at maxKept, beyond which only Content-Type and
// Content-Transfer-Encoding are kept, shorter). So is the encoded Info.
//
// # Sizes and offsets
//
// Offsets and sizes count the bytes as given: a message stored with bare LF line
// ends has smaller sizes than its CRLF form on the wire. The journal stores
// exactly the bytes the MTA hands over, so these are the sizes of the message
// as stored and as an IMAP server built on the journal sends it.
//
// # Deviations from a strict parser
//
//   - The header section ends at the first empty line, or before the first line
//     that is neither a header field nor a folded continuation (RFC 5322 §2.2:
//     a message without the empty line then has a body all the same). A first
//     line starting with "From " (an mbox separator, RFC 4155) is skipped as part
//     of the header. Field names may carry 8-bit bytes.
//   - The first occurrence of a duplicated field wins.
//   - A boundary delimiter line is "--" boundary, optionally "--", then only
//     white space (RFC 2046 §5.1.1 transport padding; CR counts as white space),
//     and it ends every part nested below the multipart it belongs to (an inner
//     multipart left unterminated). The line break before it belongs to it.
//   - Addresses without a domain get Host "MISSING_DOMAIN", those without a
//     local part Mailbox "MISSING_MAILBOX", as Dovecot does: in an IMAP address
//     a NIL host means a group (RFC 3501 §7.4.2). Groups are kept, as a start
//     {Mailbox: name} and an end {} around their members.
package mimestruct

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Limits beyond which the rest of a message is opaque: the body of the last part
// started (MaxParts) or of the part too deep (MaxDepth). They bound the work and
// memory one message costs, and the size of the encoded Info.
const (
	// MaxDepth is how deeply parts may nest; the top-level part is at depth 1.
	MaxDepth = 20
	// MaxParts is how many parts one message may have, all depths together.
	MaxParts = 1000
)

// Placeholders for what an address lacks (see the package comment).
const (
	MissingMailbox = "MISSING_MAILBOX"
	MissingDomain  = "MISSING_DOMAIN"
)

// Info is what Parse learns about one message.
type Info struct {
	Envelope Envelope
	Body     Part // the whole message as a part: for a multipart message, Type "multipart"
}

// Address is an RFC 3501 §7.4.2 address. A group start is {Mailbox: groupname,
// Host: ""} and a group end {Mailbox: "", Host: ""}; every other address has a
// non-empty Mailbox and Host.
type Address struct{ Name, Mailbox, Host string }

// Envelope is the RFC 3501 §7.4.2 envelope of a message.
type Envelope struct {
	Date    time.Time // zero when missing or unparsable
	Subject string    // RFC 2047 decoded to UTF-8
	// Names are RFC 2047 decoded. Sender and ReplyTo are From when their
	// fields are missing or empty, as RFC 3501 §7.4.2 requires.
	From, Sender, ReplyTo, To, Cc, Bcc []Address
	InReplyTo                          []string // msg-ids without angle brackets
	MessageID                          string   // without angle brackets
}

// Part is one MIME entity (RFC 2045 §2.4): the whole message, a body part of a
// multipart, or the message embedded in a message/rfc822 part.
type Part struct {
	// Type and Subtype are lower case. Without a (valid) Content-Type they are
	// text/plain with charset us-ascii (RFC 2045 §5.2), or message/rfc822 in
	// a multipart/digest (RFC 2046 §5.1.5).
	Type, Subtype string
	// Params are the Content-Type parameters: keys lower case, RFC 2231
	// continuations joined and charsets decoded, RFC 2047 encoded words (which
	// mailers put into file names) decoded. Nil when there are none.
	Params map[string]string
	// ID, Description and Encoding are Content-ID, Content-Description and
	// Content-Transfer-Encoding (lower case, "7bit" when missing).
	ID, Description, Encoding string
	Size                      int64 // body octets (End-BodyStart), as stored
	// Lines counts the body's line feeds. IMAP reports it for text/* and
	// message/rfc822 parts only.
	Lines             int64
	MD5               string            // Content-MD5, if present
	Disposition       string            // Content-Disposition type, lower case, "" if none (RFC 2183)
	DispositionParams map[string]string // decoded like Params
	Language          []string          // Content-Language (RFC 3282)
	Location          string            // Content-Location (RFC 2557)
	// Byte offsets into the raw message, so that a server can stream
	// BODY[1.2], BODY[1.2.HEADER], BODY[1.2.MIME] and BODY[1.2.TEXT] without
	// parsing again: [HeaderStart,BodyStart) is this part's header including
	// the empty line that ends it; [BodyStart,End) its body.
	HeaderStart, BodyStart, End int64
	// Children are the parts of a multipart, or for message/rfc822 exactly one:
	// the embedded message's top-level part.
	Children []Part
	// Message is the embedded message's envelope for message/rfc822, else nil.
	Message *Envelope
}

// IsMultipart reports whether p is a multipart with its parts in Children.
func (p *Part) IsMultipart() bool { return p.Type == "multipart" && len(p.Children) > 0 }

// IsMessage reports whether p encapsulates a message (message/rfc822 or
// message/global): Children[0] is the embedded message's top-level part and
// Message its envelope.
func (p *Part) IsMessage() bool { return p.Message != nil && len(p.Children) == 1 }

// Parse reads r to its end and returns the message's structure. It fails only
// when reading fails, never because of what the message contains.
func Parse(r io.Reader) (*Info, error) {
	p := NewParser()
	if _, err := io.Copy(p, r); err != nil {
		return nil, fmt.Errorf("mimestruct: reading message: %w", err)
	}
	return p.Close()
}

// errClosed is returned by Write after Close.
var errClosed = errors.New("mimestruct: write after Close")

package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
	"strings"
)

// Message identity
//
// The same message is often offered to Lifeline more than once: Postfix re-queues
// it (postsuper -r), a milter connection is retried after a timeout, an operator
// replays a queue. The journal must store it once, so every message gets an
// identity computed from what stays the same across such offers, and the ID of a
// stored message is that identity:
//
//	ID = SHA-256( "lifeline-identity-v1"
//	            , lower-case MAIL FROM
//	            , the RCPT TO addresses, lower-cased, sorted, duplicates removed
//	            , SHA-256 of the content )[:16]
//
// (each string length-prefixed so that no two different inputs share an
// encoding). The content is the raw message with every trace or delivery field
// (IsTraceField: Received, Return-Path, Delivered-To, X-Original-To, …) cut out
// of its header section, and every CRLF read as LF; everything else, including
// the header fields' order and folding and the whole body, counts. Lower-casing
// is ASCII only so that a Go release with new Unicode tables never changes an
// identity.
//
// What is left out varies per delivery attempt: the MTA's queue id (in the
// envelope and in the Received field the MTA shows its milters), the time it was
// received, the Return-Path and Delivered-To of a previous hop, the order of
// RCPT TO.
//
// Known limits:
//   - A message without a Message-ID or Date that Postfix's cleanup completes on
//     re-queue through pickup (always_add_missing_headers, local submission) has
//     a new header field the second time, so it is a different identity and is
//     stored twice.
//   - If the MTA rewrote the recipients the first time (virtual alias expansion
//     before the milter saw them on a re-queue), the RCPT TO set differs and so
//     does the identity.
//   - Two byte-identical messages (after the trace fields) from the same sender
//     to the same recipients are one message. Senders put a unique Message-ID and
//     a Date in every message, so in practice only a re-sent copy is affected.
//   - A header section longer than HeaderLimit is only examined up to the limit:
//     a trace field after it counts as content.
//   - A field added or rewritten by a filter that runs before Lifeline (a DKIM
//     signer with a timestamp, a spam scanner's score) makes a different identity
//     unless it is listed in IsTraceField.

// identityVersion is hashed first, so that a future change of the definition can
// never collide with IDs made under this one.
const identityVersion = "lifeline-identity-v1"

// IsTraceField reports whether a header field (by name, any case) is left out of
// a message's identity because the MTA adds or changes it on each delivery
// attempt: trace fields (RFC 5321 §4.4, RFC 5322 §3.6.7), the delivery fields
// Postfix and Exim add (Delivered-To, X-Original-To, Envelope-To, X-Envelope-*),
// and fields that carry a queue id or the receiving host's verdict
// (X-Rspamd-Queue-Id, Authentication-Results, RFC 8601 §5: recomputed by the
// receiving host on each pass).
func IsTraceField(name string) bool {
	return isTraceField([]byte(name))
}

func isTraceField(name []byte) bool {
	for _, n := range [...]string{
		"received",
		"return-path",
		"delivered-to",
		"x-original-to",
		"envelope-to",
		"x-envelope-from",
		"x-envelope-to",
		"x-rspamd-queue-id",
		"authentication-results",
	} {
		if asciiEqualFold(name, n) {
			return true
		}
	}
	return false
}

// IdentityHasher computes a message's Summary and identity while it streams
// through: write the raw message to it (it is an io.Writer that never fails), then
// call Summary, Size and ID. It buffers the header section, at most HeaderLimit
// bytes, and hashes the body as it passes without keeping it.
//
// The result depends only on the bytes written, never on how they were split into
// Write calls. Writing after Summary, ContentSum or ID is a programming error and
// panics.
type IdentityHasher struct {
	hdr      []byte // the message's first bytes while the header section is open
	scanned  int    // hdr[:scanned] are complete lines, all part of the header section
	mboxFrom int    // length of an mbox "From " line that starts hdr, 0 if none
	limit    int    // HeaderLimit; smaller in tests so that fuzzing reaches it
	fields   bool   // a field line has been seen (a folded line may follow)
	inBody   bool
	finished bool
	size     int64

	content hash.Hash // SHA-256 of the content, see the identity above
	cr      bool      // a CR was held back at the end of the last write to content
	sum     [sha256.Size]byte
	summary Summary
}

// NewIdentityHasher returns a hasher for one message.
func NewIdentityHasher() *IdentityHasher {
	return &IdentityHasher{content: sha256.New(), limit: HeaderLimit}
}

// Write consumes the next bytes of the raw message. It never returns an error.
func (h *IdentityHasher) Write(p []byte) (int, error) {
	if h.finished {
		panic("journal: IdentityHasher written after it was summed")
	}
	n := len(p)
	h.size += int64(n)
	if h.inBody {
		h.writeContent(p)
		return n, nil
	}
	take := min(len(p), h.limit-len(h.hdr))
	h.hdr = append(h.hdr, p[:take]...)
	p = p[take:]
	if end, ok := h.scanLines(); ok {
		h.endHeader(end)
	} else if len(h.hdr) == h.limit {
		// The header section is too long: it ends at the last complete line within
		// the limit, and the rest is body. Deciding on exactly the first
		// HeaderLimit bytes keeps the result independent of how writes were split.
		h.endHeader(h.scanned)
	}
	if len(p) > 0 { // only possible once the header section has ended
		h.writeContent(p)
	}
	return n, nil
}

// scanLines classifies the complete lines not yet seen and reports where the
// header section ends once it knows: before the blank line or the first line that
// is not part of a field.
func (h *IdentityHasher) scanLines() (end int, ok bool) {
	for {
		nl := bytes.IndexByte(h.hdr[h.scanned:], '\n')
		if nl < 0 {
			return 0, false
		}
		lineEnd := h.scanned + nl + 1
		if h.scanned == 0 && bytes.HasPrefix(h.hdr, []byte("From ")) {
			// An mbox separator ("From sender date", RFC 4155) left in front of the
			// message by a local submission: it is envelope, not header, so it is
			// skipped like a trace field.
			h.mboxFrom = lineEnd
			h.scanned = lineEnd
			continue
		}
		switch classifyLine(trimLineEnd(h.hdr[h.scanned:lineEnd]), !h.fields) {
		case lineBlank, lineNotField:
			return h.scanned, true
		case lineField:
			h.fields = true
		}
		h.scanned = lineEnd
	}
}

// endHeader closes the header section hdr[:end]: the summary is taken from it, the
// fields that are not trace fields go into the content hash, then everything from
// end on (the blank line, the body so far).
func (h *IdentityHasher) endHeader(end int) {
	var seen uint8
	splitFields(h.hdr[min(h.mboxFrom, end):end], func(f field) {
		setSummary(&h.summary, &seen, f)
		if !isTraceField(f.name) {
			h.writeContent(f.raw)
		}
	})
	h.writeContent(h.hdr[end:])
	h.hdr = nil
	h.inBody = true
}

// writeContent feeds the content hash, reading CRLF as LF. A CR at the end of p
// is held back until the next byte shows whether it starts a CRLF.
func (h *IdentityHasher) writeContent(p []byte) {
	if len(p) == 0 {
		return
	}
	if h.cr {
		h.cr = false
		if p[0] != '\n' {
			h.content.Write([]byte{'\r'})
		}
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\r')
		if i < 0 {
			h.content.Write(p)
			return
		}
		h.content.Write(p[:i])
		switch {
		case i+1 == len(p):
			h.cr = true
			return
		case p[i+1] == '\n':
			// drop the CR of a CRLF
		default:
			h.content.Write([]byte{'\r'})
		}
		p = p[i+1:]
	}
}

// finish ends the stream: a header section still open runs to the end of the
// message (its last line may lack a line end).
func (h *IdentityHasher) finish() {
	if h.finished {
		return
	}
	if !h.inBody {
		// The last line has no line end; it belongs to the header section if it is
		// a field or a folded line ("\r" alone is a blank line, content).
		end := len(h.hdr)
		if h.scanned < len(h.hdr) {
			switch classifyLine(trimLineEnd(h.hdr[h.scanned:]), !h.fields) {
			case lineBlank, lineNotField:
				end = h.scanned
			}
		}
		h.endHeader(end)
	}
	if h.cr {
		h.content.Write([]byte{'\r'})
		h.cr = false
	}
	h.content.Sum(h.sum[:0])
	h.finished = true
}

// Size returns the number of bytes written so far.
func (h *IdentityHasher) Size() int64 { return h.size }

// Summary returns the header summary. It ends the stream.
func (h *IdentityHasher) Summary() Summary {
	h.finish()
	return h.summary
}

// ContentSum returns the SHA-256 of the message content as defined for the
// identity. It ends the stream.
func (h *IdentityHasher) ContentSum() [sha256.Size]byte {
	h.finish()
	return h.sum
}

// ID returns the identity of the message written so far with the envelope's
// MAIL FROM and RCPT TO addresses. It ends the stream.
func (h *IdentityHasher) ID(env Envelope) ID {
	rcpts := make([]string, len(env.Recipients))
	for i, r := range env.Recipients {
		rcpts[i] = r.Address
	}
	return Identity(env.MailFrom, rcpts, h.ContentSum())
}

// Identity combines an envelope and a content hash (IdentityHasher.ContentSum)
// into a message ID, as documented above.
func Identity(mailFrom string, rcpts []string, content [sha256.Size]byte) ID {
	norm := make([]string, len(rcpts))
	for i, r := range rcpts {
		norm[i] = normalizeAddress(r)
	}
	slices.Sort(norm)
	norm = slices.Compact(norm)

	d := sha256.New()
	var buf []byte
	put := func(s string) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		d.Write(buf)
		d.Write([]byte(s))
	}
	put(identityVersion)
	put(normalizeAddress(mailFrom))
	buf = binary.AppendUvarint(buf[:0], uint64(len(norm)))
	d.Write(buf)
	for _, r := range norm {
		put(r)
	}
	d.Write(content[:])
	var id ID
	copy(id[:], d.Sum(nil))
	return id
}

// normalizeAddress lower-cases an envelope address (ASCII only) and removes white
// space and one pair of angle brackets around it, which some front ends leave on.
func normalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	if len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = a[1 : len(a)-1]
	}
	b := []byte(a)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

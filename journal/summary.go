package journal

import (
	"bytes"
	"fmt"
	"io"
)

// HeaderLimit caps how much of a message is examined as its header section
// (RFC 5322 §2.1). A header section longer than this is cut at the last complete
// line before the limit and the rest of the message is treated as body for the
// summary and the identity. The message itself is always stored whole.
const HeaderLimit = 1 << 20

// SummaryFieldMax caps each Summary value, so that a message with a megabyte of
// To: addresses does not bloat every listing. Values are cut at a byte boundary.
const SummaryFieldMax = 32 << 10

// ParseSummary reads a raw message and returns its header summary. It consumes r
// to the end (it shares the parser with IdentityHasher, which needs the body).
func ParseSummary(r io.Reader) (Summary, error) {
	h := NewIdentityHasher()
	if _, err := io.Copy(h, r); err != nil {
		return Summary{}, fmt.Errorf("journal: reading message: %w", err)
	}
	return h.Summary(), nil
}

// headerLine classifies one line of the header section.
type headerLine uint8

const (
	lineField    headerLine = iota // "Name: value" (RFC 5322 §2.2, with obs WSP before ':', §4.5)
	lineFolded                     // continuation of the previous field (starts with WSP, §2.2.3)
	lineBlank                      // the empty line that ends the header section
	lineNotField                   // anything else: the header section ends before it
)

// classifyLine looks at one line of the header section, without its line end.
// first reports whether no field has been seen yet: a folded line there has
// nothing to continue, so it ends the (empty) header section.
func classifyLine(line []byte, first bool) headerLine {
	if len(line) == 0 {
		return lineBlank
	}
	if line[0] == ' ' || line[0] == '\t' {
		if first {
			return lineNotField
		}
		return lineFolded
	}
	if fieldNameEnd(line) < 0 {
		return lineNotField
	}
	return lineField
}

// fieldNameEnd returns the length of the field name at the start of line, or -1
// when line does not start a header field. A field name is one or more printable
// US-ASCII characters except colon (RFC 5322 §3.6.8); obsolete syntax allows
// white space between the name and the colon (RFC 5322 §4.5).
func fieldNameEnd(line []byte) int {
	n := 0
	for n < len(line) && line[n] >= 33 && line[n] <= 126 && line[n] != ':' {
		n++
	}
	if n == 0 {
		return -1
	}
	i := n
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if i == len(line) || line[i] != ':' {
		return -1
	}
	return n
}

// trimLineEnd removes a trailing LF and a CR before it.
func trimLineEnd(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	return bytes.TrimSuffix(line, []byte{'\r'})
}

// field is one header field: its name and its raw bytes, including the name,
// every continuation line and the line ends.
type field struct {
	name []byte
	raw  []byte
}

// value returns the field body unfolded (RFC 5322 §2.2.3: every line break that
// folds the field is removed, the white space after it is kept), with the white
// space around it trimmed. A bare CR, which RFC 5322 forbids but mail carries,
// becomes a space so that a summary value is always a single line. Everything
// else (NUL, 8-bit bytes, invalid UTF-8) is kept as it is: decoding is the
// reader's business.
func (f field) value() string {
	colon := bytes.IndexByte(f.raw, ':') // present: the field was classified lineField
	body := f.raw[colon+1:]
	// Leading white space and fold breaks are not part of the value.
	for len(body) > 0 && (body[0] == ' ' || body[0] == '\t' || body[0] == '\r' || body[0] == '\n') {
		body = body[1:]
	}
	out := make([]byte, 0, min(len(body), SummaryFieldMax))
	for i := 0; i < len(body) && len(out) < SummaryFieldMax; i++ {
		switch c := body[i]; c {
		case '\n':
		case '\r':
			if i+1 < len(body) && body[i+1] == '\n' {
				continue
			}
			out = append(out, ' ')
		default:
			out = append(out, c)
		}
	}
	return string(bytes.TrimRight(out, " \t"))
}

// splitFields cuts a header section (complete lines, as classified while
// streaming, the last one possibly without a line end) into fields.
func splitFields(section []byte, fn func(field)) {
	start, nameLen := -1, 0 // the current field: section[start:end]
	end := 0
	for end < len(section) {
		next := bytes.IndexByte(section[end:], '\n') + 1
		if next == 0 {
			next = len(section) - end
		}
		line := section[end : end+next]
		if line[0] == ' ' || line[0] == '\t' {
			// A folded line continues the current field (the header section never
			// starts with one: classifyLine ends it there).
			end += next
			continue
		}
		if start >= 0 {
			fn(field{name: section[start : start+nameLen], raw: section[start:end]})
		}
		start, nameLen = end, max(fieldNameEnd(line), 0)
		end += next
	}
	if start >= 0 {
		fn(field{name: section[start : start+nameLen], raw: section[start:end]})
	}
}

// setSummary records f in s if it is a summary field not seen yet (the first
// occurrence wins, as for a reader that takes the first of duplicated fields).
func setSummary(s *Summary, seen *uint8, f field) {
	var bit uint8
	var dst *string
	switch {
	case asciiEqualFold(f.name, "from"):
		bit, dst = 1, &s.From
	case asciiEqualFold(f.name, "to"):
		bit, dst = 2, &s.To
	case asciiEqualFold(f.name, "cc"):
		bit, dst = 4, &s.Cc
	case asciiEqualFold(f.name, "subject"):
		bit, dst = 8, &s.Subject
	case asciiEqualFold(f.name, "date"):
		bit, dst = 16, &s.Date
	case asciiEqualFold(f.name, "message-id"):
		bit, dst = 32, &s.MessageID
	default:
		return
	}
	if *seen&bit != 0 {
		return
	}
	*seen |= bit
	*dst = f.value()
}

// asciiEqualFold compares b with the lower-case ASCII string s, ignoring ASCII
// case only: field names are ASCII (RFC 5322 §3.6.8), and a Unicode fold would
// make the result depend on the Unicode tables of the Go release.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

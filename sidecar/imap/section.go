package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/lifelinemail/lifeline/journal"
)

// maxHeaderLine is how much of one header line is looked at to classify it,
// as package mimestruct does (RFC 5322 §2.1.1 allows 998 octets).
const maxHeaderLine = 64 << 10

// maxHeaderKept bounds the header bytes kept for HEADER.FIELDS and header
// SEARCH: fields beyond the first MiB of a header section are not seen
// (journal.HeaderLimit, the summary's own bound).
const maxHeaderKept = journal.HeaderLimit

// readHeader reads a message's top-level header section from r (positioned at
// the start of the message) and returns its length, which is where the body
// starts, and its first maxHeaderKept bytes. The rules are package
// mimestruct's, so that BODY[HEADER] and BODY[TEXT] meet where BODYSTRUCTURE
// says the body begins: the header ends after the first empty line, or before
// the first line that is neither a field nor a folded continuation (RFC 5322
// §2.2); a first line "From " (an mbox separator) belongs to the header. It
// reads no further than the header.
func readHeader(r *bufio.Reader) (end int64, kept []byte, err error) {
	var line []byte // the first maxHeaderLine bytes of the current line
	first := true
	for {
		start := end
		line = line[:0]
		n := 0
		complete := false
		for {
			chunk, err := r.ReadSlice('\n')
			n += len(chunk)
			if room := maxHeaderLine - len(line); room > 0 {
				line = append(line, chunk[:min(room, len(chunk))]...)
			}
			if len(kept) < maxHeaderKept {
				kept = append(kept, chunk[:min(maxHeaderKept-len(kept), len(chunk))]...)
			}
			if err == nil {
				complete = true
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) {
				break
			}
			return 0, nil, err
		}
		end += int64(n)
		if n == 0 {
			return end, kept, nil // end of message: all header
		}
		c := line
		trunc := n > maxHeaderLine
		if complete && !trunc {
			c = bytes.TrimSuffix(c[:len(c)-1], []byte("\r"))
		}
		isFirst := first
		first = false
		switch {
		case len(c) == 0 && !trunc:
			return end, kept, nil // the empty line ends the header
		case c[0] == ' ' || c[0] == '\t':
			if !isFirst {
				continue
			}
		default:
			if fieldNameEnd(c) > 0 {
				continue
			}
			if isFirst && start == 0 && bytes.HasPrefix(c, []byte("From ")) {
				continue
			}
		}
		// This line is not part of the header: the body starts with it.
		kept = kept[:min(int64(len(kept)), start)]
		return start, kept, nil
	}
}

// fieldNameEnd returns the length of the field name at the start of line, or
// 0 if line does not start a header field (RFC 5322 §3.6.8, leniently: 8-bit
// bytes, and white space before the colon, §4.5).
func fieldNameEnd(line []byte) int {
	n := 0
	for n < len(line) && line[n] > ' ' && line[n] != ':' && line[n] != 0x7f {
		n++
	}
	i := n
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if n == 0 || i == len(line) || line[i] != ':' {
		return 0
	}
	return n
}

// headerField is one field of a raw header section.
type headerField struct {
	name string // as written
	raw  []byte // the whole field, continuation lines and line ends included
}

// splitHeader splits a raw header section into its fields; lines that are not
// fields (an mbox "From " line, the empty line) are left out.
func splitHeader(h []byte) []headerField {
	var out []headerField
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		line := h
		if i >= 0 {
			line = h[:i+1]
		}
		h = h[len(line):]
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) > 0 {
				last := &out[len(out)-1]
				last.raw = append(last.raw, line...)
			}
			continue
		}
		n := fieldNameEnd(line)
		if n == 0 {
			continue
		}
		out = append(out, headerField{name: string(line[:n]), raw: append([]byte(nil), line...)})
	}
	return out
}

// value returns a field's unfolded value (RFC 5322 §2.2.3).
func (f headerField) value() string {
	raw := f.raw[bytes.IndexByte(f.raw, ':')+1:]
	var b strings.Builder
	for _, line := range bytes.Split(raw, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if b.Len() > 0 && len(line) > 0 {
			b.WriteByte(' ')
		}
		b.Write(bytes.TrimSpace(line))
	}
	return b.String()
}

// filterHeader returns the fields of a raw header whose names are (not) in
// names, followed by the empty line (RFC 3501 §6.4.5: HEADER.FIELDS and
// HEADER.FIELDS.NOT; the empty line is always included).
func filterHeader(h []byte, names []string, not bool) []byte {
	var out []byte
	for _, f := range splitHeader(h) {
		in := false
		for _, n := range names {
			if strings.EqualFold(n, f.name) {
				in = true
				break
			}
		}
		if in != not {
			out = append(out, f.raw...)
			if out[len(out)-1] != '\n' {
				out = append(out, '\r', '\n') // the last field of a message without body
			}
		}
	}
	return append(out, '\r', '\n')
}

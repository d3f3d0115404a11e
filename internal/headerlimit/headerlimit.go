// Package headerlimit bounds the header sections of a message before
// go-message reads them: the message's own header, and the header of every
// part of a multipart body. go-message keeps every header field it reads,
// without a bound for part headers, so a message of a few MB of tiny fields
// would cost hundreds of MB; the readers here drop the fields past the bounds
// and pass everything else byte for byte. The IMAP server's SEARCH and the
// webmail's message view both read messages through it.
package headerlimit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Bounds of one header section (the message's own and each part's) handed to
// go-message. Its textproto.ReadHeader keeps a field struct, a line buffer of
// at least 256 bytes and a map entry per field, without a limit of its own
// for part headers (message.Read stops at 1 MB for the top-level header, and
// then fails the whole message): a part header of 2 million "a:b" lines,
// which fits an MTA's 10 MB message size limit, costs hundreds of MB. Fields
// past either bound are dropped; what a reader needs (From, Subject,
// Content-Type…) comes first in any real header, which rarely has more than
// 200 fields or 100 KiB.
const (
	// MaxFields is the number of fields kept of one header section.
	MaxFields = 1000
	// MaxBytes is the number of bytes kept of one header section, below
	// go-message's own 1 MB limit so that a long header is cut here rather
	// than failing the message.
	MaxBytes = 256 << 10
)

// limiterBuf is the size of the line buffer of a limiter. It is above
// the 4096 bytes of go-message's multipart reader, which fails on a boundary
// delimiter line longer than its buffer: every line it can take for a
// delimiter is seen whole here.
const limiterBuf = 8 << 10

// Modes of a limiter.
const (
	modeBody   = iota // passing a body (or a multipart preamble/epilogue) through
	modeHeader        // passing a header section through, counting
	modeDrop          // dropping the rest of a header section over a bound
)

// limiter copies a stream, cutting every header section in it to
// maxFields fields and maxBytes bytes: the message's header when it starts in
// modeHeader, or the header of each part of a multipart body when it is given
// the boundary. A stream whose headers are within the bounds is copied
// unchanged, byte for byte, so that go-message reading it sees exactly the
// message, and finds the same bodies.
//
// The dropped rest of a header ends, as in package mimestruct (whose offsets
// BODYSTRUCTURE reports), at the first empty line or before the first line
// that is neither a field nor a folded continuation (RFC 5322 §2.2); a
// boundary delimiter line (RFC 2046 §5.1.1) is such a line. An empty line is
// inserted there so that go-message sees a header ended as RFC 5322 §2.1 says
// and the body starting where mimestruct says it does.
type limiter struct {
	br *bufio.Reader
	// dash is "--" + boundary for a multipart body, nil for a single header
	// section at the start of the stream.
	dash                []byte
	maxFields, maxBytes int

	mode      int
	lineStart bool // the next chunk starts a line
	prevCRLF  bool // the last line ended in CRLF
	bodyStart bool // the next line starts a part's body
	fields, n int  // of the current header section
	// seenFirst, lf and closed follow go-message's multipart reader: the
	// first delimiter line seen, whether it ended in a bare LF, the close
	// delimiter seen.
	seenFirst, lf, closed bool
	pending               []byte
	scratch               []byte
	err                   error
	passThrough           bool // a single header section is over: copy the rest as is
}

// Header returns a reader of the message r in which the header section at
// its start is cut to MaxFields fields and MaxBytes bytes, for go-message's
// message.Read or textproto.ReadHeader to read. The body after the header
// is not examined. A message whose header is within the bounds reads
// unchanged.
func Header(r io.Reader) io.Reader {
	return newHeader(r, MaxFields, MaxBytes)
}

// Parts returns a reader of the multipart body r (delimited by boundary) in
// which the header of every part is cut to MaxFields fields and MaxBytes
// bytes, for go-message's textproto.MultipartReader to read. A body whose
// part headers are within the bounds reads unchanged.
func Parts(r io.Reader, boundary string) io.Reader {
	return newParts(r, boundary, MaxFields, MaxBytes)
}

// newHeader bounds the header section at the start of r (a message) to
// maxFields fields and maxBytes bytes.
func newHeader(r io.Reader, maxFields, maxBytes int) *limiter {
	return &limiter{br: bufio.NewReaderSize(r, limiterBuf), maxFields: maxFields,
		maxBytes: maxBytes, mode: modeHeader, lineStart: true}
}

// newParts bounds the header of every part of the multipart body r to
// maxFields fields and maxBytes bytes.
func newParts(r io.Reader, boundary string, maxFields, maxBytes int) *limiter {
	return &limiter{br: bufio.NewReaderSize(r, limiterBuf), dash: []byte("--" + boundary),
		maxFields: maxFields, maxBytes: maxBytes, mode: modeBody, lineStart: true}
}

func (h *limiter) Read(p []byte) (int, error) {
	for len(h.pending) == 0 {
		if h.err != nil {
			return 0, h.err
		}
		if h.passThrough {
			return h.br.Read(p)
		}
		h.step()
	}
	n := copy(p, h.pending)
	h.pending = h.pending[n:]
	return n, nil
}

// step reads one chunk of a line (a whole line unless it is longer than the
// buffer) and sets what of it is passed on.
func (h *limiter) step() {
	if h.mode == modeBody && h.lineStart && h.bulk() {
		return
	}
	chunk, err := h.br.ReadSlice('\n')
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		h.err = err
	}
	whole := err == nil // the chunk ends a line
	start := h.lineStart
	h.lineStart = whole
	// At the start of a part's body go-message takes a delimiter without
	// a line break before it.
	prevCRLF := h.prevCRLF || h.bodyStart
	h.bodyStart = false
	if whole {
		h.prevCRLF = bytes.HasSuffix(chunk, []byte("\r\n"))
	}
	if len(chunk) == 0 {
		return
	}
	// chunk stays valid until the next read of br, which happens only
	// once pending is consumed.
	h.pending = chunk
	switch h.mode {
	case modeBody:
		if start && whole && h.delimiter(chunk, prevCRLF) {
			h.startHeader()
		}
	case modeHeader:
		if start && isBlank(chunk) {
			h.endHeader()
			return
		}
		if start && chunk[0] != ' ' && chunk[0] != '\t' {
			h.fields++
		}
		room := h.maxBytes - h.n
		h.n += len(chunk)
		switch {
		case start && (h.fields > h.maxFields || len(chunk) > room):
			// Drop the whole line rather than pass a field cut
			// before its colon.
			h.pending = nil
			h.mode = modeDrop
			if !whole {
				h.skipLine()
			}
		case len(chunk) > room:
			// A field longer than the room left, cut within a line:
			// end the line kept so that go-message sees it whole.
			h.scratch = append(append(h.scratch[:0], chunk[:room]...), '\r', '\n')
			h.pending = h.scratch
			h.mode = modeDrop
			if !whole {
				h.skipLine()
			}
		}
	case modeDrop:
		h.pending = nil
		if !start {
			return
		}
		if isBlank(chunk) {
			h.pending = chunk
			h.endHeader()
			return
		}
		// A delimiter here is at the start of the part's body, where
		// go-message takes one without a line break before it.
		delim := whole && h.delimiter(chunk, true)
		if !delim && (chunk[0] == ' ' || chunk[0] == '\t' || isField(chunk)) {
			if !whole {
				h.skipLine()
			}
			return
		}
		// This line is not part of the header: end the header before
		// it, with an empty line in the style of the line's own end.
		nl := []byte("\r\n")
		if whole && !bytes.HasSuffix(chunk, nl) {
			nl = nl[1:]
		}
		h.scratch = append(append(h.scratch[:0], nl...), chunk...)
		h.pending = h.scratch
		h.endHeader()
		if delim {
			h.startHeader()
		}
	}
}

// bulk passes on, at once, the whole lines of a body buffered up to the next
// line that starts with "-" (which may be a delimiter, examined on its own):
// line by line, the copy made reading a body three times slower. It reports
// false when there is no such line to pass.
func (h *limiter) bulk() bool {
	buf, _ := h.br.Peek(h.br.Buffered())
	if len(buf) == 0 || buf[0] == '-' {
		return false
	}
	var end int // after the last line end passed
	if i := bytes.Index(buf, []byte("\n-")); i >= 0 {
		end = i + 1
	} else if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		end = i + 1
	} else {
		return false
	}
	h.prevCRLF = end >= 2 && buf[end-2] == '\r'
	h.bodyStart = false
	// buf stays valid until the next read of br, which happens only once
	// pending is consumed.
	h.pending = buf[:end]
	_, _ = h.br.Discard(end) // buffered: cannot fail
	return true
}

// skipLine drops the rest of a line longer than the buffer.
func (h *limiter) skipLine() {
	for {
		_, err := h.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			h.err = err
		}
		h.lineStart = true
		return
	}
}

func (h *limiter) startHeader() {
	h.mode, h.fields, h.n = modeHeader, 0, 0
}

func (h *limiter) endHeader() {
	h.mode = modeBody
	h.bodyStart = true
	if h.dash == nil {
		h.passThrough = true
	}
}

// delimiter reports whether line (whole, with its line end) is a boundary
// delimiter line after which go-message's multipart reader reads a part
// header: "--" boundary, linear white space and the line end (RFC 2046
// §5.1.1), the line end and the one before it (when prevCRLF says there is
// one) both CRLF, or LF when the first delimiter line ended in LF. A close delimiter (with "--" after the
// boundary) ends the multipart: nothing after it is taken for a delimiter.
func (h *limiter) delimiter(line []byte, prevCRLF bool) bool {
	if h.dash == nil || h.closed {
		return false
	}
	rest, ok := bytes.CutPrefix(line, h.dash)
	if !ok {
		return false
	}
	closing := false
	if r, ok := bytes.CutPrefix(rest, []byte("--")); ok {
		rest, closing = r, true
	}
	rest = bytes.TrimLeft(rest, " \t")
	if !h.seenFirst {
		// The preamble: go-message takes any line for the first
		// delimiter, and its line end sets the style.
		if closing {
			h.closed = string(rest) == "\r\n"
			return false
		}
		if string(rest) != "\r\n" && string(rest) != "\n" {
			return false
		}
		h.seenFirst, h.lf = true, string(rest) == "\n"
		return true
	}
	nl := "\r\n"
	if h.lf {
		nl = "\n"
	}
	if !h.lf && !prevCRLF {
		return false
	}
	if closing {
		// go-message also takes a close delimiter without a line end
		// at the end of the input, which ends the walk all the same.
		if string(rest) == nl {
			h.closed = true
		}
		return false
	}
	return string(rest) == nl
}

func isBlank(line []byte) bool {
	return string(line) == "\r\n" || string(line) == "\n"
}

// isField reports whether line starts a header field: a name of printable
// characters, optional white space, a colon (RFC 5322 §2.2, §4.5 leniently,
// as package mimestruct does).
func isField(line []byte) bool {
	n := 0
	for n < len(line) && line[n] > ' ' && line[n] != ':' && line[n] != 0x7f {
		n++
	}
	i := n
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	return n > 0 && i < len(line) && line[i] == ':'
}

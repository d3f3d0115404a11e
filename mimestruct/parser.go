package mimestruct

import "bytes"

// Memory bounds of a Parser (see the package comment).
const (
	// maxLine is how much of one header line is looked at; the rest of a longer
	// line is skipped (RFC 5322 §2.1.1 allows 998 octets).
	maxLine = 64 << 10
	// maxField caps one kept header field's value.
	maxField = 64 << 10
	// maxKept caps the values kept of all of one message's header fields.
	maxKept = 1 << 20
	// Past maxKept, Content-Type (for the boundary) and
	// Content-Transfer-Encoding are still kept, this much of each.
	minContentType = 1 << 10
	minEncoding    = 64
	// maxBoundary is the longest boundary parameter honoured; RFC 2046 §5.1.1
	// allows 70 characters. A multipart with a longer one is text/plain.
	maxBoundary = 250
	// maxDelimLine is how much of a body line starting with "-" is collected to
	// compare with the boundaries; the rest must be white space.
	maxDelimLine = 2 + maxBoundary + 2 + 32
)

// mark is a position in the message and the number of line feeds before it, so
// that Lines is a subtraction.
type mark struct{ off, nl int64 }

func maxMark(a, b mark) mark {
	if a.off >= b.off {
		return a
	}
	return b
}

type nodeKind uint8

const (
	kindLeaf      nodeKind = iota
	kindMultipart          // looks for its boundary while state != afterClose
	kindMessage            // message/rfc822: one child, the embedded message
)

// multipart states (RFC 2046 §5.1.1).
type mpState uint8

const (
	inPreamble mpState = iota
	inParts
	afterClose // in the epilogue: its own boundary no longer counts
)

// node is a part while the message streams; Close turns the nodes into the
// tree of Parts.
type node struct {
	part         Part // without Children and Message
	header, body mark
	end          mark
	parent       int32
	children     []int32
	env          *Envelope // this node starts a message: its envelope goes here
	kind         nodeKind
	state        mpState
	boundary     string
	digest       bool // a multipart/digest: its children default to message/rfc822
	inDigest     bool // a child of a multipart/digest
}

// Parser computes an Info from a message written to it in pieces of any size.
// It is what Parse uses; the journal writes the stream it appends into one.
// The result does not depend on how the message is cut into writes. A Parser
// is not safe for concurrent use.
type Parser struct {
	off int64 // bytes written so far

	// The current line.
	ls      int64  // where it starts
	nl      int64  // line feeds before it
	lineN   int    // its bytes so far
	line    []byte // what is collected of it (see feed)
	collect int    // how much of it to collect
	tailWS  bool   // its bytes beyond those collected are white space
	last    byte   // the last byte written
	eol     int    // its line end: 1 for LF, 2 for CRLF
	prevEOL int    // the line end of the line before it

	nodes    []node
	stack    []int32 // the open parts, outermost first
	inHeader bool    // the innermost open part is in its header
	active   int     // open multiparts looking for their boundary
	opaque   bool    // MaxParts reached: boundaries are no longer looked for

	hdr  header
	kept int // bytes of field values kept, against maxKept

	info   *Info
	closed bool
}

// NewParser returns a Parser at the start of a message.
func NewParser() *Parser {
	p := &Parser{info: &Info{}, tailWS: true}
	p.nodes = append(p.nodes, node{parent: -1, env: &p.info.Envelope})
	p.stack = append(p.stack, 0)
	p.inHeader = true
	return p
}

// Write parses the next bytes of the message. It never fails before Close.
func (p *Parser) Write(b []byte) (int, error) {
	if p.closed {
		return 0, errClosed
	}
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		seg := b
		if i >= 0 {
			seg = b[:i+1]
		}
		p.feed(seg)
		b = b[len(seg):]
		if i >= 0 {
			p.endLine()
		}
	}
	return n, nil
}

// Close ends the message and returns its structure. Later calls return the
// same Info.
func (p *Parser) Close() (*Info, error) {
	if p.closed {
		return p.info, nil
	}
	p.closed = true
	if p.lineN > 0 {
		// The last line has no line end.
		p.eol = 0
		p.process(p.content())
		p.lineN = 0
	}
	end := mark{p.off, p.nl}
	for len(p.stack) > 0 {
		end = p.closeTop(end)
	}
	p.info.Body = p.build(0)
	p.nodes, p.line, p.hdr = nil, nil, header{}
	return p.info, nil
}

// feed takes the next piece of the current line (ending in its LF, if it has
// one). A header line is collected up to maxLine; a body line only when it may
// be a boundary delimiter, and then only its start: everything else is counted
// and skipped.
func (p *Parser) feed(seg []byte) {
	if p.lineN == 0 {
		p.ls = p.off
		p.line = p.line[:0]
		p.tailWS = true
		switch {
		case p.inHeader:
			p.collect = maxLine
		case p.active > 0 && !p.opaque && seg[0] == '-':
			p.collect = maxDelimLine
		default:
			p.collect = 0
		}
	}
	if seg[len(seg)-1] == '\n' {
		p.eol = 1
		if len(seg) >= 2 && seg[len(seg)-2] == '\r' || len(seg) == 1 && p.lineN > 0 && p.last == '\r' {
			p.eol = 2
		}
	}
	p.lineN += len(seg)
	p.off += int64(len(seg))
	p.last = seg[len(seg)-1]
	rest := seg
	if room := p.collect - len(p.line); room > 0 {
		k := min(room, len(rest))
		p.line = append(p.line, rest[:k]...)
		rest = rest[k:]
	}
	if len(rest) > 0 && p.tailWS && len(p.line) > 0 && p.line[0] == '-' {
		for _, c := range rest {
			if !isLWSP(c) && c != '\n' {
				p.tailWS = false
				break
			}
		}
	}
}

// content is the collected part of the current line without its line end.
func (p *Parser) content() []byte {
	if n := p.lineN - p.eol; len(p.line) > n {
		return p.line[:n]
	}
	return p.line
}

func (p *Parser) endLine() {
	p.process(p.content())
	p.nl++
	p.prevEOL = p.eol
	p.lineN = 0
}

// process handles one complete line; c is what was collected of it, without
// the line end.
func (p *Parser) process(c []byte) {
	trunc := len(c) < p.lineN-p.eol
	start := mark{p.ls, p.nl}
	end := mark{p.off, p.nl}
	if p.eol > 0 {
		end.nl++
	}
	if p.active > 0 && !p.opaque && len(c) >= 2 && c[0] == '-' && c[1] == '-' {
		if i, final, ok := p.matchBoundary(c, trunc); ok {
			p.delimiter(i, final, start, end)
			return
		}
	}
	for p.inHeader && p.headerLine(c, trunc, start, end) {
		// The header ended before this line, which begins what follows:
		// an embedded message's header, or a body.
	}
}

// matchBoundary reports whether c is a delimiter line of an open multipart
// (RFC 2046 §5.1.1), the innermost first, and which: its index in the stack.
func (p *Parser) matchBoundary(c []byte, trunc bool) (int, bool, bool) {
	for i := len(p.stack) - 1; i >= 0; i-- {
		n := &p.nodes[p.stack[i]]
		if n.kind != kindMultipart || n.state == afterClose {
			continue
		}
		b := n.boundary
		if len(c) < 2+len(b) || string(c[2:2+len(b)]) != b {
			continue
		}
		rest := c[2+len(b):]
		final := false
		if len(rest) >= 2 && rest[0] == '-' && rest[1] == '-' {
			final, rest = true, rest[2:]
		}
		if !allLWSP(rest) || trunc && !p.tailWS {
			continue
		}
		return i, final, true
	}
	return 0, false, false
}

// delimiter handles a delimiter line of the multipart at stack index i: it ends
// the part in progress and everything nested in it, and starts the next part
// after the line unless it is the close delimiter.
func (p *Parser) delimiter(i int, final bool, start, end mark) {
	if !final && len(p.nodes) >= MaxParts {
		// No more parts: from here on the message is the body of the part
		// in progress.
		p.opaque = true
		return
	}
	// The line break before the delimiter is part of it (RFC 2046 §5.1.1).
	at := start
	if p.prevEOL > 0 {
		at = mark{start.off - int64(p.prevEOL), start.nl - 1}
	}
	for len(p.stack) > i+1 {
		// A part never ends before its last child, which may have ended
		// on the line break the delimiter claims (an embedded message whose
		// header's empty line is right before it).
		at = p.closeTop(at)
	}
	mp := p.stack[i]
	n := &p.nodes[mp]
	if final {
		n.state = afterClose
		p.active--
		return
	}
	n.state = inParts
	child := p.newNode(mp, end)
	p.nodes[child].inDigest = p.nodes[mp].digest
	p.nodes[mp].children = append(p.nodes[mp].children, child)
	p.stack = append(p.stack, child)
	p.inHeader = true
}

func (p *Parser) newNode(parent int32, header mark) int32 {
	p.nodes = append(p.nodes, node{parent: parent, header: header})
	return int32(len(p.nodes) - 1)
}

// headerLine handles a line of the innermost part's header. It reports whether
// the header ended before the line, which must then be handled again.
func (p *Parser) headerLine(c []byte, trunc bool, start, end mark) bool {
	h := &p.hdr
	first := h.lines == 0
	h.lines++
	switch {
	case len(c) == 0 && !trunc:
		p.endHeader(end)
		return false
	case len(c) > 0 && (c[0] == ' ' || c[0] == '\t'):
		if !first {
			h.fold(c)
			return false
		}
	default:
		if n := fieldNameEnd(c); n > 0 {
			p.startField(c[:n], c[bytes.IndexByte(c, ':')+1:])
			return false
		}
		if first && start.off == 0 && bytes.HasPrefix(c, []byte("From ")) {
			return false
		}
	}
	p.endHeader(start)
	return true
}

// fieldNameEnd returns the length of the field name at the start of line, or
// 0 if line is not a header field: a name is one or more bytes other than
// controls, space and colon (RFC 5322 §3.6.8, leniently: 8-bit bytes too),
// followed by optional white space (§4.5) and a colon.
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

// startField begins a header field of the innermost part.
func (p *Parser) startField(name, value []byte) {
	p.hdr.finish(p)
	id := lookupField(name)
	if id == fieldNone || p.hdr.have&(1<<id) != 0 || id >= firstEnvelopeField && p.nodes[p.stack[len(p.stack)-1]].env == nil {
		p.hdr.cur = fieldNone
		return
	}
	p.hdr.have |= 1 << id
	p.hdr.cur = id
	p.hdr.limit = p.fieldLimit(id)
	p.hdr.val = p.hdr.val[:0]
	p.hdr.add(value)
}

// fieldLimit is how much of a field's value is kept.
func (p *Parser) fieldLimit(id fieldID) int {
	left := max(maxKept-p.kept, 0)
	switch id {
	case fieldContentType:
		return max(min(maxField, left), minContentType)
	case fieldEncoding:
		return minEncoding
	}
	return min(maxField, left)
}

// endHeader ends the innermost part's header; its body starts at body.
func (p *Parser) endHeader(body mark) {
	p.hdr.finish(p)
	top := p.stack[len(p.stack)-1]
	n := &p.nodes[top]
	n.body = body
	p.interpret(n)
	p.hdr.reset()
	p.inHeader = false
	deep := len(p.stack) >= MaxDepth || len(p.nodes) >= MaxParts
	switch n.kind {
	case kindMultipart:
		if deep {
			n.kind = kindLeaf
			setDefaultType(&n.part)
			return
		}
		p.active++
	case kindMessage:
		if deep {
			n.kind = kindLeaf
			n.part.Type, n.part.Subtype = "application", "octet-stream"
			return
		}
		child := p.newNode(top, body)
		p.nodes[child].env = &Envelope{}
		p.nodes[top].children = append(p.nodes[top].children, child)
		p.stack = append(p.stack, child)
		p.inHeader = true
	}
}

// closeTop ends the innermost open part at the position at (or where its
// header starts, if that is later) and returns where it ended.
func (p *Parser) closeTop(at mark) mark {
	for p.inHeader {
		top := &p.nodes[p.stack[len(p.stack)-1]]
		p.endHeader(maxMark(at, top.header))
	}
	n := &p.nodes[p.stack[len(p.stack)-1]]
	if n.kind == kindMultipart {
		if n.state != afterClose {
			p.active--
		}
		if len(n.children) == 0 {
			// No part was ever delimited: RFC 2045 §5.2's default
			// describes the body better than an empty multipart.
			n.kind = kindLeaf
			setDefaultType(&n.part)
		}
	}
	if n.body.off > at.off {
		// The empty line that ended the header is the line break a
		// delimiter claims (RFC 2046 §5.1.1): the part ends before it, and
		// its header without it.
		n.body = maxMark(at, n.header)
	}
	n.end = maxMark(at, n.body)
	p.stack = p.stack[:len(p.stack)-1]
	return n.end
}

// build makes the Part of node i and its children.
func (p *Parser) build(i int32) Part {
	n := &p.nodes[i]
	pt := n.part
	pt.HeaderStart, pt.BodyStart, pt.End = n.header.off, n.body.off, n.end.off
	pt.Size = pt.End - pt.BodyStart
	pt.Lines = n.end.nl - n.body.nl
	if len(n.children) > 0 && n.kind != kindLeaf {
		pt.Children = make([]Part, 0, len(n.children))
		for _, c := range n.children {
			pt.Children = append(pt.Children, p.build(c))
		}
		if n.kind == kindMessage {
			pt.Message = p.nodes[n.children[0]].env
		}
	}
	return pt
}

func isLWSP(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func allLWSP(b []byte) bool {
	for _, c := range b {
		if !isLWSP(c) {
			return false
		}
	}
	return true
}

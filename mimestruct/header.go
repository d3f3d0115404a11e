package mimestruct

import "strings"

// fieldID names the header fields the parser keeps.
type fieldID uint8

const (
	fieldNone fieldID = iota
	fieldContentType
	fieldEncoding
	fieldContentID
	fieldDescription
	fieldDisposition
	fieldLanguage
	fieldLocation
	fieldMD5
	// The envelope's fields (RFC 3501 §7.4.2), kept only in a message's header.
	fieldDate
	fieldSubject
	fieldFrom
	fieldSender
	fieldReplyTo
	fieldTo
	fieldCc
	fieldBcc
	fieldInReplyTo
	fieldMessageID
	numFields

	firstEnvelopeField = fieldDate
)

// lookupField maps a field name to the field kept, or fieldNone.
func lookupField(name []byte) fieldID {
	if len(name) > len("content-transfer-encoding") {
		return fieldNone
	}
	var buf [32]byte
	lower := buf[:len(name)]
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower) {
	case "content-type":
		return fieldContentType
	case "content-transfer-encoding":
		return fieldEncoding
	case "content-id":
		return fieldContentID
	case "content-description":
		return fieldDescription
	case "content-disposition":
		return fieldDisposition
	case "content-language":
		return fieldLanguage
	case "content-location":
		return fieldLocation
	case "content-md5":
		return fieldMD5
	case "date":
		return fieldDate
	case "subject":
		return fieldSubject
	case "from":
		return fieldFrom
	case "sender":
		return fieldSender
	case "reply-to":
		return fieldReplyTo
	case "to":
		return fieldTo
	case "cc":
		return fieldCc
	case "bcc":
		return fieldBcc
	case "in-reply-to":
		return fieldInReplyTo
	case "message-id":
		return fieldMessageID
	}
	return fieldNone
}

// header collects the kept fields of the header being parsed.
type header struct {
	lines int     // lines seen
	have  uint32  // fields seen: the first occurrence wins
	cur   fieldID // the field being collected, fieldNone if it is not kept
	limit int     // how much of cur to keep
	val   []byte  // cur's value so far, unfolded
	vals  [numFields]string
}

// add appends to the current field's value what its limit allows.
func (h *header) add(b []byte) {
	if h.cur == fieldNone {
		return
	}
	if room := h.limit - len(h.val); room > 0 {
		h.val = append(h.val, b[:min(room, len(b))]...)
	}
}

// fold continues the current field with a folded line: unfolding removes the
// line break and keeps the white space after it (RFC 5322 §2.2.3).
func (h *header) fold(line []byte) { h.add(line) }

// finish stores the current field's value.
func (h *header) finish(p *Parser) {
	if h.cur == fieldNone {
		return
	}
	v := strings.TrimSpace(string(h.val))
	h.vals[h.cur] = v
	p.kept += len(v)
	h.cur = fieldNone
}

func (h *header) reset() {
	val := h.val[:0]
	*h = header{val: val}
}

// interpret fills in n's part (and envelope) from the header just parsed.
func (p *Parser) interpret(n *node) {
	v := &p.hdr.vals
	pt := &n.part
	typ, sub, params, ok := parseContentType(v[fieldContentType])
	switch {
	case !ok && n.inDigest:
		// RFC 2046 §5.1.5.
		pt.Type, pt.Subtype = "message", "rfc822"
	case !ok:
		setDefaultType(pt)
	default:
		pt.Type, pt.Subtype, pt.Params = typ, sub, params
	}
	n.kind = kindLeaf
	switch {
	case pt.Type == "multipart":
		// RFC 2046 §5.1.1: the boundary parameter is required. Trailing white
		// space cannot be part of it: a delimiter line ignores it.
		b := strings.TrimRight(pt.Params["boundary"], " \t")
		if b == "" || len(b) > maxBoundary {
			setDefaultType(pt)
			break
		}
		n.kind, n.boundary, n.digest = kindMultipart, b, pt.Subtype == "digest"
	case pt.Type == "message" && (pt.Subtype == "rfc822" || pt.Subtype == "global"):
		// A message/rfc822 may not be encoded (RFC 2046 §5.2.1); one that is
		// anyway is parsed all the same, which makes its encoded text the
		// body of an embedded message without a header.
		n.kind = kindMessage
	}

	pt.Encoding = "7bit" // RFC 2045 §6.1
	if e := strings.ToLower(firstWord(v[fieldEncoding])); e != "" {
		pt.Encoding = clean(e)
	}
	pt.ID = clean(v[fieldContentID])
	pt.Description = clean(v[fieldDescription])
	pt.MD5 = clean(v[fieldMD5])
	pt.Location = clean(removeComments(v[fieldLocation]))
	if d := v[fieldDisposition]; d != "" {
		// RFC 2183 §2.
		pt.Disposition, pt.DispositionParams = parseValueParams(d)
		pt.Disposition = clean(strings.ToLower(pt.Disposition))
		if pt.Disposition == "" {
			pt.DispositionParams = nil
		}
	}
	if l := v[fieldLanguage]; l != "" {
		// RFC 3282 §2: a comma-separated list of language tags.
		for tag := range strings.SplitSeq(removeComments(l), ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				pt.Language = append(pt.Language, clean(tag))
			}
		}
	}
	if n.env != nil {
		*n.env = buildEnvelope(v)
	}
}

// setDefaultType sets RFC 2045 §5.2's default, "text/plain; charset=us-ascii",
// which is also what a syntactically invalid Content-Type means.
func setDefaultType(pt *Part) {
	pt.Type, pt.Subtype = "text", "plain"
	pt.Params = map[string]string{"charset": "us-ascii"}
}

// firstWord returns the value's first word outside comments, for fields whose
// value is one token (Content-Transfer-Encoding, RFC 2045 §6.1).
func firstWord(s string) string {
	s = strings.TrimSpace(removeComments(s))
	if i := strings.IndexAny(s, " \t;"); i >= 0 {
		s = s[:i]
	}
	return s
}

package mimestruct

// Part returns the part that the section part specifier path names (RFC 3501
// §6.4.5, RFC 9051 §6.4.5), or nil if there is none: BODY[path] is its
// [BodyStart,End). An empty path names the message itself. Part 1 of a
// message that is not multipart is its body; the parts of an embedded message
// are numbered below its message/rfc822 part, so that "2.1" is the first part
// of a multipart message in part 2, or that message's body if it is not
// multipart.
func (i *Info) Part(path []int) *Part {
	p := &i.Body
	for k, n := range path {
		if k > 0 && p.IsMessage() {
			p = &p.Children[0]
		}
		switch {
		case p.IsMultipart():
			if n < 1 || n > len(p.Children) {
				return nil
			}
			p = &p.Children[n-1]
		case n != 1:
			return nil
		}
	}
	return p
}

// Section returns the byte range [start,end) of the raw message that
// BODY[path.spec] returns (RFC 3501 §6.4.5): spec is "" for the part's body
// (the whole message for an empty path), "HEADER" or "TEXT" for the header or
// text of the message the path names (the message itself, or the one embedded
// in a message/rfc822 part), "MIME" for a part's own header. HEADER.FIELDS and
// HEADER.FIELDS.NOT select from the HEADER range. ok is false when the path
// names no part, or names one that is not a message for HEADER and TEXT, or
// is empty for MIME.
func (i *Info) Section(path []int, spec string) (start, end int64, ok bool) {
	p := i.Part(path)
	if p == nil {
		return 0, 0, false
	}
	msg := p
	if len(path) > 0 {
		msg = nil
		if p.IsMessage() {
			msg = &p.Children[0]
		}
	}
	switch spec {
	case "":
		if len(path) == 0 {
			return p.HeaderStart, p.End, true
		}
		return p.BodyStart, p.End, true
	case "MIME":
		if len(path) == 0 {
			return 0, 0, false
		}
		return p.HeaderStart, p.BodyStart, true
	case "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT":
		if msg == nil {
			return 0, 0, false
		}
		return msg.HeaderStart, msg.BodyStart, true
	case "TEXT":
		if msg == nil {
			return 0, 0, false
		}
		return msg.BodyStart, msg.End, true
	}
	return 0, 0, false
}

package mimestruct

import "strings"

// Tokens of a structured header field (RFC 5322 §3.2).
type tokKind uint8

const (
	tokWord    tokKind = iota // atom, dot-atom or domain literal
	tokQuoted                 // quoted string, unquoted
	tokComment                // comment, without its parentheses
	tokSpecial                // one of <>:;@,
)

type token struct {
	kind  tokKind
	text  string
	space bool // white space or a comment before it
}

// tokenize splits a structured field value into tokens. Dots stay inside
// atoms, so that "john.doe" and "Q." are one word each; ')' and ']' out of
// place are atom characters.
func tokenize(s string) []token {
	var toks []token
	space := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
			i++
			continue
		case c == '"':
			v, rest := unquote(s[i+1:])
			toks = append(toks, token{kind: tokQuoted, text: v, space: space})
			i = len(s) - len(rest)
		case c == '(':
			depth, j := 0, i
			var b strings.Builder
		comment:
			for ; j < len(s); j++ {
				switch s[j] {
				case '\\':
					if j+1 < len(s) {
						j++
						b.WriteByte(s[j])
					}
					continue
				case '(':
					depth++
					if depth == 1 {
						continue
					}
				case ')':
					depth--
					if depth == 0 {
						j++
						break comment
					}
				}
				b.WriteByte(s[j])
			}
			toks = append(toks, token{kind: tokComment, text: strings.TrimSpace(b.String()), space: space})
			i = j
			space = true
			continue
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				j = len(s) - i - 1
			}
			toks = append(toks, token{kind: tokWord, text: s[i : i+j+1], space: space})
			i += j + 1
		case strings.IndexByte("<>:;@,", c) >= 0:
			toks = append(toks, token{kind: tokSpecial, text: s[i : i+1], space: space})
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t\r\n\"(<>[:;@,", s[j]) < 0 {
				j++
			}
			toks = append(toks, token{kind: tokWord, text: s[i:j], space: space})
			i = j
		}
		space = false
	}
	return toks
}

// parseAddressList parses an address-list (RFC 5322 §3.4) into RFC 3501
// §7.4.2 addresses, as leniently as mail needs: a missing angle bracket, a
// bare local part, junk after an address, an unterminated group or quoted
// string. A display name is RFC 2047 decoded; without one, a comment after
// the address serves (the old "user@host (Full Name)" form).
func parseAddressList(s string) []Address {
	toks := tokenize(s)
	var out []Address
	var phrase []token
	comment := ""
	inGroup := false
	// done: an address was taken. Words after it up to the next separator are
	// junk, unless an "@" or "<" makes them the next address (a missing comma).
	done := false

	emit := func(name, local, domain string) {
		done = true
		phrase, comment = phrase[:0], ""
		name = decodeWords(name)
		if local == "" && domain == "" && name == "" {
			return // "<>", the null path
		}
		if local == "" {
			local = MissingMailbox
		}
		if domain == "" {
			domain = MissingDomain
		}
		out = append(out, Address{Name: name, Mailbox: clean(local), Host: clean(domain)})
	}
	// bare takes what precedes a separator when it is no address yet: a local
	// part without a domain.
	bare := func() {
		if !done && len(phrase) > 0 {
			emit("", join(phrase, ""), "")
		}
		phrase, comment, done = phrase[:0], "", false
	}

	for i := 0; i < len(toks); {
		t := toks[i]
		switch {
		case t.kind == tokComment:
			comment = t.text
			i++
		case t.kind != tokSpecial:
			phrase = append(phrase, t)
			i++
		case t.text == "<":
			name := join(phrase, " ")
			var local, domain string
			local, domain, i = angleAddr(toks, i+1)
			emit(name, local, domain)
		case t.text == "@":
			// An addr-spec without angle brackets; its local part is the
			// last word before the "@", and words before that a display
			// name the brackets are missing around.
			var local, name string
			if len(phrase) > 0 {
				local = phrase[len(phrase)-1].text
				name = join(phrase[:len(phrase)-1], " ")
			}
			var domain string
			domain, i = domainWords(toks, i+1)
			if name == "" && i < len(toks) && toks[i].kind == tokComment {
				name = toks[i].text
			} else if name == "" {
				name = comment
			}
			emit(name, local, domain)
		case t.text == ":":
			i++
			if name := decodeWords(join(phrase, " ")); !inGroup && !done && name != "" {
				out = append(out, Address{Mailbox: name})
				inGroup = true
				phrase, comment = phrase[:0], ""
				continue
			}
			bare()
		case t.text == ";":
			bare()
			if inGroup {
				out = append(out, Address{})
				inGroup = false
			}
			i++
		case t.text == ",":
			bare()
			i++
		default: // a stray ">"
			i++
		}
	}
	bare()
	if inGroup {
		out = append(out, Address{})
	}
	return out
}

// angleAddr reads an angle-addr's content from toks[i:] (RFC 5322 §3.4,
// with §4.4's obsolete route), up to and including its ">", or up to a
// separator when the ">" is missing.
func angleAddr(toks []token, i int) (local, domain string, next int) {
	if i < len(toks) && toks[i].text == "@" && toks[i].kind == tokSpecial {
		// obs-route: "@relay1,@relay2:" before the addr-spec is dropped.
		for k := i; k < len(toks); k++ {
			if toks[k].kind == tokSpecial && (toks[k].text == ":" || toks[k].text == ">") {
				if toks[k].text == ":" {
					i = k + 1
				}
				break
			}
		}
	}
	var lb, db strings.Builder
	seenAt := false
	for ; i < len(toks); i++ {
		t := toks[i]
		switch t.kind {
		case tokComment:
			continue
		case tokSpecial:
			switch t.text {
			case ">":
				return lb.String(), db.String(), i + 1
			case "@":
				seenAt = true
				continue
			case ",", ";", "<":
				return lb.String(), db.String(), i
			}
			continue
		}
		if seenAt {
			db.WriteString(t.text)
		} else {
			lb.WriteString(t.text)
		}
	}
	return lb.String(), db.String(), i
}

// domainWords reads a domain after an "@": words that are not separated by
// white space, or joined by dots.
func domainWords(toks []token, i int) (string, int) {
	var b strings.Builder
	for ; i < len(toks); i++ {
		t := toks[i]
		if t.kind != tokWord && t.kind != tokQuoted {
			break
		}
		if b.Len() > 0 && t.space && !strings.HasSuffix(b.String(), ".") && !strings.HasPrefix(t.text, ".") {
			break
		}
		b.WriteString(t.text)
	}
	return b.String(), i
}

// join joins the words' texts.
func join(words []token, sep string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0].text
	}
	var b strings.Builder
	for i, w := range words {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(w.text)
	}
	return b.String()
}

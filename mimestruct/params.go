package mimestruct

import (
	"slices"
	"strconv"
	"strings"
)

// maxParams caps the parameters kept of one field.
const maxParams = 64

// parseContentType parses a Content-Type value (RFC 2045 §5.1). ok is false
// when the value is missing or its type/subtype is not two tokens.
func parseContentType(s string) (typ, sub string, params map[string]string, ok bool) {
	if s == "" {
		return "", "", nil, false
	}
	v, params := parseValueParams(s)
	typ, sub, found := strings.Cut(strings.ToLower(v), "/")
	typ, sub = strings.TrimSpace(typ), strings.TrimSpace(sub)
	if !found || !isToken(typ) || !isToken(sub) {
		return "", "", nil, false
	}
	return typ, sub, params, true
}

// isToken reports whether s is a non-empty RFC 2045 §5.1 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// rawParam is one parameter as written, before RFC 2231 reassembly.
type rawParam struct {
	name, value string
}

// parseValueParams splits a field value of the form `value *(";" parameter)`
// (RFC 2045 §5.1, RFC 2183 §2) into the value, without comments, and its
// parameters. It is lenient where mailers are sloppy: a parameter without "="
// is skipped, an unquoted value runs to the next ";" (file names with spaces),
// an unterminated quoted string to the end, a duplicated parameter keeps its
// first value. Values are RFC 2231 decoded (§3 continuations, §4 charsets)
// and then RFC 2047 decoded, since mailers put encoded words into file names
// although RFC 2047 §5 forbids it.
func parseValueParams(s string) (string, map[string]string) {
	v, rest, _ := cutUnquoted(s, ';')
	v = strings.TrimSpace(removeComments(v))
	var raw []rawParam
	for rest != "" && len(raw) < 4*maxParams {
		var seg string
		rest = strings.TrimLeft(rest, " \t;")
		i := strings.IndexAny(rest, ";=")
		if i < 0 {
			break
		}
		if rest[i] == ';' {
			// A parameter without "=": skip it.
			rest = rest[i+1:]
			continue
		}
		name := strings.ToLower(strings.TrimSpace(removeComments(rest[:i])))
		after := strings.TrimLeft(rest[i+1:], " \t")
		var value string
		if strings.HasPrefix(after, `"`) {
			value, rest = unquote(after[1:])
			_, rest, _ = cutUnquoted(rest, ';')
		} else {
			seg, rest, _ = cutUnquoted(after, ';')
			value = strings.TrimSpace(removeComments(seg))
		}
		if name != "" {
			raw = append(raw, rawParam{name, value})
		}
	}
	return v, assembleParams(raw)
}

// cutUnquoted cuts s at the first sep outside a quoted string or comment.
func cutUnquoted(s string, sep byte) (before, after string, found bool) {
	quoted, depth := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && (quoted || depth > 0):
			i++
		case quoted:
			quoted = c != '"'
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == sep && depth == 0:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unquote reads a quoted string's content up to its closing quote (RFC 5322
// §3.2.4), undoing quoted pairs; an unterminated one runs to the end.
func unquote(s string) (value, rest string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:]
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '\r', '\n':
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), ""
}

// removeComments removes RFC 5322 §3.2.2 comments outside quoted strings.
func removeComments(s string) string {
	if strings.IndexByte(s, '(') < 0 {
		return s
	}
	var b strings.Builder
	quoted, depth := false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			switch c {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					b.WriteByte(' ')
				}
			}
			continue
		case quoted && c == '\\' && i+1 < len(s):
			b.WriteByte(c)
			i++
			c = s[i]
		case quoted && c == '"':
			quoted = false
		case c == '"':
			quoted = true
		case c == '(':
			depth++
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// section is one RFC 2231 §3 piece of a parameter value.
type section struct {
	n        int
	extended bool // percent-encoded, the first one with charset'language'
	value    string
}

// assembleParams joins RFC 2231 continuations, decodes charsets and RFC 2047
// encoded words, and keeps at most maxParams parameters.
func assembleParams(raw []rawParam) map[string]string {
	if len(raw) == 0 {
		return nil
	}
	out := make(map[string]string)
	sections := map[string][]section{}
	var order []string
	for _, r := range raw {
		base, tail, star := strings.Cut(r.name, "*")
		if !star {
			if _, ok := out[base]; !ok && base != "" {
				out[base] = r.value
			}
			continue
		}
		s := section{value: r.value}
		switch {
		case tail == "":
			s.extended = true // name*=charset'lang'value, RFC 2231 §4
		default:
			num, ext := strings.CutSuffix(tail, "*")
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n > 999 || num != strconv.Itoa(n) {
				continue
			}
			s.n, s.extended = n, ext
		}
		if base == "" {
			continue
		}
		if _, ok := sections[base]; !ok {
			order = append(order, base)
		}
		sections[base] = append(sections[base], s)
	}
	for _, base := range order {
		// RFC 2231 §3: the sections join in order of their numbers from 0;
		// a missing one ends the value. The assembled value wins over a plain
		// one of the same name, which mailers add for old readers.
		ss := sections[base]
		slices.SortStableFunc(ss, func(a, b section) int { return a.n - b.n })
		var buf []byte
		charset := ""
		for i, s := range ss {
			if s.n != i {
				break
			}
			v := s.value
			if s.extended {
				if i == 0 {
					// charset'language'value; the language is dropped.
					if cs, after, ok := strings.Cut(v, "'"); ok {
						if _, after2, ok := strings.Cut(after, "'"); ok {
							charset, v = cs, after2
						}
					}
				}
				buf = append(buf, percentDecode(v)...)
			} else {
				buf = append(buf, v...)
			}
		}
		if len(ss) > 0 && ss[0].n == 0 {
			out[base] = toUTF8(charset, buf)
		}
	}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i >= maxParams {
			delete(out, k)
			continue
		}
		v := out[k]
		if strings.Contains(v, "=?") {
			v = decodeWords(v)
		}
		if ck := clean(k); ck != k {
			delete(out, k)
			k = ck
		}
		out[k] = clean(v)
	}
	if len(out) == 0 {
		return nil // as the stored form decodes: no parameters, no map
	}
	return out
}

// percentDecode undoes RFC 2231 §4's %XX; a malformed escape stays as it is.
func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if h, ok := unhex2(s[i+1], s[i+2]); ok {
				b = append(b, h)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return b
}

func unhex2(a, b byte) (byte, bool) {
	x, ok1 := unhex(a)
	y, ok2 := unhex(b)
	return x<<4 | y, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

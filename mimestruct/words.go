package mimestruct

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// decodeWords decodes the RFC 2047 encoded words in an unstructured header
// value (§5 (1)) or a phrase (§5 (3)) to UTF-8. It is lenient as readers must
// be: white space between adjacent encoded words is dropped (§6.2), adjacent
// words of one charset are joined before conversion (mailers split a UTF-8
// character across two words), and a word that does not decode or whose
// charset is unknown is kept as it is written.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return clean(s)
	}
	var out strings.Builder
	var pending []byte
	pendingCharset, havePending := "", false
	flush := func() {
		if havePending {
			out.WriteString(toUTF8(pendingCharset, pending))
			pending, havePending = pending[:0], false
		}
	}
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "=?")
		if j < 0 {
			flush()
			out.WriteString(s[i:])
			break
		}
		j += i
		cs, enc, text, end, ok := parseWord(s, j)
		var raw []byte
		if ok {
			raw, ok = decodeText(enc, text)
		}
		if !ok {
			flush()
			out.WriteString(s[i : j+2])
			i = j + 2
			continue
		}
		if between := s[i:j]; !havePending || strings.Trim(between, " \t\r\n") != "" {
			flush()
			out.WriteString(between)
		}
		cs = normalizeCharset(cs)
		if havePending && cs != pendingCharset {
			flush()
		}
		pendingCharset, havePending = cs, true
		pending = append(pending, raw...)
		i = end
	}
	flush()
	return clean(out.String())
}

// maxWord bounds an encoded word. RFC 2047 §2 allows 75 characters; mailers
// write longer ones, but a bound keeps a value full of "=?" linear to decode.
const maxWord = 2048

// parseWord parses the encoded word "=?charset?encoding?text?=" at s[start:].
func parseWord(s string, start int) (cs string, enc byte, text string, end int, ok bool) {
	rest := s[start+2:]
	rest = rest[:min(len(rest), maxWord)]
	q := strings.IndexByte(rest, '?')
	if q <= 0 || strings.ContainsAny(rest[:q], " \t\r\n\"()<>,;") {
		return "", 0, "", 0, false
	}
	cs, rest = rest[:q], rest[q+1:]
	if len(rest) < 2 || rest[1] != '?' {
		return "", 0, "", 0, false
	}
	enc, rest = rest[0]|0x20, rest[2:]
	if enc != 'b' && enc != 'q' {
		return "", 0, "", 0, false
	}
	e := strings.Index(rest, "?=")
	if e < 0 || strings.ContainsAny(rest[:e], "\r\n") {
		return "", 0, "", 0, false
	}
	text = rest[:e]
	end = start + 2 + q + 1 + 2 + e + 2
	return cs, enc, text, end, true
}

// decodeText undoes the B or Q encoding of an encoded word's text (RFC 2047 §4).
func decodeText(enc byte, text string) ([]byte, bool) {
	if enc == 'b' {
		t := strings.TrimRight(strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, text), "=")
		b, err := base64.RawStdEncoding.DecodeString(t)
		return b, err == nil
	}
	b := make([]byte, 0, len(text))
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case c == '_':
			b = append(b, ' ')
		case c == '=' && i+2 < len(text):
			if h, ok := unhex2(text[i+1], text[i+2]); ok {
				b = append(b, h)
				i += 2
			} else {
				b = append(b, c)
			}
		default:
			b = append(b, c)
		}
	}
	return b, true
}

// normalizeCharset lower-cases a charset name and drops an RFC 2231 §5
// language suffix ("utf-8*en").
func normalizeCharset(cs string) string {
	cs, _, _ = strings.Cut(cs, "*")
	return strings.ToLower(strings.TrimSpace(cs))
}

// toUTF8 converts b from the named charset to UTF-8. Bytes in an unknown
// charset, or invalid in theirs, come out as U+FFFD where they are not UTF-8.
func toUTF8(cs string, b []byte) string {
	switch cs = normalizeCharset(cs); cs {
	case "", "utf-8", "utf8", "us-ascii", "ascii", "unknown-8bit", "x-unknown":
		return string(b)
	case "iso-8859-1", "latin1", "iso_8859-1", "l1":
		var out strings.Builder
		for _, c := range b {
			out.WriteRune(rune(c))
		}
		return out.String()
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		return string(b)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(4*len(b)+16)))
	if err != nil {
		return string(b)
	}
	return string(out)
}

// clean makes s fit an IMAP string: valid UTF-8 (invalid bytes become U+FFFD),
// without NUL, which no IMAP string may carry, and without CR and LF, which a
// quoted string may not (RFC 9051 §4.3); those become spaces.
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c >= utf8.RuneSelf {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r == 0 || r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

package milter

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/internal/spool"
)

func TestAppendHeaderField(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		leadSpace   bool
		want        string
	}{
		// With SMFIP_HDR_LEADSPC the value is everything after the colon.
		{"Subject", " hello", true, "Subject: hello\r\n"},
		{"Subject", "hello", true, "Subject:hello\r\n"},
		{"Subject", "  two", true, "Subject:  two\r\n"},
		{"X-Empty", "", true, "X-Empty:\r\n"},
		// Postfix joins folded lines with LF; delivered with CRLF.
		{"To", " a@example.com,\n\tb@example.com", true, "To: a@example.com,\r\n\tb@example.com\r\n"},
		{"To", " a,\n b,\n  c", true, "To: a,\r\n b,\r\n  c\r\n"},
		// CRLF from other MTAs stays CRLF, never CRCRLF.
		{"To", " a,\r\n\tb", true, "To: a,\r\n\tb\r\n"},
		// A trailing line break would end the header section early.
		{"Subject", " x\r\n", true, "Subject: x\r\n"},
		{"Subject", " x\n", true, "Subject: x\r\n"},
		// A bare CR is data.
		{"Subject", " x\ry", true, "Subject: x\ry\r\n"},
		// Without SMFIP_HDR_LEADSPC one space was dropped: put it back, except
		// before a tab, a line break or nothing.
		{"Subject", "hello", false, "Subject: hello\r\n"},
		{"Subject", " two", false, "Subject:  two\r\n"},
		{"X-Tab", "\tvalue", false, "X-Tab:\tvalue\r\n"},
		{"X-Empty", "", false, "X-Empty:\r\n"},
		{"X-Folded", "\n\tcontinued", false, "X-Folded:\r\n\tcontinued\r\n"},
		// 8-bit bytes pass untouched.
		{"Subject", " Gr\xc3\xbc\xc3\x9fe \xe9", true, "Subject: Gr\xc3\xbc\xc3\x9fe \xe9\r\n"},
	} {
		got := string(appendHeaderField(nil, tc.name, tc.value, tc.leadSpace))
		if got != tc.want {
			t.Errorf("appendHeaderField(%q, %q, %v) = %q, want %q", tc.name, tc.value, tc.leadSpace, got, tc.want)
		}
	}
}

func TestRebuilderSeparator(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(b *rebuilder)
		want string
	}{
		{"eoh then body", func(b *rebuilder) { b.Header("A", " 1"); b.EndOfHeader(); b.Body([]byte("x\r\n")); b.Finish() }, "A: 1\r\n\r\nx\r\n"},
		{"body without eoh", func(b *rebuilder) { b.Header("A", " 1"); b.Body([]byte("x\r\n")); b.Finish() }, "A: 1\r\n\r\nx\r\n"},
		{"no body", func(b *rebuilder) { b.Header("A", " 1"); b.EndOfHeader(); b.Finish() }, "A: 1\r\n\r\n"},
		{"nothing but eom", func(b *rebuilder) { b.Finish() }, "\r\n"},
		{"chunks cut mid-line", func(b *rebuilder) {
			b.EndOfHeader()
			b.Body([]byte("ab"))
			b.Body([]byte("c\r"))
			b.Body([]byte("\nd\r\n"))
		}, "\r\nabc\r\nd\r\n"},
	} {
		var buf bytes.Buffer
		b := &rebuilder{w: &buf, leadingSpace: true}
		tc.run(b)
		if buf.String() != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, buf.String(), tc.want)
		}
	}
	var buf bytes.Buffer
	b := &rebuilder{w: &buf}
	b.Body([]byte("x"))
	if err := b.Header("Late", " header"); err != errHeaderAfterBody {
		t.Errorf("header after body = %v, want errHeaderAfterBody", err)
	}
}

// FuzzRebuild feeds header fields (name and value separated by NUL, as on the
// milter wire) and a body cut into chunks through the rebuilder and a spool
// that spills to disk. It must not panic; the output must be the header lines
// that appendHeaderField produces, the empty line, and the body verbatim; and
// when every field is one Postfix could have sent, parsing the output as
// Postfix does must give back the same header list.
func FuzzRebuild(f *testing.F) {
	f.Add("Subject\x00 hello\x00To\x00 a@example.com,\n\tb@example.com", []byte("body\r\n"), uint16(3), true)
	f.Add("Subject\x00hello\x00X-Tab\x00\tv\x00X-Empty\x00", []byte("line one\r\nline two\r\n"), uint16(1), false)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, headers string, body []byte, chunk uint16, leadSpace bool) {
		var fields []headerField
		if headers != "" {
			parts := strings.Split(headers, "\x00")
			for i := 0; i < len(parts); i += 2 {
				hf := headerField{name: parts[i]}
				if i+1 < len(parts) {
					hf.value = parts[i+1]
				}
				fields = append(fields, hf)
			}
		}

		sp := spool.New(dir, "milter", 256)
		defer func() {
			if err := sp.Close(); err != nil {
				t.Errorf("spool close: %v", err)
			}
		}()
		b := &rebuilder{w: sp, leadingSpace: leadSpace}
		var wantHeader []byte
		for _, hf := range fields {
			if err := b.Header(hf.name, hf.value); err != nil {
				t.Fatalf("Header: %v", err)
			}
			wantHeader = appendHeaderField(wantHeader, hf.name, hf.value, leadSpace)
		}
		if err := b.EndOfHeader(); err != nil {
			t.Fatalf("EndOfHeader: %v", err)
		}
		wantHeader = append(wantHeader, '\r', '\n')
		size := int(chunk)%4096 + 1
		for rest := body; len(rest) > 0; {
			n := min(size, len(rest))
			if err := b.Body(rest[:n]); err != nil {
				t.Fatalf("Body: %v", err)
			}
			rest = rest[n:]
		}
		if err := b.Finish(); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		r, err := sp.Reader()
		if err != nil {
			t.Fatalf("Reader: %v", err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("reading the spool: %v", err)
		}
		if int64(len(out)) != sp.Size() {
			t.Fatalf("spool size %d, read %d", sp.Size(), len(out))
		}
		if !bytes.Equal(out, append(wantHeader, body...)) {
			t.Fatalf("rebuilt %q, want %q + body", out, wantHeader)
		}

		for _, hf := range fields {
			if !postfixCouldSend(hf) {
				return
			}
		}
		// RFC 5322 §2.1: lines end in CRLF; SMTP and LMTP deliver no bare LF.
		for i, c := range wantHeader {
			if c == '\n' && (i == 0 || wantHeader[i-1] != '\r') {
				t.Fatalf("bare LF at %d in the header section %q", i, wantHeader)
			}
		}
		got, _ := parseLikePostfix(out)
		if len(got) != len(fields) {
			t.Fatalf("re-parsed %d fields from %q, want %d", len(got), out, len(fields))
		}
		for i, hf := range fields {
			want := canonicalValue(hf.value)
			g := got[i].value
			if !leadSpace {
				g = strings.TrimPrefix(g, " ") // as Postfix would send it
			}
			if got[i].name != hf.name || g != want {
				t.Fatalf("field %d re-parsed as %q: %q, want %q: %q", i, got[i].name, g, hf.name, want)
			}
		}
	})
}

// postfixCouldSend reports whether Postfix could hand a milter this field: a
// valid field name (RFC 5322 §2.2), and a value whose folded lines all start
// with a blank.
func postfixCouldSend(hf headerField) bool {
	if hf.name == "" || headerNameLen(hf.name+":") != len(hf.name) {
		return false
	}
	v := canonicalValue(hf.value)
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' && (i+1 == len(v) || (v[i+1] != ' ' && v[i+1] != '\t')) {
			return false
		}
	}
	return true
}

// canonicalValue is a value as Postfix would send it with SMFIP_HDR_LEADSPC:
// lines joined by LF, no trailing line break.
func canonicalValue(v string) string {
	for strings.HasSuffix(v, "\n") {
		v = strings.TrimSuffix(strings.TrimSuffix(v, "\n"), "\r")
	}
	return strings.ReplaceAll(v, "\r\n", "\n")
}

// TestParseLikePostfix pins the test's model of Postfix's header parsing.
func TestParseLikePostfix(t *testing.T) {
	fields, body := parseLikePostfix([]byte("A: 1\r\nB : 2\r\n\tcont\r\nC:\r\nno colon here\r\nrest\r\n"))
	want := []headerField{{"A", " 1"}, {"B", " 2\n\tcont"}, {"C", ""}}
	if len(fields) != len(want) {
		t.Fatalf("fields = %q, want %q", fields, want)
	}
	for i := range want {
		if fields[i] != want[i] {
			t.Errorf("field %d = %q, want %q", i, fields[i], want[i])
		}
	}
	if string(body) != "no colon here\r\nrest\r\n" {
		t.Errorf("body = %q", body)
	}
}

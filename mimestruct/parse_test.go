package mimestruct

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// shape describes a part tree compactly: type/subtype, a multipart's parts in
// parentheses, an embedded message in brackets.
func shape(p *Part) string {
	s := p.Type + "/" + p.Subtype
	switch {
	case p.IsMessage():
		s += "[" + shape(&p.Children[0]) + "]"
	case len(p.Children) > 0:
		var cs []string
		for i := range p.Children {
			cs = append(cs, shape(&p.Children[i]))
		}
		s += "(" + strings.Join(cs, ",") + ")"
	}
	return s
}

// sectionOf returns BODY[path.spec] of raw, with path written like "1.2".
func sectionOf(t *testing.T, raw string, info *Info, path, spec string) string {
	t.Helper()
	var nums []int
	if path != "" {
		for f := range strings.SplitSeq(path, ".") {
			var n int
			if _, err := fmt.Sscan(f, &n); err != nil {
				t.Fatalf("bad path %q", path)
			}
			nums = append(nums, n)
		}
	}
	start, end, ok := info.Section(nums, spec)
	if !ok {
		t.Fatalf("no section %s.%s", path, spec)
	}
	return raw[start:end]
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// nested is a multipart/mixed with a multipart/alternative and a message/rfc822
// that is itself multipart.
var nested = crlf(`From: Alice <alice@example.org>
To: Bob <bob@example.com>
Subject: nested
Content-Type: multipart/mixed; boundary="outer"

This is the preamble.
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8

plain
--inner
Content-Type: text/html

<p>html</p>
--inner--

--outer
Content-Type: message/rfc822
Content-Description: forwarded

From: Carol <carol@example.net>
Subject: inside
Content-Type: multipart/mixed; boundary=deep

--deep
Content-Type: text/plain

deep text
line two
--deep
Content-Type: application/pdf
Content-Transfer-Encoding: BASE64
Content-Disposition: attachment; filename="a.pdf"

JVBERi0xLjQK
--deep--
--outer--
epilogue
`)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   string
		shape string
		check func(t *testing.T, raw string, info *Info)
	}{
		{"empty", "", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.Params["charset"] != "us-ascii" || info.Body.Encoding != "7bit" {
				t.Errorf("defaults: %+v", info.Body)
			}
		}},
		{"simple", "Subject: hi\r\n\r\nhello\r\nworld\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if h := sectionOf(t, raw, info, "", "HEADER"); h != "Subject: hi\r\n\r\n" {
				t.Errorf("HEADER %q", h)
			}
			if b := sectionOf(t, raw, info, "", "TEXT"); b != "hello\r\nworld\r\n" {
				t.Errorf("TEXT %q", b)
			}
			if b := sectionOf(t, raw, info, "1", ""); b != "hello\r\nworld\r\n" {
				t.Errorf("BODY[1] %q", b)
			}
			if info.Body.Lines != 2 || info.Body.Size != 14 {
				t.Errorf("lines %d size %d", info.Body.Lines, info.Body.Size)
			}
		}},
		{"lf", "Subject: hi\n\nhello\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if b := sectionOf(t, raw, info, "", "TEXT"); b != "hello\n" {
				t.Errorf("TEXT %q", b)
			}
		}},
		{"header only", "Subject: only\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.BodyStart != int64(len(raw)) || info.Envelope.Subject != "only" {
				t.Errorf("%+v", info)
			}
		}},
		{"header without line end", "Subject: only", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Envelope.Subject != "only" || info.Body.Size != 0 {
				t.Errorf("%+v", info)
			}
		}},
		{"no separator", "Subject: x\r\nthis is the body\r\nmore\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if b := sectionOf(t, raw, info, "", "TEXT"); b != "this is the body\r\nmore\r\n" {
				t.Errorf("TEXT %q", b)
			}
			if info.Envelope.Subject != "x" {
				t.Errorf("subject %q", info.Envelope.Subject)
			}
		}},
		{"body only", "\r\njust a body\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.BodyStart != 2 {
				t.Errorf("body starts at %d", info.Body.BodyStart)
			}
		}},
		{"mbox From line", "From alice@example.org Mon Jan  2 15:04:05 2006\nSubject: mbox\n\nbody\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Envelope.Subject != "mbox" {
				t.Errorf("subject %q", info.Envelope.Subject)
			}
		}},
		{"continuation first", " folded\r\nSubject: x\r\n\r\nb\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.BodyStart != 0 {
				t.Errorf("a header cannot start folded: body at %d", info.Body.BodyStart)
			}
		}},
		{"folded fields", "Subject: a\r\n  b\r\n\tc\r\nContent-Type: text/plain;\r\n charset=\"iso-8859-1\"\r\n\r\nx", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Envelope.Subject != "a  b\tc" || info.Body.Params["charset"] != "iso-8859-1" {
				t.Errorf("subject %q params %v", info.Envelope.Subject, info.Body.Params)
			}
		}},
		{"nested", nested, "multipart/mixed(multipart/alternative(text/plain,text/html),message/rfc822[multipart/mixed(text/plain,application/pdf)])",
			func(t *testing.T, raw string, info *Info) {
				for _, c := range []struct{ path, spec, want string }{
					{"1", "MIME", "Content-Type: multipart/alternative; boundary=inner\r\n\r\n"},
					{"1.1", "", "plain"},
					{"1.1", "MIME", "Content-Type: text/plain; charset=utf-8\r\n\r\n"},
					{"1.2", "", "<p>html</p>"},
					{"2", "MIME", "Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"},
					{"2", "HEADER", "From: Carol <carol@example.net>\r\nSubject: inside\r\nContent-Type: multipart/mixed; boundary=deep\r\n\r\n"},
					{"2.1", "", "deep text\r\nline two"},
					{"2.2", "", "JVBERi0xLjQK"},
					{"2.2", "MIME", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: BASE64\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n"},
				} {
					if got := sectionOf(t, raw, info, c.path, c.spec); got != c.want {
						t.Errorf("BODY[%s.%s] = %q, want %q", c.path, c.spec, got, c.want)
					}
				}
				if got := sectionOf(t, raw, info, "2", "TEXT"); !strings.HasPrefix(got, "--deep\r\n") || !strings.HasSuffix(got, "--deep--") {
					t.Errorf("BODY[2.TEXT] = %q", got)
				}
				if got := sectionOf(t, raw, info, "1", ""); !strings.HasPrefix(got, "--inner\r\n") || !strings.HasSuffix(got, "--inner--\r\n") {
					t.Errorf("BODY[1] = %q", got)
				}
				m := info.Part([]int{2})
				if m.Description != "forwarded" || m.Message.Subject != "inside" || m.Message.From[0] != (Address{"Carol", "carol", "example.net"}) {
					t.Errorf("part 2: %+v, envelope %+v", m, m.Message)
				}
				if m.Lines != 15 {
					t.Errorf("part 2 lines %d", m.Lines)
				}
				pdf := info.Part([]int{2, 2})
				if pdf.Encoding != "base64" || pdf.Disposition != "attachment" || pdf.DispositionParams["filename"] != "a.pdf" {
					t.Errorf("pdf: %+v", pdf)
				}
				if info.Part([]int{3}) != nil || info.Part([]int{1, 3}) != nil || info.Part([]int{2, 1, 2}) != nil {
					t.Error("Part of a part that does not exist")
				}
				if _, _, ok := info.Section([]int{1}, "HEADER"); ok {
					t.Error("HEADER of a multipart part")
				}
			}},
		{"digest", crlf(`Content-Type: multipart/digest; boundary=d

--d

Subject: one

first
--d
Content-Type: text/plain

not a message
--d--
`), "multipart/digest(message/rfc822[text/plain],text/plain)", func(t *testing.T, raw string, info *Info) {
			if s := info.Part([]int{1}).Message.Subject; s != "one" {
				t.Errorf("digest message subject %q", s)
			}
			if got := sectionOf(t, raw, info, "1.1", ""); got != "first" {
				t.Errorf("BODY[1.1] %q", got)
			}
		}},
		{"rfc2231", crlf(`Content-Type: application/octet-stream;
 name*0*=utf-8''%E2%82%AC%20rates;
 name*1=".txt";
 title*=iso-8859-1'en'caf%E9;
 plain="simple"; plain="second"; noequals; UPPER=Case
Content-Disposition: ATTACHMENT; filename="=?utf-8?b?w6TDtsO8LnR4dA==?="; size=123

x`), "application/octet-stream", func(t *testing.T, raw string, info *Info) {
			want := map[string]string{"name": "€ rates.txt", "title": "café", "plain": "simple", "upper": "Case"}
			if !maps.Equal(info.Body.Params, want) {
				t.Errorf("params %q, want %q", info.Body.Params, want)
			}
			if info.Body.Disposition != "attachment" || info.Body.DispositionParams["filename"] != "äöü.txt" || info.Body.DispositionParams["size"] != "123" {
				t.Errorf("disposition %q %q", info.Body.Disposition, info.Body.DispositionParams)
			}
		}},
		{"content fields", crlf(`Content-Type: text/html; charset=UTF-8 (comment)
Content-ID: <part1@example>
Content-Description: a description
Content-Transfer-Encoding: Quoted-Printable (qp)
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Language: en (English), de
Content-Location: http://example.com/a.html

x`), "text/html", func(t *testing.T, raw string, info *Info) {
			b := &info.Body
			if b.Params["charset"] != "UTF-8" || b.ID != "<part1@example>" || b.Description != "a description" ||
				b.Encoding != "quoted-printable" || b.MD5 != "Q2hlY2sgSW50ZWdyaXR5IQ==" ||
				!reflect.DeepEqual(b.Language, []string{"en", "de"}) || b.Location != "http://example.com/a.html" {
				t.Errorf("%+v", b)
			}
		}},
		{"invalid content type", "Content-Type: text\r\n\r\nx", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.Params["charset"] != "us-ascii" {
				t.Errorf("params %v", info.Body.Params)
			}
		}},
		{"multipart without boundary", "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Body.Size != int64(len("--x\r\n\r\nbody\r\n")) {
				t.Errorf("size %d", info.Body.Size)
			}
		}},
		{"boundary never seen", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--c\r\nbody\r\n", "text/plain", nil},
		{"close delimiter only", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n", "text/plain", nil},
		{"missing close delimiter", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nContent-Type: text/html\n\ntwo\n"),
			"multipart/mixed(text/plain,text/html)", func(t *testing.T, raw string, info *Info) {
				if got := sectionOf(t, raw, info, "2", ""); got != "two\r\n" {
					t.Errorf("BODY[2] %q", got)
				}
			}},
		{"unterminated inner multipart", crlf(`Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner

a
--outer

b
--outer--
`), "multipart/mixed(multipart/alternative(text/plain),text/plain)", func(t *testing.T, raw string, info *Info) {
			if got := sectionOf(t, raw, info, "1.1", ""); got != "a" {
				t.Errorf("BODY[1.1] %q", got)
			}
			if got := sectionOf(t, raw, info, "2", ""); got != "b" {
				t.Errorf("BODY[2] %q", got)
			}
		}},
		{"transport padding and look-alikes", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n\r\none\r\n--bb\r\n--b-\r\n--b --\r\n--b-- \r\n", "multipart/mixed(text/plain)",
			func(t *testing.T, raw string, info *Info) {
				if got := sectionOf(t, raw, info, "1", ""); got != "one\r\n--bb\r\n--b-\r\n--b --" {
					t.Errorf("BODY[1] %q", got)
				}
			}},
		{"empty parts", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\n--b--", "multipart/mixed(text/plain,text/plain)", func(t *testing.T, raw string, info *Info) {
			for _, p := range info.Body.Children {
				if p.Size != 0 {
					t.Errorf("part %+v not empty", p)
				}
			}
		}},
		{"part header cut by delimiter", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n--b--\r\n", "multipart/mixed(text/html)", func(t *testing.T, raw string, info *Info) {
			if got := sectionOf(t, raw, info, "1", "MIME"); got != "Content-Type: text/html" {
				t.Errorf("BODY[1.MIME] %q", got)
			}
		}},
		{"bare LF multipart", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n\n--b--\n", "multipart/mixed(text/plain)", func(t *testing.T, raw string, info *Info) {
			if got := sectionOf(t, raw, info, "1", ""); got != "one\n" {
				t.Errorf("BODY[1] %q", got)
			}
		}},
		{"boundary at end of input", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b", "multipart/mixed(text/plain)", nil},
		{"message/rfc822 empty", "Content-Type: message/rfc822\r\n\r\n", "message/rfc822[text/plain]", nil},
		{"message/global", "Content-Type: message/global\r\n\r\nSubject: =?utf-8?q?=C3=A9?=\r\n\r\nx", "message/global[text/plain]", func(t *testing.T, raw string, info *Info) {
			if info.Body.Message.Subject != "é" {
				t.Errorf("subject %q", info.Body.Message.Subject)
			}
		}},
		{"8-bit header", "Subject: gr\xfc\xdfe \xe2\x82\xac\r\nX-B\xe4d: y\r\nFrom: J\xf6rg <j@x.de>\r\n\r\nx", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Envelope.Subject != "gr\uFFFDe €" || info.Envelope.From[0].Mailbox != "j" {
				t.Errorf("%+v", info.Envelope)
			}
		}},
		{"bare CR and NUL", "Subject: a\rb\x00c\r\r\n\r\nx\r", "text/plain", func(t *testing.T, raw string, info *Info) {
			if info.Envelope.Subject != "a b c" {
				t.Errorf("subject %q", info.Envelope.Subject)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Parse(strings.NewReader(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			checkInfo(t, []byte(tc.raw), info)
			if got := shape(&info.Body); got != tc.shape {
				t.Errorf("shape %s, want %s", got, tc.shape)
			}
			if tc.check != nil {
				tc.check(t, tc.raw, info)
			}
			checkStreaming(t, []byte(tc.raw), info)
		})
	}
}

// TestLimits builds messages beyond MaxDepth and MaxParts.
func TestLimits(t *testing.T) {
	t.Run("nested multiparts", func(t *testing.T) {
		var b strings.Builder
		for i := range 3 * MaxDepth {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
		}
		b.WriteString("\r\ndeepest\r\n")
		raw := b.String()
		info := mustParse(t, raw)
		checkInfo(t, []byte(raw), info)
		depth, p := 1, &info.Body
		for len(p.Children) > 0 {
			p = &p.Children[0]
			depth++
		}
		if depth != MaxDepth || p.Type != "text" {
			t.Errorf("innermost part %s/%s at depth %d, want text at %d", p.Type, p.Subtype, depth, MaxDepth)
		}
		checkStreaming(t, []byte(raw), info)
	})
	t.Run("nested messages", func(t *testing.T) {
		raw := strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 3*MaxDepth) + "Subject: deepest\r\n\r\nx"
		info := mustParse(t, raw)
		checkInfo(t, []byte(raw), info)
		depth, p := 1, &info.Body
		for len(p.Children) > 0 {
			p = &p.Children[0]
			depth++
		}
		if depth != MaxDepth || p.Type != "application" || p.Subtype != "octet-stream" {
			t.Errorf("innermost part %s/%s at depth %d", p.Type, p.Subtype, depth)
		}
	})
	t.Run("many parts", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
		for i := range 2 * MaxParts {
			fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain; name=\"part %d with a long name to fill the budget %s\"\r\n\r\npart %d\r\n", i, strings.Repeat("x", 1000), i)
		}
		b.WriteString("--b--\r\n")
		raw := b.String()
		info := mustParse(t, raw)
		checkInfo(t, []byte(raw), info)
		if n := len(info.Body.Children); n != MaxParts-1 {
			t.Errorf("%d parts, want %d", n, MaxParts-1)
		}
		last := info.Body.Children[len(info.Body.Children)-1]
		if last.End != int64(len(raw)) {
			t.Errorf("the last part ends at %d, not at the end (%d)", last.End, len(raw))
		}
		enc, err := info.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d parts encode to %d bytes", MaxParts, len(enc))
		if len(enc) > 4<<20 {
			t.Errorf("encoded structure of %d bytes", len(enc))
		}
		checkStreaming(t, []byte(raw), info)
	})
	t.Run("huge header fields", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("To: ")
		for i := range 100000 {
			fmt.Fprintf(&b, "user%d@example.com, ", i)
		}
		b.WriteString("\r\nSubject: " + strings.Repeat("s", 1<<20) + "\r\n")
		for range 20 {
			b.WriteString("Cc: " + strings.Repeat("a@b, ", 20000) + "\r\nX-Long:\r\n " + strings.Repeat("y", 200000) + "\r\n")
		}
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n")
		raw := b.String()
		info := mustParse(t, raw)
		checkInfo(t, []byte(raw), info)
		if info.Body.Params["charset"] != "utf-8" || len(info.Envelope.Subject) > maxLine || len(info.Envelope.To) == 0 {
			t.Errorf("params %v, subject of %d bytes, %d To", info.Body.Params, len(info.Envelope.Subject), len(info.Envelope.To))
		}
	})
	t.Run("adversarial fields", func(t *testing.T) {
		// Values that a careless parser handles in quadratic time.
		raw := "Subject: " + strings.Repeat("=?a?q?", 10000) + "\r\n" +
			"Content-Type: text/plain; " + strings.Repeat("a;", 30000) + "=x\r\n" +
			"Content-Disposition: attachment; " + strings.Repeat("a*0*=;", 10000) + "\r\n" +
			"To: " + strings.Repeat("<", 60000) + "\r\n" +
			"Cc: " + strings.Repeat("(", 60000) + "\r\n" +
			"In-Reply-To: " + strings.Repeat("<a", 30000) + "\r\n\r\nx"
		start := time.Now()
		info := mustParse(t, raw)
		t.Logf("parsed in %v", time.Since(start))
		checkInfo(t, []byte(raw), info)
	})
	t.Run("long body lines", func(t *testing.T) {
		raw := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + strings.Repeat("-", 1<<20) + "\r\n--b" + strings.Repeat(" ", 1<<20) + "\r\n\r\n" + strings.Repeat("x", 1<<20) + "\r\n--b--"
		info := mustParse(t, raw)
		checkInfo(t, []byte(raw), info)
		if shape(&info.Body) != "multipart/mixed(text/plain,text/plain)" {
			t.Errorf("shape %s", shape(&info.Body))
		}
	})
}

func mustParse(t *testing.T, raw string) *Info {
	t.Helper()
	info, err := Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	if _, err := Parse(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("Parse: %v, want %v", err, boom)
	}
	p := NewParser()
	if _, err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

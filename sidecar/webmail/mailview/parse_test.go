package mailview

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// crlf turns a readable test message into wire form.
func crlf(s string) string { return strings.ReplaceAll(strings.TrimLeft(s, "\n"), "\n", "\r\n") }

const hdrs = `From: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>
To: Alice <alice@example.org>, bob@example.org
Cc: "Carol, C." <carol@example.net>
Reply-To: list@example.org
Subject: =?iso-8859-1?q?Gr=FC=DFe?= aus =?utf-8?b?S8O2bG4=?=
Date: Fri, 27 Nov 2026 05:00:00 +0100
Message-ID: <m1@example.de>
In-Reply-To: <m0@example.org>
References: <a@x> <m0@example.org>
MIME-Version: 1.0
`

var parseTests = []struct {
	name  string
	msg   string
	check func(t *testing.T, m *Message)
}{
	{"plain", hdrs + `Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe, Alice=
!
`, func(t *testing.T, m *Message) {
		eq(t, "Subject", m.Subject, "Grüße aus Köln")
		eq(t, "From", m.From[0], Address{"Jörg", "joerg@example.de"})
		eq(t, "To", len(m.To), 2)
		eq(t, "Cc", m.Cc[0].Name, "Carol, C.")
		eq(t, "ReplyTo", m.ReplyTo[0].Email, "list@example.org")
		eq(t, "MessageID", m.MessageID, "m1@example.de")
		eq(t, "InReplyTo", m.InReplyTo, "m0@example.org")
		eq(t, "References", strings.Join(m.References, " "), "a@x m0@example.org")
		eq(t, "Date", m.Date.UTC().Hour(), 4)
		eq(t, "Text", m.Text, "Grüße, Alice!\r\n")
		eq(t, "HTML", m.HTML, "")
		eq(t, "attachments", len(m.Attachments), 0)
	}},
	{"html-only", hdrs + `Content-Type: text/html; charset=utf-8

<html><head><title>T</title><style>p{}</style></head><body><p>Hello <b>Alice</b>,</p><p>see <a href="http://x.example/">this</a></p><script>bad()</script></body></html>
`, func(t *testing.T, m *Message) {
		contains(t, m.HTML, "<b>Alice</b>")
		eq(t, "Text", m.Text, "Hello Alice ,\nsee this")
	}},
	{"alternative", hdrs + `Content-Type: multipart/alternative; boundary=b1

--b1
Content-Type: text/plain; charset=utf-8

plain version
--b1
Content-Type: text/html; charset=utf-8

<p>html version</p>
--b1--
`, func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "plain version")
		eq(t, "HTML", m.HTML, "<p>html version</p>")
		eq(t, "attachments", len(m.Attachments), 0)
	}},
	{"related-cid", hdrs + `Content-Type: multipart/alternative; boundary=b1

--b1
Content-Type: text/plain

see logo
--b1
Content-Type: multipart/related; boundary=b2

--b2
Content-Type: text/html

<p><img src="cid:logo@x" alt="logo"><img src="http://track.example/p.gif"></p>
--b2
Content-Type: image/png
Content-ID: <logo@x>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==
--b2--
--b1--
`, func(t *testing.T, m *Message) {
		contains(t, m.HTML, `<img src="/part?cid=logo@x" alt="logo">`)
		notContains(t, m.HTML, "track.example")
		eq(t, "HasRemoteImages", m.HasRemoteImages, true)
		eq(t, "attachments", len(m.Attachments), 1)
		a := m.Attachments[0]
		eq(t, "ID", a.ID, "2.2")
		eq(t, "ContentID", a.ContentID, "logo@x")
		eq(t, "Inline", a.Inline, true)
		eq(t, "Size", a.Size, int64(70))
		eq(t, "ContentType", a.ContentType, "image/png")
	}},
	{"attachment-names", hdrs + `Content-Type: multipart/mixed; boundary="=_b"

--=_b
Content-Type: text/plain

body
--=_b
Content-Type: application/pdf; name="=?utf-8?b?UsOpc3Vtw6kucGRm?="
Content-Disposition: attachment; filename="=?utf-8?b?UsOpc3Vtw6kucGRm?="
Content-Transfer-Encoding: base64

JVBERi0=
--=_b
Content-Type: text/plain
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt

1 EUR
--=_b
Content-Type: application/octet-stream
Content-Disposition: attachment;
 filename*0*=utf-8''%C3%BCber%20;
 filename*1="lange ";
 filename*2="Namen.bin"

x
--=_b
Content-Type: application/octet-stream; name="../../etc/pass
 wd"
Content-Disposition: attachment; filename="=?utf-8?q?..=5C..=5Cevil=5C=E2=80=AEgpj.exe?="

x
--=_b
Content-Type: image/gif

GIF89a
--=_b--
`, func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "body")
		eq(t, "attachments", len(m.Attachments), 5)
		names := []string{"Résumé.pdf", "€ rates.txt", "über lange Namen.bin", "gpj.exe", "part-6.gif"}
		for i, n := range names {
			eq(t, "name", m.Attachments[i].Filename, n)
			eq(t, "id", m.Attachments[i].ID, string(rune('2'+i)))
		}
		eq(t, "size", m.Attachments[0].Size, int64(5))
		eq(t, "inline", m.Attachments[0].Inline, false)
	}},
	{"nested-rfc822", hdrs + `Content-Type: multipart/mixed; boundary=o

--o
Content-Type: text/plain

see attached
--o
Content-Type: message/rfc822

From: x@example.com
Subject: inner
Content-Type: multipart/mixed; boundary=i

--i
Content-Type: text/plain

inner text
--i--
--o--
`, func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "see attached")
		eq(t, "attachments", len(m.Attachments), 1)
		eq(t, "type", m.Attachments[0].ContentType, "message/rfc822")
		eq(t, "id", m.Attachments[0].ID, "2")
		eq(t, "name", m.Attachments[0].Filename, "message-2.eml")
	}},
	{"broken-boundary", hdrs + `Content-Type: multipart/mixed; boundary=nothere

--other
Content-Type: text/plain

this is still shown
`, func(t *testing.T, m *Message) {
		contains(t, m.Text, "this is still shown")
		eq(t, "Broken", m.Broken, true)
	}},
	{"unterminated-multipart", hdrs + `Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain

first part
--b
Content-Type: application/pdf; name=a.pdf

%PDF`, func(t *testing.T, m *Message) {
		contains(t, m.Text, "first part")
	}},
	{"unknown-charset", hdrs + `Content-Type: text/plain; charset=x-klingon

raw bytes shown
`, func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "raw bytes shown\r\n")
	}},
	{"invalid-utf8", hdrs + "Content-Type: text/plain; charset=utf-8\n\nbad \xff\xfe bytes\n", func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "bad \uFFFD bytes\r\n")
	}},
	{"undeclared-latin1", "Subject: x\nContent-Type: text/plain\n\nGr\xfc\xdfe\n", func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "Grüße\r\n")
	}},
	{"html-meta-charset", "Subject: x\nContent-Type: text/html\n\n<meta charset=\"koi8-r\"><p>\xf0\xd2\xc9\xd7\xc5\xd4</p>\n", func(t *testing.T, m *Message) {
		eq(t, "HTML", m.HTML, "<p>Привет</p>\n")
	}},
	{"named-text-part", hdrs + `Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain; name="problems.txt"

shown inline
--b
Content-Type: text/plain charset="iso-2022-jp"; name="more.txt"

an attachment
--b--
`, func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "shown inline")
		eq(t, "attachments", len(m.Attachments), 1)
		eq(t, "type", m.Attachments[0].ContentType, "text/plain")
		eq(t, "name", m.Attachments[0].Filename, "more.txt")
	}},
	{"broken-header", "From: a@b\nthis line has no colon\n\nbody \xff\n" + strings.Repeat("long body\n", 1000) + "the end\n", func(t *testing.T, m *Message) {
		contains(t, m.Text, "this line has no colon")
		contains(t, m.Text, "body \uFFFD")
		contains(t, m.Text, "the end")
		eq(t, "Broken", m.Broken, true)
	}},
	{"no-content-type", "From: a@b\nSubject: s\n\nhello\n", func(t *testing.T, m *Message) {
		eq(t, "Text", m.Text, "hello\r\n")
	}},
	{"huge-text", hdrs + "Content-Type: text/plain\n\n" + strings.Repeat("0123456789\n", 3000), func(t *testing.T, m *Message) {
		eq(t, "Truncated", m.Truncated, true)
		if len(m.Text) > 1024+100 {
			t.Errorf("text %d bytes, want about 1024", len(m.Text))
		}
		contains(t, m.Text, "truncated")
	}},
}

func TestParse(t *testing.T) {
	for _, tc := range parseTests {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{CIDURL: func(c string) string { return "/part?cid=" + c }}
			if tc.name == "huge-text" {
				opts.MaxTextBytes = 1024
			}
			m, err := Parse(strings.NewReader(crlf(tc.msg)), opts)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
}

// TestTextOnly: the same Text, subject and attachments as a full Parse, and
// no HTML.
func TestTextOnly(t *testing.T) {
	sawHTML := false
	for _, tc := range parseTests {
		raw := crlf(tc.msg)
		full, err := Parse(strings.NewReader(raw), Options{})
		if err != nil {
			t.Fatal(err)
		}
		text, err := Parse(strings.NewReader(raw), Options{TextOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		sawHTML = sawHTML || full.HTML != ""
		if text.HTML != "" || text.Text != full.Text || text.Subject != full.Subject || len(text.Attachments) != len(full.Attachments) {
			t.Errorf("%s: TextOnly gave HTML %d bytes, text %q; full parse text %q", tc.name, len(text.HTML), text.Text, full.Text)
		}
	}
	if !sawHTML {
		t.Fatal("no test message has HTML: TextOnly is not exercised")
	}
}

// TestOpenPart reads every attachment listed by Parse back by its ID.
func TestOpenPart(t *testing.T) {
	for _, tc := range parseTests {
		raw := crlf(tc.msg)
		m, err := Parse(strings.NewReader(raw), Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range m.Attachments {
			name, ct, body, err := OpenPart(strings.NewReader(raw), a.ID)
			if err != nil {
				t.Fatalf("%s: OpenPart(%s): %v", tc.name, a.ID, err)
			}
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			if name != a.Filename || !strings.HasPrefix(ct, a.ContentType) || int64(len(b)) != a.Size {
				t.Errorf("%s: OpenPart(%s) = %q %q %d bytes, Parse said %+v", tc.name, a.ID, name, ct, len(b), a)
			}
		}
	}
	raw := crlf(parseTests[3].msg)
	_, ct, body, err := OpenPart(strings.NewReader(raw), "cid:logo@x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	if ct != "image/png" || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("cid part: %q %q", ct, b)
	}
	if _, _, _, err := OpenPart(strings.NewReader(raw), "9"); err == nil {
		t.Error("OpenPart of a missing part succeeded")
	}
	if _, _, _, err := OpenPart(strings.NewReader(raw), "cid:nope"); err == nil {
		t.Error("OpenPart of a missing cid succeeded")
	}
	// Text attachments are re-encoded to UTF-8, and the type says so.
	raw = crlf(hdrs + "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Disposition: attachment; filename=a.txt\n\n\xfc\n--b--\n")
	_, ct, body, err = OpenPart(strings.NewReader(raw), "1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(body)
	eq(t, "ct", ct, "text/plain; charset=utf-8")
	eq(t, "body", string(b), "ü")
}

func TestLimits(t *testing.T) {
	// Deep nesting.
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := 0; i < 200; i++ {
		b.WriteString("--b" + itoa(i) + "\r\nContent-Type: multipart/mixed; boundary=b" + itoa(i+1) + "\r\n\r\n")
	}
	b.WriteString("--b200\r\nContent-Type: text/plain\r\n\r\ndeep\r\n")
	m, err := Parse(strings.NewReader(b.String()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Truncated", m.Truncated, true)
	// Many parts.
	b.Reset()
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := 0; i < 5000; i++ {
		b.WriteString("--b\r\nContent-Type: image/gif\r\n\r\nx\r\n")
	}
	b.WriteString("--b--\r\n")
	m, err = Parse(strings.NewReader(b.String()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Truncated", m.Truncated, true)
	if len(m.Attachments) >= MaxParts {
		t.Errorf("%d attachments, want < %d", len(m.Attachments), MaxParts)
	}
}

func TestParseReaderError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("Subject: x\r\n\r\nbody"), errAfter{})
	if _, err := Parse(r, Options{}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v, want the reader's error", err)
	}
}

type errAfter struct{}

func (errAfter) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestCorpus parses every real-world message of the shared corpus.
func TestCorpus(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "..", "shared", "corpus")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("LIFELINE_FULL") != "" {
			t.Fatalf("corpus missing: %v", err)
		}
		t.Skipf("corpus %s missing (set LIFELINE_FULL=1 to require it)", dir)
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".eml" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		m, err := Parse(bytes.NewReader(raw), Options{})
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		if m.Text == "" && m.HTML == "" && len(m.Attachments) == 0 && len(bytes.TrimSpace(raw)) > 0 {
			t.Errorf("%s: nothing shown", path)
		}
		for _, a := range m.Attachments {
			if _, _, body, err := OpenPart(bytes.NewReader(raw), a.ID); err != nil {
				t.Errorf("%s: OpenPart(%s): %v", path, a.ID, err)
			} else if k, _ := io.Copy(io.Discard, body); k != a.Size {
				t.Errorf("%s: part %s: %d bytes, Parse said %d", path, a.ID, k, a.Size)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d corpus messages parsed", n)
	if n < 100 {
		t.Errorf("only %d corpus messages found", n)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func contains(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%q does not contain %q", s, sub)
	}
}

func notContains(t *testing.T, s, sub string) {
	t.Helper()
	if strings.Contains(s, sub) {
		t.Errorf("%q contains %q", s, sub)
	}
}

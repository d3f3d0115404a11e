package mailview

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks that Parse never panics, never fails on an in-memory
// reader, keeps within its limits, returns only sanitized HTML, and that
// every attachment it lists can be opened again with the size it reported.
func FuzzParse(f *testing.F) {
	for _, tc := range parseTests {
		f.Add([]byte(crlf(tc.msg)))
	}
	files, _ := filepath.Glob("testdata/hostile/*.eml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	const max = 4096
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(bytes.NewReader(raw), Options{MaxTextBytes: max, CIDURL: func(c string) string { return "/part?cid=" + c }})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(m.Text) > max+64 {
			t.Fatalf("Text %d bytes, limit %d", len(m.Text), max)
		}
		if !utf8.ValidString(m.Text) || !utf8.ValidString(m.HTML) || !utf8.ValidString(m.Subject) {
			t.Fatalf("invalid UTF-8 in output")
		}
		if len(m.Attachments) > MaxParts {
			t.Fatalf("%d attachments", len(m.Attachments))
		}
		// Every tag and attribute of the sanitized HTML, parsed again, is
		// one the policy allows (checkTags). Not a search for "javascript:"
		// in the markup: the same words in the text of a message are
		// harmless (the fuzzer found "jAvAsCript:0" as a text/html body).
		if m.HTML != "" {
			checkTags(t, m.HTML, false)
		}
		for _, a := range m.Attachments {
			if strings.ContainsAny(a.Filename, "/\\\x00\r\n") {
				t.Fatalf("filename %q", a.Filename)
			}
			_, _, body, err := OpenPart(bytes.NewReader(raw), a.ID)
			if err != nil {
				t.Fatalf("OpenPart(%s): %v", a.ID, err)
			}
			n, _ := io.Copy(io.Discard, body)
			if n != a.Size {
				t.Fatalf("part %s: %d bytes, Parse said %d", a.ID, n, a.Size)
			}
		}
	})
}

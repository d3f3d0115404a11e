package mailview

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/internal/headerlimit"
)

// manyFields returns n header lines "a:b" with the line end nl.
func manyFields(n int, nl string) string {
	return strings.Repeat("a:b"+nl, n)
}

// allocDuring returns the bytes allocated while f runs.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A header section of hundreds of thousands of tiny fields, at the top or in
// a part, costs a bounded amount of memory, and the message is still shown:
// go-message alone keeps every field (~300 bytes each), and fails the whole
// message when the top-level header passes 1 MB.
func TestParseHugeHeaderBounded(t *testing.T) {
	const n = 400_000 // 2 MB of "a:b\r\n"
	cases := map[string]string{
		"top": "From: a@example.com\r\nSubject: hello\r\n" + manyFields(n, "\r\n") +
			"Content-Type: text/plain\r\n\r\nthe body text\r\n",
		"part": "From: a@example.com\r\nSubject: hello\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\nthe body text\r\n" +
			"--b\r\nContent-Type: application/pdf\r\n" + manyFields(n, "\r\n") + "\r\nPDF\r\n" +
			"--b\r\nContent-Type: text/plain\r\n" + manyFields(n, "\r\n") + "\r\nsecond text\r\n--b--\r\n",
		"part-lf-no-blank": "From: a@example.com\nSubject: hello\nContent-Type: multipart/mixed; boundary=b\n\n" +
			"--b\nContent-Type: text/plain\n\nthe body text\n" +
			"--b\nContent-Type: application/pdf\n" + manyFields(n, "\n") + "--b\n\nsecond text\n--b--\n",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			var m *Message
			var err error
			alloc := allocDuring(func() { m, err = Parse(strings.NewReader(raw), Options{}) })
			if err != nil {
				t.Fatal(err)
			}
			// The raw copy kept for the fallback (up to 2 MiB + 64 KiB,
			// grown by doubling), text and buffers; go-message alone allocated
			// over 200 MB for the "part" case.
			if limit := uint64(24 << 20); alloc > limit {
				t.Errorf("Parse allocated %d MB for a %d MB message, limit %d MB", alloc>>20, len(raw)>>20, limit>>20)
			} else {
				t.Logf("Parse allocated %d KB for a %d KB message", alloc>>10, len(raw)>>10)
			}
			if m.Subject != "hello" || !strings.Contains(m.Text, "the body text") {
				t.Errorf("Subject %q, Text %.200q", m.Subject, m.Text)
			}
			if name != "top" && !strings.Contains(m.Text, "second text") {
				t.Errorf("second text part lost: %.200q", m.Text)
			}
			if name == "part" && (len(m.Attachments) != 1 || m.Attachments[0].Size != 3) {
				t.Errorf("attachments %+v", m.Attachments)
			}
			if strings.Contains(m.Text, "a:b") {
				t.Errorf("header lines shown as text")
			}
			if name == "part" {
				alloc = allocDuring(func() {
					_, _, body, err := OpenPart(strings.NewReader(raw), "2")
					if err != nil {
						t.Fatal(err)
					}
					if b, _ := io.ReadAll(body); string(b) != "PDF" {
						t.Errorf("part 2 = %q", b)
					}
				})
				if limit := uint64(24 << 20); alloc > limit {
					t.Errorf("OpenPart allocated %d MB", alloc>>20)
				}
			}
		})
	}
}

// Messages whose headers are within the bounds pass through unchanged.
func TestHeaderLimiterIdentity(t *testing.T) {
	var msgs [][]byte
	for _, tc := range parseTests {
		msgs = append(msgs, []byte(crlf(tc.msg)), []byte(tc.msg))
	}
	files, _ := filepath.Glob("testdata/*/*.eml")
	more, _ := filepath.Glob("testdata/*.eml")
	for _, p := range append(files, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	for i, raw := range msgs {
		out, err := io.ReadAll(headerlimit.Header(bytes.NewReader(raw)))
		if err != nil || !bytes.Equal(out, raw) {
			t.Errorf("message %d changed (err %v)", i, err)
		}
		for _, b := range []string{"b", "outer", "inner", "BOUNDARY"} {
			out, err := io.ReadAll(headerlimit.Parts(bytes.NewReader(raw), b))
			if err != nil || !bytes.Equal(out, raw) {
				t.Errorf("message %d changed as multipart %q (err %v)", i, b, err)
			}
		}
	}
}

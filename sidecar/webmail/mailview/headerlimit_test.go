package mailview

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
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

// limit runs a headerLimiter with small bounds over in.
func limit(t *testing.T, in, boundary string, fields, size int) string {
	t.Helper()
	var h *headerLimiter
	if boundary == "" {
		h = limitHeader(strings.NewReader(in))
	} else {
		h = limitPartHeaders(strings.NewReader(in), boundary)
	}
	h.maxFields, h.maxBytes = fields, size
	out, err := io.ReadAll(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestHeaderLimiter(t *testing.T) {
	long := strings.Repeat("x", 3*limiterBuf)
	for _, tc := range []struct {
		name, in, boundary string
		fields, size       int
		want               string
	}{
		{"within", "A: 1\r\nB: 2\r\n\r\nA: 3\r\n", "", 2, 100, "A: 1\r\nB: 2\r\n\r\nA: 3\r\n"},
		{"fields", "A: 1\r\nB: 2\r\n C\r\nD: 4\r\n\r\nA: 3\r\n", "", 1, 100, "A: 1\r\n\r\nA: 3\r\n"},
		{"bytes cut whole line", "A: 1\r\nB: 22222\r\nC: 3\r\n\r\nbody", "", 10, 10, "A: 1\r\n\r\nbody"},
		{"long line cut", "A: 1\r\nB: " + long + "\r\nC: 3\r\n\r\nbody", "", 10, limiterBuf + 10,
			"A: 1\r\nB: " + long[:limiterBuf+10-9] + "\r\n\r\nbody"},
		{"dropped ends at non-field", "A: 1\r\nB: 2\r\nnot a field\r\nmore", "", 1, 100, "A: 1\r\n\r\nnot a field\r\nmore"},
		{"dropped ends at non-field lf", "A: 1\nB: 2\nnot a field\nmore", "", 1, 100, "A: 1\n\nnot a field\nmore"},
		{"eof in header", "A: 1\r\nB: 2\r\n", "", 1, 100, "A: 1\r\n"},
		{"parts", "pre\r\n--b\r\nA: 1\r\nB: 2\r\n\r\nA: 3\r\nB: 4\r\n--b \r\nC: 1\r\nD: 2\r\n\r\nx\r\n--b--\r\n", "b", 1, 100,
			"pre\r\n--b\r\nA: 1\r\n\r\nA: 3\r\nB: 4\r\n--b \r\nC: 1\r\n\r\nx\r\n--b--\r\n"},
		{"delimiter ends dropped header", "--b\r\nA: 1\r\nB: 2\r\n--b\r\nC: 1\r\nD: 2\r\n\r\nx", "b", 1, 100,
			"--b\r\nA: 1\r\n\r\n--b\r\nC: 1\r\n\r\nx"},
		{"not a delimiter", "--b\r\n\r\nA\r\n--bb\r\nA: 1\r\nB: 2\r\n\r\n", "b", 1, 100, "--b\r\n\r\nA\r\n--bb\r\nA: 1\r\nB: 2\r\n\r\n"},
		// In CRLF style a delimiter after a bare LF is not one (go-message).
		{"bare lf before delimiter", "--b\r\n\r\nA\n--b\r\nA: 1\r\nB: 2\r\n\r\n", "b", 1, 100, "--b\r\n\r\nA\n--b\r\nA: 1\r\nB: 2\r\n\r\n"},
		{"lf style", "--b\n\nA\n--b\nA: 1\nB: 2\n\n", "b", 1, 100, "--b\n\nA\n--b\nA: 1\n\n"},
		{"after close", "--b\r\n\r\n--b--\r\n--b\r\nA: 1\r\nB: 2\r\n\r\n", "b", 1, 100, "--b\r\n\r\n--b--\r\n--b\r\nA: 1\r\nB: 2\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := limit(t, tc.in, tc.boundary, tc.fields, tc.size)
			if len(got) > 500 && got != tc.want {
				i := 0
				for i < min(len(got), len(tc.want)) && got[i] == tc.want[i] {
					i++
				}
				t.Errorf("got %d bytes, want %d, first difference at %d", len(got), len(tc.want), i)
			} else if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
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
		out, err := io.ReadAll(limitHeader(bytes.NewReader(raw)))
		if err != nil || !bytes.Equal(out, raw) {
			t.Errorf("message %d changed (err %v)", i, err)
		}
		for _, b := range []string{"b", "outer", "inner", "BOUNDARY"} {
			out, err := io.ReadAll(limitPartHeaders(bytes.NewReader(raw), b))
			if err != nil || !bytes.Equal(out, raw) {
				t.Errorf("message %d changed as multipart %q (err %v)", i, b, err)
			}
		}
	}
}

// FuzzHeaderLimiter checks, for any input, that go-message reading the
// limiter's output never gets a header (the message's or a part's) of more
// fields than the bound: the limiter finds every part header go-message
// reads. And that with bounds never reached the input passes unchanged.
func FuzzHeaderLimiter(f *testing.F) {
	for _, tc := range parseTests {
		f.Add([]byte(crlf(tc.msg)), "b")
		f.Add([]byte(tc.msg), "outer")
	}
	f.Add([]byte("--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nx\r\n--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n--b--\r\n"), "b")
	f.Add([]byte("--b\nA: 1\nB: 2\nC: 3\n\nx\n--b \nA: 1\n B\nB: 2\nC: 3\n--b--\n"), "b")
	f.Fuzz(func(t *testing.T, raw []byte, boundary string) {
		const maxFields = 2
		// The whole message, as a message.
		h := limitHeader(bytes.NewReader(raw))
		h.maxFields, h.maxBytes = maxFields, 64
		hdr, _ := textproto.ReadHeader(bufio.NewReader(h))
		if hdr.Len() > maxFields {
			t.Fatalf("message header of %d fields", hdr.Len())
		}
		// The whole message, as a multipart body.
		if boundary == "" {
			return
		}
		h = limitPartHeaders(bytes.NewReader(raw), boundary)
		h.maxFields, h.maxBytes = maxFields, 64
		mr := textproto.NewMultipartReader(h, boundary)
		for i := 0; i < 100; i++ {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.Header.Len() > maxFields {
				t.Fatalf("part %d header of %d fields", i+1, p.Header.Len())
			}
		}
		// Unreached bounds: unchanged.
		for _, h := range []*headerLimiter{limitHeader(bytes.NewReader(raw)), limitPartHeaders(bytes.NewReader(raw), boundary)} {
			h.maxFields, h.maxBytes = len(raw)+1, len(raw)+1
			out, err := io.ReadAll(h)
			if err != nil || !bytes.Equal(out, raw) {
				t.Fatalf("changed within bounds: %q -> %q (%v)", raw, out, err)
			}
		}
	})
}

package headerlimit

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// limit runs a limiter with small bounds over in.
func limit(t *testing.T, in, boundary string, fields, size int) string {
	t.Helper()
	var h *limiter
	if boundary == "" {
		h = newHeader(strings.NewReader(in), fields, size)
	} else {
		h = newParts(strings.NewReader(in), boundary, fields, size)
	}
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

// The exported readers apply MaxFields and MaxBytes.
func TestExportedBounds(t *testing.T) {
	fields := strings.Repeat("a:b\r\n", MaxFields+10)
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"Header", Header(strings.NewReader(fields + "\r\nbody\r\n"))},
		{"Parts", Parts(strings.NewReader("--b\r\n"+fields+"\r\nbody\r\n--b--\r\n"), "b")},
	} {
		out, err := io.ReadAll(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(out), "a:b\r\n"); n != MaxFields {
			t.Errorf("%s kept %d fields, want %d", tc.name, n, MaxFields)
		}
		if !strings.Contains(string(out), "\r\n\r\nbody\r\n") {
			t.Errorf("%s lost the body: %.100q", tc.name, out[len(out)-min(len(out), 100):])
		}
	}
	long := "a: " + strings.Repeat("x", 2*MaxBytes) + "\r\n"
	out, err := io.ReadAll(Header(strings.NewReader("Subject: s\r\n" + long + "\r\nbody")))
	if err != nil {
		t.Fatal(err)
	}
	// The kept header: MaxBytes bytes, the line end closing the cut field,
	// the empty line ending the header.
	if want := MaxBytes + 4 + len("body"); len(out) != want || !strings.HasSuffix(string(out), "\r\n\r\nbody") {
		t.Errorf("Header over MaxBytes: %d bytes, want %d", len(out), want)
	}
}

// fuzzSeeds are messages in the shapes the limiter meets, with the boundary
// of their multipart body.
var fuzzSeeds = []struct{ msg, boundary string }{
	{"From: a@example.com\nSubject: hi\nContent-Type: text/plain\n\nhello\n", "b"},
	{"From: a@example.com\nContent-Type: multipart/alternative; boundary=b\n\n" +
		"--b\nContent-Type: text/plain; charset=utf-8\n\nplain version\n" +
		"--b\nContent-Type: text/html; charset=utf-8\n\n<p>html version</p>\n--b--\n", "b"},
	{"From: a@example.com\nContent-Type: multipart/mixed; boundary=outer\n\n" +
		"--outer\nContent-Type: text/plain\n\nsee attached\n" +
		"--outer\nContent-Type: message/rfc822\n\nFrom: x@example.com\nSubject: inner\n" +
		"Content-Type: multipart/mixed; boundary=inner\n\n--inner\nContent-Type: text/plain\n\ninner text\n--inner--\n" +
		"--outer\nContent-Type: application/octet-stream\nContent-Disposition: attachment;\n" +
		" filename*0*=utf-8''%C3%BCber%20;\n filename*1=\"lange \"\n\nx\n--outer--\n", "outer"},
	{"From: a@b\nthis line has no colon\n\nbody \xff\n", "b"},
	{"--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nx\r\n--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n--b--\r\n", "b"},
	{"--b\nA: 1\nB: 2\nC: 3\n\nx\n--b \nA: 1\n B\nB: 2\nC: 3\n--b--\n", "b"},
}

// FuzzHeaderLimiter checks, for any input, that go-message reading the
// limiter's output never gets a header (the message's or a part's) of more
// fields than the bound: the limiter finds every part header go-message
// reads. And that with bounds never reached the input passes unchanged.
func FuzzHeaderLimiter(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.msg), s.boundary)
		f.Add([]byte(strings.ReplaceAll(s.msg, "\n", "\r\n")), s.boundary)
	}
	f.Fuzz(func(t *testing.T, raw []byte, boundary string) {
		const maxFields = 2
		// The whole message, as a message.
		hdr, _ := textproto.ReadHeader(bufio.NewReader(newHeader(bytes.NewReader(raw), maxFields, 64)))
		if hdr.Len() > maxFields {
			t.Fatalf("message header of %d fields", hdr.Len())
		}
		// The whole message, as a multipart body.
		if boundary == "" {
			return
		}
		mr := textproto.NewMultipartReader(newParts(bytes.NewReader(raw), boundary, maxFields, 64), boundary)
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
		for _, h := range []*limiter{newHeader(bytes.NewReader(raw), len(raw)+1, len(raw)+1),
			newParts(bytes.NewReader(raw), boundary, len(raw)+1, len(raw)+1)} {
			out, err := io.ReadAll(h)
			if err != nil || !bytes.Equal(out, raw) {
				t.Fatalf("changed within bounds: %q -> %q (%v)", raw, out, err)
			}
		}
	})
}

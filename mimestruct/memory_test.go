package mimestruct

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// repeat is a reader of s, n times, that holds only s.
type repeat struct {
	s   string
	n   int
	off int
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.s[r.off:])
	r.off += k
	if r.off == len(r.s) {
		r.off = 0
		r.n--
	}
	return k, nil
}

// bigMessage is a message of about size bytes, streamed: a multipart with a
// text part, a base64 attachment, lines that start like delimiters and are
// not, a single line of a tenth of the size, and an embedded message.
func bigMessage(size int) (io.Reader, int64) {
	const b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
	const dashes = "--boundary-not-quite -- and a signature separator\r\n"
	rs := []io.Reader{
		strings.NewReader("From: big@example.org\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=\"boundary\"\r\n\r\n" +
			"--boundary\r\nContent-Type: text/plain\r\n\r\n"),
		&repeat{s: dashes, n: size / 10 / len(dashes)},
		strings.NewReader("\r\n--boundary\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"),
		&repeat{s: b64, n: size * 7 / 10 / len(b64)},
		strings.NewReader("\r\n--boundary\r\nContent-Type: text/plain\r\n\r\n"),
		&repeat{s: "x", n: size / 10},
		strings.NewReader("\r\n--boundary\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n"),
		&repeat{s: "inner line\r\n", n: size / 10 / 12},
		strings.NewReader("\r\n--boundary--\r\n"),
	}
	var n int64
	for _, r := range rs {
		switch r := r.(type) {
		case *strings.Reader:
			n += r.Size()
		case *repeat:
			n += int64(len(r.s) * r.n)
		}
	}
	return io.MultiReader(rs...), n
}

// TestMemory parses a 50 MB message and checks that what Parse allocates, in
// total and so at its peak, does not grow with the message.
func TestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB parse skipped in -short mode")
	}
	const size = 50 << 20
	r, n := bigMessage(size)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	info, err := Parse(r)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d bytes parsed with %d bytes allocated in %d allocations", n, alloc, after.Mallocs-before.Mallocs)
	if alloc > 512<<10 {
		t.Errorf("parsing %d MB allocated %d KiB, want at most 512 KiB", n>>20, alloc>>10)
	}
	if got := shape(&info.Body); got != "multipart/mixed(text/plain,application/octet-stream,text/plain,message/rfc822[text/plain])" {
		t.Errorf("shape %s", got)
	}
	if info.Body.End != n || info.Body.Children[1].Size < size*6/10 {
		t.Errorf("message of %d bytes parsed as %d; attachment %d bytes", n, info.Body.End, info.Body.Children[1].Size)
	}
}

// BenchmarkParse measures Parse on a 4 MB message beside BenchmarkCopy, which
// only reads the same bytes through the same io.Copy: the difference is the
// parser's cost.
func BenchmarkParse(b *testing.B) {
	raw := readAll(b)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Parse(onlyReader{strings.NewReader(raw)}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	raw := readAll(b)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := io.Copy(io.Discard, onlyReader{strings.NewReader(raw)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseSmall is what structures add to a typical 4 KiB append.
func BenchmarkParseSmall(b *testing.B) {
	raw := "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>, carol@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
		"Date: Mon, 2 Jan 2006 15:04:05 -0700\r\nMessage-ID: <abc@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
		strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?\r\n", 60)
	msg := []byte(raw)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		// As the journal feeds it: Write, no io.Copy buffer.
		p := NewParser()
		if _, err := p.Write(msg); err != nil {
			b.Fatal(err)
		}
		info, err := p.Close()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := info.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// onlyReader hides WriterTo, so that io.Copy reads through its buffer.
type onlyReader struct{ io.Reader }

func readAll(b *testing.B) string {
	r, _ := bigMessage(4 << 20)
	raw, err := io.ReadAll(r)
	if err != nil {
		b.Fatal(err)
	}
	return string(raw)
}

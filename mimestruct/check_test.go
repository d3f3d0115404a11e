package mimestruct

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkInfo fails the test for every invariant of the package comment that
// info breaks for the message raw.
func checkInfo(t testing.TB, raw []byte, info *Info) {
	t.Helper()
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	b := &info.Body
	if b.HeaderStart != 0 || b.End != int64(len(raw)) {
		fail("message spans [%d,%d), want [0,%d)", b.HeaderStart, b.End, len(raw))
	}
	checkEnvelope(fail, "envelope", &info.Envelope)
	n := 0
	checkPart(fail, raw, b, "BODY", 1, &n)
	if n > MaxParts {
		fail("%d parts, limit %d", n, MaxParts)
	}
	for _, e := range errs {
		t.Error(e)
	}
	if len(errs) > 0 && len(raw) < 4096 {
		t.Logf("message: %q", raw)
	}
}

func checkPart(fail func(string, ...any), raw []byte, p *Part, path string, depth int, n *int) {
	*n++
	if depth > MaxDepth {
		fail("%s: depth %d beyond %d", path, depth, MaxDepth)
	}
	if !(0 <= p.HeaderStart && p.HeaderStart <= p.BodyStart && p.BodyStart <= p.End && p.End <= int64(len(raw))) {
		fail("%s: offsets %d %d %d out of order or bounds (%d)", path, p.HeaderStart, p.BodyStart, p.End, len(raw))
		return
	}
	if p.Size != p.End-p.BodyStart {
		fail("%s: Size %d, body is %d", path, p.Size, p.End-p.BodyStart)
	}
	if lines := int64(bytes.Count(raw[p.BodyStart:p.End], []byte("\n"))); p.Lines != lines {
		fail("%s: Lines %d, body has %d", path, p.Lines, lines)
	}
	if !isToken(p.Type) || !isToken(p.Subtype) || strings.ToLower(p.Type+p.Subtype) != p.Type+p.Subtype {
		fail("%s: type %q/%q", path, p.Type, p.Subtype)
	}
	if p.Encoding == "" {
		fail("%s: no encoding", path)
	}
	for _, s := range []string{p.ID, p.Description, p.Encoding, p.MD5, p.Disposition, p.Location} {
		checkString(fail, path, s)
	}
	for _, m := range []map[string]string{p.Params, p.DispositionParams} {
		for k, v := range m {
			checkString(fail, path, k)
			checkString(fail, path, v)
		}
	}
	for _, s := range p.Language {
		checkString(fail, path, s)
	}
	isMsg := p.Type == "message" && (p.Subtype == "rfc822" || p.Subtype == "global")
	switch {
	case p.Type == "multipart":
		if len(p.Children) == 0 {
			fail("%s: multipart without parts", path)
		}
		if p.Message != nil {
			fail("%s: multipart with an envelope", path)
		}
	case isMsg:
		if len(p.Children) != 1 || p.Message == nil {
			fail("%s: message/rfc822 with %d children, envelope %v", path, len(p.Children), p.Message != nil)
			return
		}
		c := &p.Children[0]
		if c.HeaderStart != p.BodyStart || c.End != p.End {
			fail("%s: embedded message spans [%d,%d), body [%d,%d)", path, c.HeaderStart, c.End, p.BodyStart, p.End)
		}
		checkEnvelope(fail, path+" envelope", p.Message)
	default:
		if len(p.Children) != 0 || p.Message != nil {
			fail("%s: %s/%s with %d children", path, p.Type, p.Subtype, len(p.Children))
		}
	}
	prev := p.BodyStart
	for i := range p.Children {
		c := &p.Children[i]
		if c.HeaderStart < prev || c.End > p.End {
			fail("%s.%d: spans [%d,%d), outside [%d,%d)", path, i+1, c.HeaderStart, c.End, prev, p.End)
		}
		prev = c.End
		checkPart(fail, raw, c, fmt.Sprintf("%s.%d", path, i+1), depth+1, n)
	}
}

func checkEnvelope(fail func(string, ...any), what string, e *Envelope) {
	checkString(fail, what, e.Subject)
	checkString(fail, what, e.MessageID)
	for _, s := range e.InReplyTo {
		checkString(fail, what, s)
	}
	for _, l := range [][]Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
		for _, a := range l {
			checkString(fail, what, a.Name)
			checkString(fail, what, a.Mailbox)
			checkString(fail, what, a.Host)
			if a.Host == "" && a.Name != "" {
				fail("%s: group marker %+v with a name", what, a)
			}
		}
	}
	if len(e.Sender) == 0 && len(e.From) > 0 || len(e.ReplyTo) == 0 && len(e.From) > 0 {
		fail("%s: Sender or Reply-To empty while From is not", what)
	}
}

func checkString(fail func(string, ...any), what, s string) {
	if !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\r\n") {
		fail("%s: string %q is not clean", what, s)
	}
}

// parseChunked parses raw written in pieces of size n.
func parseChunked(t testing.TB, raw []byte, n int) *Info {
	t.Helper()
	p := NewParser()
	for len(raw) > 0 {
		k := min(n, len(raw))
		if w, err := p.Write(raw[:k]); w != k || err != nil {
			t.Fatalf("Write: %d, %v", w, err)
		}
		raw = raw[k:]
	}
	info, err := p.Close()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// checkStreaming checks that raw gives the same Info however it is cut into
// writes, and that the Info survives encoding.
func checkStreaming(t testing.TB, raw []byte, want *Info) {
	t.Helper()
	for _, n := range []int{1, 2, 3, 7, 64, 4093} {
		if n >= len(raw) && n > 1 {
			break
		}
		if got := parseChunked(t, raw, n); !reflect.DeepEqual(got, want) {
			t.Errorf("written %d bytes at a time: %s", n, diff(want, got))
			return
		}
	}
	enc, err := want.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	var back Info
	if err := back.UnmarshalBinary(enc); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if !reflect.DeepEqual(&back, want) {
		t.Errorf("encoding round trip: %s", diff(want, &back))
	}
}

func diff(want, got *Info) string {
	return fmt.Sprintf("\n got %+v\nwant %+v", *got, *want)
}

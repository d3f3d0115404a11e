package mimestruct

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	message "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// corpusDir is the shared mail corpus (see its README); tests that use it skip
// when it is absent.
const corpusDir = "../../shared/corpus/sisimai"

// corpus returns the corpus messages' paths, or skips the test.
func corpus(t *testing.T) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(corpusDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".eml") {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil || len(paths) == 0 {
		t.Skipf("no mail corpus at %s (%v): see /work/shared/corpus/README.md", corpusDir, err)
	}
	return paths
}

// TestCorpus parses every corpus message, checks the invariants, that writing
// it in pieces changes nothing, and that the encoding round-trips.
func TestCorpus(t *testing.T) {
	for _, path := range corpus(t) {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		t.Run(filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), func(t *testing.T) {
			checkInfo(t, raw, info)
			checkStreaming(t, raw, info)
		})
	}
}

// TestGoMessage compares what Parse finds with what go-message reads from the
// same messages, part by part, the way go-imap's ExtractBodyStructure and
// ExtractEnvelope walk a message: the hand-written messages of this package's
// tests and every corpus message go-message reads without an error. Where
// go-message gives up on a part, that part is not compared.
func TestGoMessage(t *testing.T) {
	msgs := map[string][]byte{"nested": []byte(nested)}
	if _, err := os.Stat(corpusDir); err == nil {
		for _, path := range corpus(t) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			msgs[path] = raw
		}
	}
	compared, parts := 0, 0
	for _, name := range slices.Sorted(maps.Keys(msgs)) {
		raw := msgs[name]
		br := bufio.NewReader(bytes.NewReader(raw))
		h, err := textproto.ReadHeader(br)
		if err != nil {
			continue // go-message cannot read it: the robustness tests cover it
		}
		info, err := Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		c := &comparison{}
		c.envelope("envelope", h, &info.Envelope)
		c.part("BODY", h, br, &info.Body, "")
		for _, m := range c.mismatches {
			t.Errorf("%s: %s", name, m)
		}
		compared++
		parts += c.parts
	}
	t.Logf("compared %d messages, %d parts, with go-message", compared, parts)
}

type comparison struct {
	mismatches []string
	parts      int
}

func (c *comparison) errorf(format string, args ...any) {
	c.mismatches = append(c.mismatches, fmt.Sprintf(format, args...))
}

func (c *comparison) part(path string, th textproto.Header, body io.Reader, p *Part, parentType string) {
	h := message.Header{Header: th}
	mt, params, err := h.ContentType()
	if err != nil {
		return // go-message finds it malformed
	}
	if !h.Has("Content-Type") && parentType == "multipart/digest" {
		mt, params = "message/rfc822", nil
	}
	c.parts++
	if strings.HasPrefix(mt, "multipart/") && !p.IsMultipart() {
		if _, err := textproto.NewMultipartReader(body, params["boundary"]).NextPart(); err != nil {
			// go-message finds no part either: it would describe a multipart
			// without parts, which mimestruct never does (text/plain instead).
			return
		}
		c.errorf("%s: %s/%s, go-message %s with parts", path, p.Type, p.Subtype, mt)
		return
	}
	if h.Has("Content-Type") {
		if got := p.Type + "/" + p.Subtype; got != mt {
			c.errorf("%s: type %s, go-message %s", path, got, mt)
			return
		}
		if !maps.Equal(p.Params, params) && !(len(p.Params) == 0 && len(params) == 0) {
			c.errorf("%s: params %q, go-message %q", path, p.Params, params)
		}
	}
	if e := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); e != "" && e != p.Encoding {
		c.errorf("%s: encoding %q, go-message %q", path, p.Encoding, e)
	}
	for _, f := range []struct{ name, got string }{
		{"Content-Id", p.ID}, {"Content-Description", p.Description}, {"Content-Md5", p.MD5},
	} {
		if want := strings.Join(strings.Fields(h.Get(f.name)), " "); strings.Join(strings.Fields(f.got), " ") != want {
			c.errorf("%s: %s %q, go-message %q", path, f.name, f.got, want)
		}
	}
	if d, dp, err := h.ContentDisposition(); err == nil && (d != p.Disposition || !maps.Equal(dp, p.DispositionParams) && len(dp)+len(p.DispositionParams) > 0) {
		c.errorf("%s: disposition %q %q, go-message %q %q", path, p.Disposition, p.DispositionParams, d, dp)
	}

	if strings.HasPrefix(mt, "multipart/") {
		if !p.IsMultipart() {
			c.errorf("%s: %s/%s, go-message multipart", path, p.Type, p.Subtype)
			return
		}
		mr := textproto.NewMultipartReader(body, params["boundary"])
		for i := 0; ; i++ {
			part, err := mr.NextPart()
			if err == io.EOF {
				if i != len(p.Children) {
					c.errorf("%s: %d parts, go-message %d", path, len(p.Children), i)
				}
				return
			}
			if err != nil {
				return // go-message gives up here
			}
			if i >= len(p.Children) {
				c.errorf("%s: %d parts, go-message more", path, len(p.Children))
				return
			}
			c.part(fmt.Sprintf("%s.%d", path, i+1), part.Header, part, &p.Children[i], mt)
		}
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return
	}
	if int64(len(b)) != p.Size {
		c.errorf("%s: size %d, go-message %d", path, p.Size, len(b))
	}
	if lines := int64(bytes.Count(b, []byte("\n"))); lines != p.Lines {
		c.errorf("%s: %d lines, go-message %d", path, p.Lines, lines)
	}
	if mt == "message/rfc822" || mt == "message/global" {
		if !p.IsMessage() {
			c.errorf("%s: not a message", path)
			return
		}
		br := bufio.NewReader(bytes.NewReader(b))
		eh, err := textproto.ReadHeader(br)
		if err != nil {
			return
		}
		c.envelope(path+" envelope", eh, p.Message)
		c.part(path+".1", eh, br, &p.Children[0], mt)
	}
}

// envelope compares with go-imap's ExtractEnvelope, which skips groups and
// addresses without a domain.
func (c *comparison) envelope(path string, th textproto.Header, e *Envelope) {
	h := mail.Header{Header: message.Header{Header: th}}
	if d, err := h.Date(); err == nil && !d.Equal(e.Date) {
		c.errorf("%s: date %v, go-message %v", path, e.Date, d)
	}
	// Where go-message leaves an encoded word undecoded (padding missing,
	// a charset split), mimestruct decodes it: not compared.
	if s, err := h.Subject(); err == nil && !strings.Contains(s, "=?") && strings.Join(strings.Fields(clean(s)), " ") != strings.Join(strings.Fields(e.Subject), " ") {
		c.errorf("%s: subject %q, go-message %q", path, e.Subject, s)
	}
	if id, err := h.MessageID(); err == nil && id != e.MessageID {
		c.errorf("%s: message-id %q, go-message %q", path, e.MessageID, id)
	}
	if ids, err := h.MsgIDList("In-Reply-To"); err == nil && !slices.Equal(ids, e.InReplyTo) {
		c.errorf("%s: in-reply-to %q, go-message %q", path, e.InReplyTo, ids)
	}
	for _, f := range []struct {
		name string
		got  []Address
	}{{"From", e.From}, {"To", e.To}, {"Cc", e.Cc}, {"Bcc", e.Bcc}, {"Reply-To", e.ReplyTo}, {"Sender", e.Sender}} {
		if !h.Has(f.name) {
			continue
		}
		l, err := h.AddressList(f.name)
		if err != nil {
			continue
		}
		var want, got []Address
		for _, a := range l {
			if strings.Contains(a.Name, "=?") {
				a.Name = decodeWords(a.Name)
			}
			if mb, host, ok := strings.Cut(a.Address, "@"); ok {
				want = append(want, Address{Name: a.Name, Mailbox: mb, Host: host})
			}
		}
		for _, a := range f.got {
			if a.Host != "" && a.Host != MissingDomain {
				got = append(got, a)
			}
		}
		if !slices.Equal(got, want) {
			c.errorf("%s: %s %q, go-message %q", path, f.name, got, want)
		}
	}
}

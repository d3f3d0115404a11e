package imap

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/lifelinemail/lifeline/mimestruct"
)

func fetchOne(t *testing.T, c *imapclient.Client, set goimap.NumSet, o *goimap.FetchOptions) *imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, o).Collect()
	if err != nil {
		t.Fatalf("fetch %v: %v", set, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetch %v: %d messages", set, len(msgs))
	}
	return msgs[0]
}

func TestSelectAndFetch(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "alice", nil)
	d := selectBox(t, c, "INBOX")
	info, err := f.j.Mailbox(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.NumMessages != 3 || d.UIDValidity != info.UIDValidity || d.UIDNext != 4 {
		t.Errorf("SELECT: %+v", d)
	}
	if !slices.Contains(d.PermanentFlags, goimap.FlagWildcard) || !slices.Contains(d.PermanentFlags, goimap.FlagSeen) {
		t.Errorf("PERMANENTFLAGS %v", d.PermanentFlags)
	}

	// BODY.PEEK[] of every message is the journal's bytes, and does not set \Seen.
	peek := &goimap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(goimap.SeqSetNum(1, 2, 3), &goimap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true,
		BodyStructure: &goimap.FetchItemBodyStructure{Extended: true}, BodySection: []*goimap.FetchItemBodySection{peek},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		want := f.msgs["alice"][i]
		if got := m.FindBodySection(peek); !bytes.Equal(got, want) {
			t.Errorf("message %d: BODY.PEEK[] differs: %q", i+1, got)
		}
		if m.RFC822Size != int64(len(want)) || m.UID != goimap.UID(i+1) || len(m.Flags) != 0 {
			t.Errorf("message %d: size %d uid %d flags %v", i+1, m.RFC822Size, m.UID, m.Flags)
		}
		if m.Envelope == nil || m.BodyStructure == nil || m.InternalDate.IsZero() {
			t.Errorf("message %d: envelope %v bodystructure %v date %v", i+1, m.Envelope, m.BodyStructure, m.InternalDate)
		}
	}
	if e := msgs[0].Envelope; e.Subject != "one" || e.MessageID != "1@t" || len(e.From) != 1 ||
		e.From[0].Name != "Anne Example" || e.From[0].Addr() != "a@example.org" || e.Date.IsZero() {
		t.Errorf("ENVELOPE 1: %+v", e)
	}
	if got := msgs[0].InternalDate; !got.Equal(time.Date(2006, 1, 2, 22, 0, 0, 0, time.Local)) {
		t.Errorf("INTERNALDATE 1: %v", got)
	}
	if e := msgs[2].Envelope; e.Subject != "Grüße multipart" || e.From[0].Name != "Jürgen" {
		t.Errorf("ENVELOPE 3 (encoded words): %+v", e)
	}
	mp, ok := msgs[2].BodyStructure.(*goimap.BodyStructureMultiPart)
	if !ok || mp.Subtype != "mixed" || len(mp.Children) != 3 {
		t.Fatalf("BODYSTRUCTURE 3: %#v", msgs[2].BodyStructure)
	}
	if p := mp.Children[0].(*goimap.BodyStructureSinglePart); p.MediaType() != "text/plain" || p.Encoding != "quoted-printable" ||
		p.Params["charset"] != "iso-8859-1" || p.Text == nil || p.Text.NumLines != 0 {
		t.Errorf("part 1: %#v", p)
	}
	if p := mp.Children[1].(*goimap.BodyStructureSinglePart); p.MediaType() != "application/octet-stream" ||
		p.Disposition() == nil || p.Disposition().Value != "attachment" || p.Disposition().Params["filename"] != "data.bin" {
		t.Errorf("part 2: %#v", p)
	}
	if p := mp.Children[2].(*goimap.BodyStructureSinglePart); p.MessageRFC822 == nil ||
		p.MessageRFC822.Envelope.Subject != "inner subject" {
		t.Errorf("part 3: %#v", p)
	}
	// Nothing above set \Seen.
	if m := fetchOne(t, c, goimap.SeqSetNum(1), &goimap.FetchOptions{Flags: true}); len(m.Flags) != 0 {
		t.Errorf("flags after PEEK: %v", m.Flags)
	}

	raw := string(f.msgs["alice"][2])
	hdrEnd := strings.Index(raw, "\r\n\r\n") + 4
	inner := raw[strings.Index(raw, "From: inner"):strings.Index(raw, "\r\n--b1--")]
	sections := []struct {
		sec  *goimap.FetchItemBodySection
		want string
	}{
		{&goimap.FetchItemBodySection{Specifier: goimap.PartSpecifierHeader}, raw[:hdrEnd]},
		{&goimap.FetchItemBodySection{Specifier: goimap.PartSpecifierText}, raw[hdrEnd:]},
		{&goimap.FetchItemBodySection{Specifier: goimap.PartSpecifierHeader, HeaderFields: []string{"subject", "MESSAGE-ID"}},
			"Subject: =?iso-8859-1?q?Gr=FC=DFe?= multipart\r\nMessage-ID: <3@t>\r\n\r\n"},
		{&goimap.FetchItemBodySection{Specifier: goimap.PartSpecifierHeader, HeaderFieldsNot: []string{"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}},
			"X-Custom: needle-in-header\r\n\r\n"},
		{&goimap.FetchItemBodySection{Part: []int{1}}, "Sch=F6ne Gr=FC=DFe aus M=FCnchen"},
		{&goimap.FetchItemBodySection{Part: []int{1}, Specifier: goimap.PartSpecifierMIME},
			"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"},
		{&goimap.FetchItemBodySection{Part: []int{2}}, "aGVsbG8gYmluYXJ5IHdvcmxk"},
		{&goimap.FetchItemBodySection{Part: []int{3}}, inner},
		{&goimap.FetchItemBodySection{Part: []int{3}, Specifier: goimap.PartSpecifierHeader},
			"From: inner@example.net\r\nSubject: inner subject\r\nMessage-ID: <inner@t>\r\n\r\n"},
		{&goimap.FetchItemBodySection{Part: []int{3}, Specifier: goimap.PartSpecifierText}, "inner body text"},
		{&goimap.FetchItemBodySection{Part: []int{3}, Specifier: goimap.PartSpecifierHeader, HeaderFields: []string{"Subject"}},
			"Subject: inner subject\r\n\r\n"},
		{&goimap.FetchItemBodySection{Part: []int{3, 1}}, "inner body text"},
		{&goimap.FetchItemBodySection{Part: []int{9}}, ""},
		{&goimap.FetchItemBodySection{Part: []int{1}, Specifier: goimap.PartSpecifierText}, ""},
		{&goimap.FetchItemBodySection{Partial: &goimap.SectionPartial{Offset: 6, Size: 10}}, raw[6:16]},
		{&goimap.FetchItemBodySection{Partial: &goimap.SectionPartial{Offset: int64(len(raw)) - 4, Size: 10}}, raw[len(raw)-4:]},
		{&goimap.FetchItemBodySection{Partial: &goimap.SectionPartial{Offset: 1 << 30, Size: 10}}, ""},
		{&goimap.FetchItemBodySection{Part: []int{3}, Specifier: goimap.PartSpecifierHeader, HeaderFields: []string{"Subject"},
			Partial: &goimap.SectionPartial{Offset: 9, Size: 5}}, "inner"},
	}
	for _, s := range sections {
		s.sec.Peek = true
		m := fetchOne(t, c, goimap.SeqSetNum(3), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{s.sec}})
		if got := string(m.FindBodySection(s.sec)); got != s.want {
			t.Errorf("BODY[%v.%s %v %v]<%v> = %q, want %q", s.sec.Part, s.sec.Specifier, s.sec.HeaderFields, s.sec.HeaderFieldsNot, s.sec.Partial, got, s.want)
		}
	}

	// BINARY removes the transfer encoding (RFC 3516).
	bin := &goimap.FetchItemBinarySection{Part: []int{2}, Peek: true}
	binQP := &goimap.FetchItemBinarySection{Part: []int{1}, Peek: true, Partial: &goimap.SectionPartial{Offset: 3, Size: 3}}
	// A part with nothing to decode: the offset still counts.
	bin7 := &goimap.FetchItemBinarySection{Part: []int{3}, Peek: true, Partial: &goimap.SectionPartial{Offset: 6, Size: 10}}
	m := fetchOne(t, c, goimap.SeqSetNum(3), &goimap.FetchOptions{
		BinarySection:     []*goimap.FetchItemBinarySection{bin, binQP, bin7},
		BinarySectionSize: []*goimap.FetchItemBinarySectionSize{{Part: []int{2}}},
	})
	if got := string(m.FindBinarySection(bin)); got != "hello binary world" {
		t.Errorf("BINARY[2] = %q", got)
	}
	if got := m.FindBinarySection(binQP); string(got) != "\xf6ne" {
		t.Errorf("BINARY[1]<3.3> = %q", got)
	}
	if got := string(m.FindBinarySection(bin7)); got != inner[6:16] {
		t.Errorf("BINARY[3]<6.10> = %q, want %q", got, inner[6:16])
	}
	if n, ok := m.FindBinarySectionSize([]int{2}); !ok || n != 18 {
		t.Errorf("BINARY.SIZE[2] = %d %v", n, ok)
	}

	// BODY[] (not PEEK) sets \Seen and reports it.
	body := &goimap.FetchItemBodySection{}
	m = fetchOne(t, c, goimap.UIDSetNum(2), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{body}})
	if !slices.Contains(m.Flags, goimap.FlagSeen) || m.UID != 2 || !bytes.Equal(m.FindBodySection(body), f.msgs["alice"][1]) {
		t.Errorf("UID FETCH 2 BODY[]: flags %v uid %d", m.Flags, m.UID)
	}
	// The other recipient of the shared message has not seen it.
	if fl, _ := f.store.Flags(context.Background(), "bob", 1); len(fl) != 0 {
		t.Errorf("bob's flags: %v", fl)
	}

	// EXAMINE: read-only, BODY[] sets nothing.
	d, err = c.Select("INBOX", &goimap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(d.PermanentFlags) != 0 {
		t.Errorf("EXAMINE PERMANENTFLAGS %v", d.PermanentFlags)
	}
	m = fetchOne(t, c, goimap.SeqSetNum(1), &goimap.FetchOptions{Flags: true, BodySection: []*goimap.FetchItemBodySection{body}})
	if len(m.Flags) != 0 {
		t.Errorf("EXAMINE + BODY[] set flags: %v", m.Flags)
	}
	if err := c.Store(goimap.SeqSetNum(1), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Flags: []goimap.Flag{goimap.FlagFlagged}}, nil).Close(); statusCode(err) != goimap.ResponseCodeCannot {
		t.Errorf("STORE in EXAMINE: %v", err)
	}

	// Message sets: * and ranges; out-of-range sequence numbers are BAD,
	// unknown UIDs are ignored.
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	if u := r.ok("FETCH * (UID)"); !slices.Equal(u, []string{"* 3 FETCH (UID 3)"}) {
		t.Errorf("FETCH * = %q", u)
	}
	if u := r.ok("FETCH 3:1 (UID)"); len(u) != 3 {
		t.Errorf("FETCH 3:1 = %q", u)
	}
	if _, done := r.cmd("FETCH 4 (UID)"); !strings.HasPrefix(done, "BAD") {
		t.Errorf("FETCH 4 of 3: %q", done)
	}
	if u := r.ok("UID FETCH 2:99 (UID)"); len(u) != 2 {
		t.Errorf("UID FETCH 2:99 = %q", u)
	}
	if u := r.ok("UID FETCH 99:* (UID)"); !slices.Equal(u, []string{"* 3 FETCH (UID 3)"}) {
		t.Errorf("UID FETCH 99:* = %q", u)
	}
	if u := r.ok("UID FETCH 4000000000 (UID)"); len(u) != 0 {
		t.Errorf("UID FETCH 4000000000 = %q", u)
	}
	if u := r.ok("FETCH 1 (RFC822.SIZE RFC822.HEADER)"); len(u) != 1 || !strings.Contains(u[0], "RFC822.HEADER {") {
		t.Errorf("RFC822.HEADER = %q", u)
	}
	if u := r.ok("FETCH 1 (BODY)"); len(u) != 1 || !strings.Contains(u[0], `BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"`) {
		t.Errorf("FETCH BODY = %q", u)
	}
}

// TestHeaderEndMatchesMimestruct checks that the header scanner used for
// BODY[HEADER] and BODY[TEXT] ends the header where mimestruct, and so
// BODYSTRUCTURE and the part offsets, say the body starts.
func TestHeaderEndMatchesMimestruct(t *testing.T) {
	cases := []string{
		"", "\r\n", "\n", "Subject: x", "Subject: x\r\n", "Subject: x\r\n\r\nbody",
		"From someone Mon Jan 1\nSubject: x\n\nbody", "From someone\r\n folded?\r\n\r\nb",
		" leading space\r\n\r\nbody", "Subject: x\r\nnot a header line\r\nmore\r\n\r\nbody",
		"Subject: x\r\n continued\r\n\tmore\r\n\r\nbody", "Subject : spaced\r\n\r\nb",
		"X: " + strings.Repeat("y", 70000) + "\r\n\r\nbody", strings.Repeat("z", 70000) + ": v\r\n\r\nb",
		"Subject: x\r\n\r", "Subject: x\r\n\r\r\n\r\n", "A: b\n\r\n", ":bad\r\n\r\n", "\xff\xfe: bin\r\n\r\n",
	}
	for _, c := range cases {
		checkHeaderEnd(t, []byte(c))
	}
}

func checkHeaderEnd(t *testing.T, msg []byte) {
	t.Helper()
	info, err := mimestruct.Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	end, kept, err := readHeader(bufioReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if end != info.Body.BodyStart {
		t.Errorf("%q: header ends at %d, mimestruct says %d", trunc(msg), end, info.Body.BodyStart)
	}
	if int64(len(kept)) != min(end, maxHeaderKept) || !bytes.Equal(kept, msg[:len(kept)]) {
		t.Errorf("%q: kept %d bytes", trunc(msg), len(kept))
	}
}

func trunc(b []byte) []byte { return b[:min(len(b), 80)] }

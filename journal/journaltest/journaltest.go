// Package journaltest is the contract every journal.Journal backend must meet.
// A backend's tests call Run with a function that opens the backend in a
// directory:
//
//	func TestContract(t *testing.T) {
//		journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
//			j, err := mybackend.Open(dir, mybackend.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return j
//		})
//	}
//
// open may be called again on the same directory after the suite closed the
// journal, to check that everything survives a restart. The suite closes every
// journal it opens.
//
// Beyond the comments on journal.Journal, the suite pins down:
//   - Append rejects a recipient whose State is not Valid with ErrInvalidState,
//     and fills a zero Envelope.Received and Recipient.Updated with the time.
//   - List of a mailbox that never held a message returns ErrNotFound, like
//     Mailbox.
//   - A mailbox's record (UIDVALIDITY, UIDNEXT) outlives its messages.
//   - SetState of a recipient index out of range returns ErrNotFound.
//   - Every method returns ErrClosed after Close.
//   - Structure returns what mimestruct.Parse makes of the bytes Open returns,
//     for every message appended (a backend cannot have messages older than
//     structures in a fresh journal), and ErrNotFound once it is swept.
package journaltest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// Opener opens a backend in dir; see the package comment.
type Opener = func(t *testing.T, dir string) journal.Journal

// Run runs the contract suite against a backend.
func Run(t *testing.T, open Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *harness)
	}{
		{"RoundTrip", testRoundTrip},
		{"Structure", testStructure},
		{"LargeMessage", testLargeMessage},
		{"Summary", testSummary},
		{"Reopen", testReopen},
		{"Duplicates", testDuplicates},
		{"ConcurrentDuplicates", testConcurrentDuplicates},
		{"ManyRecipients", testManyRecipients},
		{"ForeignRecipients", testForeignRecipients},
		{"InvalidEnvelope", testInvalidEnvelope},
		{"UIDs", testUIDs},
		{"Mailboxes", testMailboxes},
		{"CreateMailbox", testCreateMailbox},
		{"Scan", testScan},
		{"SetState", testSetState},
		{"Sweep", testSweep},
		{"Stats", testStats},
		{"ConcurrentAppends", testConcurrentAppends},
		{"SweepWhileAppending", testSweepWhileAppending},
		{"Cancel", testCancel},
		{"ReaderError", testReaderError},
		{"Closed", testClosed},
		{"CustodyQueue", testCustodyQueue},
		{"MessageIDIndex", testMessageIDIndex},
		{"Update", testUpdate},
		{"ControlStore", testControlStore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, ctx: t.Context(), open: open, dir: t.TempDir(),
				base: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)}
			h.j = open(t, h.dir)
			t.Cleanup(func() {
				if h.j != nil {
					if err := h.j.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			tc.fn(t, h)
		})
	}
}

// harness holds the journal under test.
type harness struct {
	t    *testing.T
	ctx  context.Context
	open Opener
	dir  string
	j    journal.Journal
	// base is the Received time of the suite's messages, unless a test says
	// otherwise: far enough in the past that "now" never interferes.
	base time.Time
}

// reopen closes the journal and opens it again on the same directory.
func (h *harness) reopen() {
	h.t.Helper()
	if err := h.j.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.j = nil
	h.j = h.open(h.t, h.dir)
}

// env builds an envelope; each recipient address is also its mailbox.
func env(from string, received time.Time, rcpts ...string) journal.Envelope {
	e := journal.Envelope{MailFrom: from, QueueID: "4Q" + from, Received: received, Source: "milter"}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, journal.Recipient{Address: r, Mailboxes: []string{r}, State: journal.StateMTA})
	}
	return e
}

// msg builds a small message whose identity depends on tag.
func msg(tag string) string {
	return "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: message " + tag +
		"\r\nMessage-ID: <" + tag + "@example.org>\r\n\r\nThis is message " + tag + ".\r\n"
}

func (h *harness) append(e journal.Envelope, raw string) journal.AppendResult {
	h.t.Helper()
	res, err := h.j.Append(h.ctx, e, strings.NewReader(raw))
	if err != nil {
		h.t.Fatalf("Append: %v", err)
	}
	if res.ID.IsZero() {
		h.t.Fatal("Append returned a zero ID")
	}
	return res
}

func (h *harness) get(id journal.ID) journal.Entry {
	h.t.Helper()
	e, err := h.j.Get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Get %s: %v", id, err)
	}
	return e
}

func (h *harness) read(id journal.ID) []byte {
	h.t.Helper()
	rc, err := h.j.Open(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Open %s: %v", id, err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		h.t.Fatalf("reading %s: %v", id, err)
	}
	if err := rc.Close(); err != nil {
		h.t.Fatalf("closing reader of %s: %v", id, err)
	}
	return b
}

func (h *harness) stats() journal.Stats {
	h.t.Helper()
	s, err := h.j.Stats(h.ctx)
	if err != nil {
		h.t.Fatalf("Stats: %v", err)
	}
	return s
}

func (h *harness) list(mailbox string, from uint32) []journal.MailboxItem {
	h.t.Helper()
	var items []journal.MailboxItem
	err := h.j.List(h.ctx, mailbox, from, func(it journal.MailboxItem) error {
		items = append(items, it)
		return nil
	})
	if err != nil {
		h.t.Fatalf("List %s: %v", mailbox, err)
	}
	return items
}

func (h *harness) mailbox(name string) journal.MailboxInfo {
	h.t.Helper()
	info, err := h.j.Mailbox(h.ctx, name)
	if err != nil {
		h.t.Fatalf("Mailbox %s: %v", name, err)
	}
	return info
}

func (h *harness) scan(since, until time.Time) []journal.Entry {
	h.t.Helper()
	var es []journal.Entry
	err := h.j.Scan(h.ctx, since, until, func(e journal.Entry) error {
		es = append(es, e)
		return nil
	})
	if err != nil {
		h.t.Fatalf("Scan: %v", err)
	}
	return es
}

func (h *harness) setState(id journal.ID, rcpt int, to journal.State, reply string) {
	h.t.Helper()
	if err := h.j.SetState(h.ctx, id, rcpt, to, reply); err != nil {
		h.t.Fatalf("SetState %s %d -> %s: %v", id, rcpt, to, err)
	}
}

func (h *harness) sweep(horizon time.Time) journal.SweepResult {
	h.t.Helper()
	res, err := h.j.Sweep(h.ctx, horizon)
	if err != nil {
		h.t.Fatalf("Sweep: %v", err)
	}
	return res
}

// verify fails the test for every problem Verify reports.
func (h *harness) verify() {
	h.t.Helper()
	problems, err := h.j.Verify(h.ctx)
	if err != nil {
		h.t.Fatalf("Verify: %v", err)
	}
	for _, p := range problems {
		h.t.Errorf("Verify: %s: %s", p.ID, p.Detail)
	}
}

func ids(items []journal.MailboxItem) []journal.ID {
	var out []journal.ID
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func entryIDs(es []journal.Entry) []journal.ID {
	var out []journal.ID
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

// checkEnvelope compares a stored envelope with what was appended.
func checkEnvelope(t *testing.T, got, want journal.Envelope) {
	t.Helper()
	if got.MailFrom != want.MailFrom || got.QueueID != want.QueueID || got.AuthUser != want.AuthUser ||
		got.Source != want.Source || !got.Received.Equal(want.Received) {
		t.Errorf("envelope %+v, want %+v", got, want)
	}
	if len(got.Recipients) != len(want.Recipients) {
		t.Fatalf("%d recipients, want %d", len(got.Recipients), len(want.Recipients))
	}
	for i, g := range got.Recipients {
		w := want.Recipients[i]
		if g.Address != w.Address || !slices.Equal(g.Mailboxes, w.Mailboxes) || g.Server != w.Server ||
			g.Mailer != w.Mailer || g.Host != w.Host || g.State != w.State || g.Attempts != w.Attempts ||
			g.LastReply != w.LastReply || (!w.Updated.IsZero() && !g.Updated.Equal(w.Updated)) {
			t.Errorf("recipient %d: %+v, want %+v", i, g, w)
		}
		if g.Updated.IsZero() {
			t.Errorf("recipient %d: zero Updated", i)
		}
	}
}

func testRoundTrip(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	rng := rand.New(rand.NewPCG(1, 2))
	binary := make([]byte, 3000)
	for i := range binary {
		binary[i] = byte(rng.Uint32())
	}
	multi := make([]byte, 1<<20+3)
	for i := range multi {
		multi[i] = "abcdefgh\r\n"[rng.IntN(10)]
	}
	cases := []struct{ name, raw string }{
		{"crlf", "From: a@example.org\r\nSubject: crlf\r\n\r\nline 1\r\nline 2\r\n"},
		{"lf", "Subject: lf\n\nbody\n"},
		{"8bit", "Subject: 8bit \xe4\xf6\xfc\r\n\r\n\xff\xfe\x80 bytes\r\n"},
		{"nul", "Subject: nul\r\n\r\na\x00b\x00\r\n"},
		{"no final line end", "Subject: no newline\r\n\r\nlast line"},
		{"empty", ""},
		{"headers only", "Subject: only\r\n"},
		{"bare cr", "Subject: cr\r\r\n\rbody\r"},
		{"binary", string(binary)},
		{"256 KiB", strings.Repeat("x", 256<<10)},
		{"256 KiB + 1", strings.Repeat("y", 256<<10+1)},
		{"1 MiB + 3", string(multi)},
	}
	stored := map[journal.ID]string{}
	for i, tc := range cases {
		e := env("sender@example.org", base.Add(time.Duration(i)*time.Minute), fmt.Sprintf("rcpt%d@example.com", i))
		e.AuthUser = "auth" + tc.name
		e.Recipients[0].Server = "dovecot"
		e.Recipients[0].Mailer = "lmtp"
		e.Recipients[0].Host = "mail.example.com"
		e.Recipients[0].Updated = base.Add(time.Second)
		want := e
		want.Recipients = slices.Clone(e.Recipients)
		res := h.append(e, tc.raw)
		if res.Duplicate {
			t.Fatalf("%s: first append reported a duplicate", tc.name)
		}
		stored[res.ID] = tc.raw
		got := h.get(res.ID)
		if got.ID != res.ID || got.Size != int64(len(tc.raw)) || got.Seq == 0 || got.Stored.IsZero() {
			t.Errorf("%s: entry id %s size %d seq %d stored %v", tc.name, got.ID, got.Size, got.Seq, got.Stored)
		}
		checkEnvelope(t, got.Envelope, want)
		if b := h.read(res.ID); !bytes.Equal(b, []byte(tc.raw)) {
			t.Errorf("%s: read back %d bytes that differ from the %d appended", tc.name, len(b), len(tc.raw))
		}
	}
	// Everything is still readable after all the others were written.
	for id, raw := range stored {
		if b := h.read(id); !bytes.Equal(b, []byte(raw)) {
			t.Errorf("%s: read back differs", id)
		}
	}
	if _, err := h.j.Get(ctx, journal.ID{1}); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("Get of an unknown id: %v, want ErrNotFound", err)
	}
	if _, err := h.j.Open(ctx, journal.ID{1}); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("Open of an unknown id: %v, want ErrNotFound", err)
	}
	h.verify()
}

// structureMessage is a multipart message with an embedded message, so that
// the structure's offsets are checked at every level.
const structureMessage = "From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: structure\r\n" +
	"Message-ID: <structure@example.org>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
	"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n" +
	"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n--b--\r\n"

func testStructure(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	big := "Subject: big\n\n" + strings.Repeat("a line of a body that spans several chunks\n", 100000)
	cases := []struct{ name, raw string }{
		{"multipart", structureMessage},
		{"lf", "Subject: lf\n\nbody\n"},
		{"empty", ""},
		{"malformed", "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n\x00\xff"},
		{"large", big},
	}
	stored := map[string]journal.ID{}
	for i, tc := range cases {
		id := h.append(env("s@example.org", base.Add(time.Duration(i)*time.Minute), "a@example.com"), tc.raw).ID
		stored[tc.name] = id
		h.checkStructure(id)
	}

	st := h.structure(stored["multipart"])
	raw := string(h.read(stored["multipart"]))
	slice := func(start, end int64) string { return raw[start:end] }
	if st.Envelope.Subject != "structure" || st.Envelope.MessageID != "structure@example.org" {
		t.Errorf("envelope %+v", st.Envelope)
	}
	if got := slice(st.Body.HeaderStart, st.Body.BodyStart); !strings.HasPrefix(got, "From: Alice") || !strings.HasSuffix(got, "boundary=\"b\"\r\n\r\n") {
		t.Errorf("message header %q", got)
	}
	if len(st.Body.Children) != 2 {
		t.Fatalf("%d parts, want 2", len(st.Body.Children))
	}
	text, inner := st.Body.Children[0], st.Body.Children[1]
	if got := slice(text.HeaderStart, text.BodyStart); got != "Content-Type: text/plain\r\n\r\n" {
		t.Errorf("part 1 header %q", got)
	}
	if got := slice(text.BodyStart, text.End); got != "first part" {
		t.Errorf("part 1 body %q", got)
	}
	if len(inner.Children) != 1 || inner.Message == nil || inner.Message.Subject != "inner" {
		t.Fatalf("part 2: %+v", inner)
	}
	if got := slice(inner.Children[0].HeaderStart, inner.Children[0].BodyStart); got != "Subject: inner\r\n\r\n" {
		t.Errorf("part 2 embedded header %q", got)
	}
	if got := slice(inner.Children[0].BodyStart, inner.Children[0].End); got != "inner text" {
		t.Errorf("part 2 embedded body %q", got)
	}

	// A duplicate writes nothing and leaves the structure as it was.
	if res := h.append(env("s@example.org", base, "a@example.com"), structureMessage); !res.Duplicate {
		t.Error("second append of the same message is no duplicate")
	}
	h.checkStructure(stored["multipart"])
	h.reopen()
	for _, id := range stored {
		h.checkStructure(id)
	}
	if _, err := h.j.Structure(ctx, journal.ID{1}); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("Structure of an unknown id: %v, want ErrNotFound", err)
	}
	h.verify()
}

func (h *harness) structure(id journal.ID) *mimestruct.Info {
	h.t.Helper()
	st, err := h.j.Structure(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Structure %s: %v", id, err)
	}
	return st
}

// checkStructure checks that a message's structure is what mimestruct makes of
// the bytes Open returns.
func (h *harness) checkStructure(id journal.ID) {
	h.t.Helper()
	st := h.structure(id)
	raw := h.read(id)
	want, err := mimestruct.Parse(bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	if st.Body.HeaderStart != 0 || st.Body.End != int64(len(raw)) {
		h.t.Errorf("%s: structure spans [%d,%d), the message has %d bytes", id, st.Body.HeaderStart, st.Body.End, len(raw))
	}
	if !reflect.DeepEqual(st, want) {
		h.t.Errorf("%s: stored structure\n%+v\ndiffers from the message's\n%+v", id, st, want)
	}
}

func testLargeMessage(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	if testing.Short() {
		t.Skip("large message skipped in -short mode")
	}
	const size = 21 << 20
	want, _ := GeneratedSum(size, 7)
	e := env("big@example.org", base, "rcpt@example.com", "other@example.com")
	res, err := h.j.Append(ctx, e, Generated(size, 7))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got := h.get(res.ID); got.Size != size {
		t.Errorf("size %d, want %d", got.Size, size)
	}
	// Read it back after a restart: it is durable and streams back whole.
	h.reopen()
	rc, err := h.j.Open(ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.New()
	n, err := io.Copy(d, rc)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(d.Sum(nil), want[:]) {
		t.Errorf("read back %d bytes with another hash", n)
	}
	if s := h.stats(); s.Messages != 1 || s.BytesRaw != size {
		t.Errorf("stats %+v: want 1 message of %d bytes, stored once for two recipients", s, size)
	}
	h.verify()
}

func testSummary(t *testing.T, h *harness) {
	base := h.base
	raw := "Received: from x by y\r\nFrom: =?UTF-8?Q?J=C3=B6rg?= <jorg@example.org>\r\n" +
		"To: a@example.com,\r\n b@example.com\r\nCc: c@example.com\r\nSubject: folded\r\n\tsubject\r\n" +
		"Subject: second subject\r\nDate: Fri, 1 Mar 2024 12:00:00 +0100\r\nMessage-ID: <sum@example.org>\r\n\r\nbody\r\n"
	res := h.append(env("s@example.org", base, "a@example.com"), raw)
	want := journal.Summary{
		From:      "=?UTF-8?Q?J=C3=B6rg?= <jorg@example.org>",
		To:        "a@example.com, b@example.com",
		Cc:        "c@example.com",
		Subject:   "folded\tsubject",
		Date:      "Fri, 1 Mar 2024 12:00:00 +0100",
		MessageID: "<sum@example.org>",
	}
	if got := h.get(res.ID).Summary; got != want {
		t.Errorf("summary\n got %+q\nwant %+q", got, want)
	}
	res = h.append(env("s@example.org", base, "b@example.com"), "no header section\r\n")
	if got := h.get(res.ID).Summary; got != (journal.Summary{}) {
		t.Errorf("summary of a message without header section: %+q", got)
	}
}

func testReopen(t *testing.T, h *harness) {
	base := h.base
	big := strings.Repeat("0123456789abcdef\r\n", 40000) // several chunks
	r1 := h.append(env("a@example.org", base, "alice@example.com"), msg("r1"))
	r2 := h.append(env("a@example.org", base.Add(time.Hour), "alice@example.com", "bob@example.com"), msg("r2")+big)
	e3 := env("a@example.org", base.Add(2*time.Hour), "alice@example.com")
	e3.Recipients[0].State = journal.StateCustody
	r3 := h.append(e3, msg("r3"))
	h.setState(r3.ID, 0, journal.StateRetrying, "451 4.3.0 try later")
	alice := h.mailbox("alice@example.com")
	before := h.stats()

	h.reopen()

	if b := h.read(r2.ID); string(b) != msg("r2")+big {
		t.Error("large message differs after reopen")
	}
	if b := h.read(r1.ID); string(b) != msg("r1") {
		t.Error("message differs after reopen")
	}
	if rc := h.get(r3.ID).Envelope.Recipients[0]; rc.State != journal.StateRetrying || rc.LastReply != "451 4.3.0 try later" {
		t.Errorf("state after reopen: %+v", rc)
	}
	if got := h.mailbox("alice@example.com"); got != alice {
		t.Errorf("mailbox after reopen %+v, before %+v", got, alice)
	}
	if got := ids(h.list("alice@example.com", 1)); !slices.Equal(got, []journal.ID{r1.ID, r2.ID, r3.ID}) {
		t.Errorf("alice after reopen: %v", got)
	}
	after := h.stats()
	if after.Messages != before.Messages || after.BytesRaw != before.BytesRaw || after.Mailboxes != before.Mailboxes ||
		!after.Oldest.Equal(before.Oldest) {
		t.Errorf("stats after reopen %+v, before %+v", after, before)
	}
	// Appending after reopen continues the sequence and the UIDs.
	r4 := h.append(env("a@example.org", base.Add(3*time.Hour), "alice@example.com"), msg("r4"))
	if s3, s4 := h.get(r3.ID).Seq, h.get(r4.ID).Seq; s4 <= s3 {
		t.Errorf("seq after reopen %d, before %d", s4, s3)
	}
	items := h.list("alice@example.com", 4)
	if len(items) != 1 || items[0].UID != 4 || items[0].ID != r4.ID {
		t.Errorf("alice UID 4 after reopen: %+v", items)
	}
	h.verify()
}

func testDuplicates(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	const body = "From: s@example.org\r\nSubject: dup\r\nMessage-ID: <dup@example.org>\r\n\r\nbody\r\n"
	first := "Received: from client by mx (Postfix) with ESMTP id 4QAAA\r\n\tfor <a@example.com>; Fri, 1 Mar 2024 12:00:00 +0000\r\n" +
		"Return-Path: <s@example.org>\r\n" + body
	requeued := "Received: from local by mx (Postfix) with ESMTP id 4QBBB\r\n\tfor <a@example.com>; Fri, 1 Mar 2024 12:05:00 +0000\r\n" +
		"Return-Path: <S@example.org>\r\nDelivered-To: a@example.com\r\nX-Original-To: a@example.com\r\n" + body

	e1 := env("s@example.org", base, "a@example.com", "b@example.com")
	r1 := h.append(e1, first)
	if r1.Duplicate {
		t.Fatal("first append is a duplicate")
	}
	// Re-queued: new queue id, new time, new trace fields, recipients reordered.
	e2 := env("S@Example.org", base.Add(5*time.Minute), "b@example.com", "A@example.com")
	e2.QueueID = "4QBBB"
	r2 := h.append(e2, requeued)
	if !r2.Duplicate || r2.ID != r1.ID {
		t.Errorf("re-queued copy: %+v, want a duplicate of %s", r2, r1.ID)
	}
	// Exactly the same again.
	if r := h.append(e1, first); !r.Duplicate || r.ID != r1.ID {
		t.Errorf("identical copy: %+v", r)
	}
	if got := h.get(r1.ID); got.Envelope.QueueID != e1.QueueID || string(h.read(r1.ID)) != first {
		t.Error("the duplicate replaced the stored message")
	}
	if s := h.stats(); s.Messages != 1 {
		t.Errorf("%d messages stored, want 1", s.Messages)
	}
	if n := h.mailbox("a@example.com").Messages; n != 1 {
		t.Errorf("mailbox holds %d messages, want 1", n)
	}

	// Different content or envelope: a new message.
	for _, tc := range []struct {
		name string
		e    journal.Envelope
		raw  string
	}{
		{"body", e1, strings.Replace(first, "body", "Body", 1)},
		{"subject", e1, strings.Replace(first, "Subject: dup", "Subject: dup2", 1)},
		{"recipients", env("s@example.org", base, "a@example.com"), first},
		{"sender", env("t@example.org", base, "a@example.com", "b@example.com"), first},
	} {
		if r := h.append(tc.e, tc.raw); r.Duplicate || r.ID == r1.ID {
			t.Errorf("different %s: %+v", tc.name, r)
		}
	}
	if s := h.stats(); s.Messages != 5 {
		t.Errorf("%d messages stored, want 5", s.Messages)
	}

	// A large duplicate (its body is written before it is known to be one).
	const size = 4 << 20
	big := env("big@example.org", base, "a@example.com")
	rb, err := h.j.Append(ctx, big, Generated(size, 3))
	if err != nil || rb.Duplicate {
		t.Fatalf("large append: %+v %v", rb, err)
	}
	rb2, err := h.j.Append(ctx, big, Generated(size, 3))
	if err != nil || !rb2.Duplicate || rb2.ID != rb.ID {
		t.Fatalf("large duplicate: %+v %v", rb2, err)
	}
	if s := h.stats(); s.Messages != 6 {
		t.Errorf("%d messages stored, want 6", s.Messages)
	}
	h.verify()
}

func testConcurrentDuplicates(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	const n = 8
	e := env("s@example.org", base, "a@example.com")
	var wg sync.WaitGroup
	results := make([]journal.AppendResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ei := e
			ei.Recipients = slices.Clone(e.Recipients)
			ei.QueueID = fmt.Sprintf("Q%d", i)
			results[i], errs[i] = h.j.Append(ctx, ei, strings.NewReader(msg("same")))
		})
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		if results[i].ID != results[0].ID {
			t.Errorf("append %d: id %s, others %s", i, results[i].ID, results[0].ID)
		}
		if !results[i].Duplicate {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d appends stored the message, want exactly 1", fresh)
	}
	if s := h.stats(); s.Messages != 1 {
		t.Errorf("%d messages stored, want 1", s.Messages)
	}
	h.verify()
}

func testManyRecipients(t *testing.T, h *harness) {
	base := h.base
	var rcpts []string
	for i := range 50 {
		rcpts = append(rcpts, fmt.Sprintf("user%02d@example.com", i))
	}
	raw := msg("fifty") + strings.Repeat("a line of the body\r\n", 5000)
	e := env("s@example.org", base, rcpts...)
	res := h.append(e, raw)
	got := h.get(res.ID)
	checkEnvelope(t, got.Envelope, e)
	s := h.stats()
	if s.Messages != 1 || s.BytesRaw != int64(len(raw)) || s.Mailboxes != 50 {
		t.Errorf("stats %+v: want 1 message of %d bytes in 50 mailboxes", s, len(raw))
	}
	for _, r := range rcpts {
		items := h.list(r, 1)
		if len(items) != 1 || items[0].ID != res.ID || items[0].UID != 1 || items[0].Size != int64(len(raw)) {
			t.Errorf("mailbox %s: %+v", r, items)
		}
	}
	h.verify()
}

func testForeignRecipients(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	e := env("s@example.org", base, "local@example.com")
	e.Recipients = append(e.Recipients, journal.Recipient{Address: "someone@elsewhere.example", State: journal.StateMTA})
	res := h.append(e, msg("foreign"))
	checkEnvelope(t, h.get(res.ID).Envelope, e)
	var names []string
	if err := h.j.Mailboxes(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"local@example.com"}) {
		t.Errorf("mailboxes %q, want only local@example.com", names)
	}
	only := h.append(journal.Envelope{MailFrom: "s@example.org", Received: base,
		Recipients: []journal.Recipient{{Address: "x@elsewhere.example", State: journal.StateMTA}}}, msg("foreign only"))
	if string(h.read(only.ID)) != msg("foreign only") {
		t.Error("message to a foreign recipient only differs")
	}
	if s := h.stats(); s.Messages != 2 || s.Mailboxes != 1 {
		t.Errorf("stats %+v", s)
	}
	h.verify()
}

func testInvalidEnvelope(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	e := env("s@example.org", base, "a@example.com")
	e.Recipients[0].State = journal.StateUnknown
	if _, err := h.j.Append(ctx, e, strings.NewReader(msg("bad"))); !errors.Is(err, journal.ErrInvalidState) {
		t.Errorf("append with state unknown: %v, want ErrInvalidState", err)
	}
	// Zero times are filled in.
	e = env("s@example.org", time.Time{}, "a@example.com")
	res := h.append(e, msg("zero time"))
	got := h.get(res.ID)
	if got.Envelope.Received.IsZero() || got.Envelope.Recipients[0].Updated.IsZero() {
		t.Errorf("zero times not filled in: %+v", got.Envelope)
	}
	if s := h.stats(); s.Messages != 1 {
		t.Errorf("%d messages, want 1", s.Messages)
	}
	h.verify()
}

func testUIDs(t *testing.T, h *harness) {
	base := h.base
	const box = "alice@example.com"
	var appended []journal.ID
	for i := range 5 {
		r := h.append(env("s@example.org", base.Add(time.Duration(i)*time.Hour), box), msg(fmt.Sprint("uid", i)))
		appended = append(appended, r.ID)
	}
	items := h.list(box, 0)
	for i, it := range items {
		if it.UID != uint32(i+1) {
			t.Errorf("item %d has UID %d, want %d", i, it.UID, i+1)
		}
	}
	if !slices.Equal(ids(items), appended) {
		t.Errorf("UID order %v, arrival order %v", ids(items), appended)
	}
	info := h.mailbox(box)
	if info.UIDValidity == 0 || info.UIDNext != 6 || info.Messages != 5 || info.Name != box {
		t.Errorf("mailbox %+v", info)
	}
	if got := ids(h.list(box, 3)); !slices.Equal(got, appended[2:]) {
		t.Errorf("from UID 3: %v", got)
	}
	if got := h.list(box, 6); len(got) != 0 {
		t.Errorf("from UIDNEXT: %v", got)
	}

	h.reopen()
	if got := h.mailbox(box); got != info {
		t.Errorf("mailbox after reopen %+v, before %+v", got, info)
	}

	// Remove the first three; their UIDs are never handed out again.
	if res := h.sweep(base.Add(150 * time.Minute)); res.Removed != 3 {
		t.Errorf("sweep removed %d, want 3", res.Removed)
	}
	if got := ids(h.list(box, 0)); !slices.Equal(got, appended[3:]) {
		t.Errorf("after sweep: %v", got)
	}
	if got := h.mailbox(box); got.UIDValidity != info.UIDValidity || got.UIDNext != 6 || got.Messages != 2 {
		t.Errorf("mailbox after sweep %+v", got)
	}
	r := h.append(env("s@example.org", base.Add(10*time.Hour), box), msg("uid new"))
	items = h.list(box, 0)
	if last := items[len(items)-1]; last.ID != r.ID || last.UID != 6 {
		t.Errorf("new message got UID %d, want 6", last.UID)
	}
	h.reopen()
	if got := h.mailbox(box); got.UIDValidity != info.UIDValidity || got.UIDNext != 7 || got.Messages != 3 {
		t.Errorf("mailbox after second reopen %+v", got)
	}

	// Sweep everything: the mailbox stays with its UIDVALIDITY and UIDNEXT.
	h.sweep(base.Add(100 * time.Hour))
	if got := h.mailbox(box); got.UIDValidity != info.UIDValidity || got.UIDNext != 7 || got.Messages != 0 {
		t.Errorf("emptied mailbox %+v", got)
	}
	r = h.append(env("s@example.org", base.Add(200*time.Hour), box), msg("uid after empty"))
	if items := h.list(box, 0); len(items) != 1 || items[0].UID != 7 || items[0].ID != r.ID {
		t.Errorf("after emptying: %+v", items)
	}
	h.verify()
}

func testMailboxes(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	// One recipient mapping to two mailboxes, two recipients to the same one.
	e := env("s@example.org", base, "list@example.com", "carol@example.com")
	e.Recipients[0].Mailboxes = []string{"bob@example.com", "alice@example.com"}
	e.Recipients[1].Mailboxes = []string{"alice@example.com"}
	res := h.append(e, msg("boxes"))
	var names []string
	if err := h.j.Mailboxes(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"alice@example.com", "bob@example.com"}) {
		t.Errorf("mailboxes %q", names)
	}
	for _, b := range names {
		if items := h.list(b, 0); len(items) != 1 || items[0].ID != res.ID {
			t.Errorf("%s: %+v", b, items)
		}
	}
	if _, err := h.j.Mailbox(ctx, "nobody@example.com"); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("Mailbox of an unknown name: %v, want ErrNotFound", err)
	}
	err := h.j.List(ctx, "nobody@example.com", 0, func(journal.MailboxItem) error { return nil })
	if !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("List of an unknown mailbox: %v, want ErrNotFound", err)
	}
	stop := errors.New("stop")
	if err := h.j.Mailboxes(ctx, func(string) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Mailboxes with a failing callback: %v", err)
	}
	h.verify()
}

func testCreateMailbox(t *testing.T, h *harness) {
	ctx := h.ctx
	before := h.stats().Mailboxes
	info, err := h.j.CreateMailbox(ctx, "alice@example.com/Sent")
	if err != nil {
		t.Fatal(err)
	}
	if info.UIDValidity == 0 || info.UIDNext != 1 || info.Messages != 0 || info.Name != "alice@example.com/Sent" {
		t.Errorf("new mailbox: %+v", info)
	}
	if got := h.list("alice@example.com/Sent", 0); len(got) != 0 {
		t.Errorf("new mailbox lists %v", got)
	}
	if got := h.stats().Mailboxes; got != before+1 {
		t.Errorf("stats count %d mailboxes, want %d", got, before+1)
	}
	again, err := h.j.CreateMailbox(ctx, "alice@example.com/Sent")
	if err != nil || again != info {
		t.Errorf("second CreateMailbox: %+v, %v; want %+v", again, err, info)
	}
	// The first message keeps the UIDVALIDITY a client may have seen.
	h.reopen()
	e := env("alice@example.com", h.base, "x@example.org")
	e.Recipients[0].Mailboxes = []string{"alice@example.com/Sent"}
	res := h.append(e, msg("sent"))
	got := h.mailbox("alice@example.com/Sent")
	if got.UIDValidity != info.UIDValidity || got.UIDNext != 2 || got.Messages != 1 {
		t.Errorf("after the first message: %+v, created as %+v", got, info)
	}
	if items := h.list("alice@example.com/Sent", 0); len(items) != 1 || items[0].ID != res.ID || items[0].UID != 1 {
		t.Errorf("list %+v", items)
	}
	if _, err := h.j.CreateMailbox(ctx, ""); err == nil {
		t.Error("CreateMailbox of an empty name succeeded")
	}
	h.verify()
}

func testScan(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	var want []journal.ID
	for i := range 5 {
		r := h.append(env("s@example.org", base.Add(time.Duration(i)*time.Hour), "a@example.com"), msg(fmt.Sprint("scan", i)))
		want = append(want, r.ID)
	}
	// Same Received time as the last: arrival order decides.
	r := h.append(env("s@example.org", base.Add(4*time.Hour), "b@example.com"), msg("scan same time"))
	want = append(want, r.ID)

	if got := entryIDs(h.scan(time.Time{}, time.Time{})); !slices.Equal(got, want) {
		t.Errorf("full scan %v, want %v", got, want)
	}
	if got := entryIDs(h.scan(base.Add(time.Hour), base.Add(3*time.Hour))); !slices.Equal(got, want[1:3]) {
		t.Errorf("[1h, 3h): %v, want %v", got, want[1:3])
	}
	if got := entryIDs(h.scan(base.Add(90*time.Minute), time.Time{})); !slices.Equal(got, want[2:]) {
		t.Errorf("from 90m: %v", got)
	}
	if got := h.scan(base.Add(time.Hour), base.Add(time.Hour)); len(got) != 0 {
		t.Errorf("empty range: %v", entryIDs(got))
	}
	es := h.scan(time.Time{}, time.Time{})
	for i := 1; i < len(es); i++ {
		if es[i].Seq <= es[i-1].Seq {
			t.Errorf("seq %d after %d", es[i].Seq, es[i-1].Seq)
		}
	}
	if es[0].Summary.Subject != "message scan0" || es[0].Size != int64(len(msg("scan0"))) {
		t.Errorf("scanned entry %+v", es[0])
	}
	stop := errors.New("stop")
	n := 0
	err := h.j.Scan(ctx, time.Time{}, time.Time{}, func(journal.Entry) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("stopped scan: %v after %d", err, n)
	}
}

func testSetState(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	e := env("s@example.org", base, "a@example.com", "b@example.com", "c@example.com")
	e.Recipients[0].State = journal.StateCustody
	e.Recipients[2].State = journal.StateRetrying
	res := h.append(e, msg("state"))
	id := res.ID

	h.setState(id, 0, journal.StateDelivered, "250 2.0.0 ok")
	rc := h.get(id).Envelope.Recipients[0]
	if rc.State != journal.StateDelivered || rc.LastReply != "250 2.0.0 ok" || rc.Updated.IsZero() {
		t.Errorf("after delivery: %+v", rc)
	}
	for _, tc := range []struct {
		rcpt int
		to   journal.State
	}{
		{0, journal.StateCustody},   // delivered is final
		{0, journal.StateDelivered}, // even to itself
		{1, journal.StateDelivered}, // mta is final
		{2, journal.StateCustody},   // retrying cannot go back to custody
		{2, journal.StateUnknown},
		{2, journal.State(99)},
	} {
		err := h.j.SetState(ctx, id, tc.rcpt, tc.to, "x")
		if !errors.Is(err, journal.ErrInvalidState) {
			t.Errorf("recipient %d -> %s: %v, want ErrInvalidState", tc.rcpt, tc.to, err)
		}
	}
	h.setState(id, 2, journal.StateRetrying, "451 again")
	h.setState(id, 2, journal.StateFailed, "550 no such user")
	h.setState(id, 2, journal.StateCustody, "re-queued by operator")
	if err := h.j.SetState(ctx, journal.ID{9}, 0, journal.StateDelivered, ""); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("unknown message: %v, want ErrNotFound", err)
	}
	for _, n := range []int{-1, 3} {
		if err := h.j.SetState(ctx, id, n, journal.StateDelivered, ""); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("recipient %d: %v, want ErrNotFound", n, err)
		}
	}
	h.reopen()
	got := h.get(id).Envelope.Recipients
	if got[0].State != journal.StateDelivered || got[1].State != journal.StateMTA || got[2].State != journal.StateCustody ||
		got[2].LastReply != "re-queued by operator" {
		t.Errorf("states after reopen: %+v", got)
	}
	if got[1].Attempts != 0 || got[2].Attempts < got[0].Attempts {
		t.Errorf("attempts: %d %d %d", got[0].Attempts, got[1].Attempts, got[2].Attempts)
	}
	h.verify()
}

func testSweep(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	horizon := base.Add(10 * 24 * time.Hour)
	old := base
	young := horizon.Add(time.Hour)
	add := func(tag string, received time.Time, states ...journal.State) journal.ID {
		var rcpts []string
		for i := range states {
			rcpts = append(rcpts, fmt.Sprintf("r%d@example.com", i))
		}
		e := env("s@example.org", received, rcpts...)
		for i, s := range states {
			e.Recipients[i].State = s
		}
		raw := msg(tag)
		if tag == "big" {
			raw += strings.Repeat("0123456789\r\n", 100000)
		}
		return h.append(e, raw).ID
	}
	mta := add("mta", old, journal.StateMTA)
	custody := add("custody", old.Add(time.Minute), journal.StateCustody, journal.StateMTA)
	retrying := add("retrying", old.Add(2*time.Minute), journal.StateRetrying)
	failed := add("failed", old.Add(3*time.Minute), journal.StateFailed, journal.StateDelivered)
	youngID := add("young", young, journal.StateMTA)
	replayed := add("replayed", old.Add(4*time.Minute), journal.StateCustody)
	big := add("big", old.Add(5*time.Minute), journal.StateMTA)
	h.setState(replayed, 0, journal.StateDelivered, "250 ok")

	res := h.sweep(horizon)
	if res.Removed != 4 || res.Kept != 2 {
		t.Errorf("sweep %+v, want 4 removed (mta, failed, replayed, big) and 2 kept", res)
	}
	for _, id := range []journal.ID{mta, failed, replayed, big} {
		if _, err := h.j.Get(ctx, id); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("removed %s: Get says %v", id, err)
		}
		if _, err := h.j.Structure(ctx, id); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("removed %s: Structure says %v", id, err)
		}
		if _, err := h.j.Open(ctx, id); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("removed %s: Open says %v", id, err)
		}
	}
	want := []journal.ID{custody, retrying, youngID}
	if got := entryIDs(h.scan(time.Time{}, time.Time{})); !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if got := ids(h.list("r0@example.com", 0)); !slices.Equal(got, want) {
		t.Errorf("mailbox r0 holds %v, want %v", got, want)
	}
	if got := h.list("r1@example.com", 0); len(got) != 1 || got[0].ID != custody {
		t.Errorf("mailbox r1 holds %+v", got)
	}
	if n := h.mailbox("r0@example.com").Messages; n != 3 {
		t.Errorf("mailbox r0 counts %d", n)
	}
	s := h.stats()
	wantBytes := int64(len(msg("custody")) + len(msg("retrying")) + len(msg("young")))
	if s.Messages != 3 || s.BytesRaw != wantBytes || !s.Oldest.Equal(old.Add(time.Minute)) {
		t.Errorf("stats %+v, want 3 messages of %d bytes, oldest %v", s, wantBytes, old.Add(time.Minute))
	}
	h.verify()

	if res := h.sweep(horizon); res.Removed != 0 || res.Kept != 2 {
		t.Errorf("second sweep %+v", res)
	}
	h.setState(custody, 0, journal.StateDelivered, "250 ok")
	if res := h.sweep(horizon); res.Removed != 1 || res.Kept != 1 {
		t.Errorf("sweep after delivery %+v", res)
	}
	h.reopen()
	if s := h.stats(); s.Messages != 2 {
		t.Errorf("%d messages after reopen", s.Messages)
	}
	h.verify()
}

func testStats(t *testing.T, h *harness) {
	base := h.base
	if s := h.stats(); s.Messages != 0 || s.Mailboxes != 0 || s.BytesRaw != 0 || !s.Oldest.IsZero() {
		t.Errorf("empty journal: %+v", s)
	}
	var total int64
	for i, r := range []string{"a@example.com", "b@example.com", "a@example.com"} {
		raw := msg(fmt.Sprint("stats", i))
		total += int64(len(raw))
		h.append(env("s@example.org", base.Add(time.Duration(3-i)*time.Hour), r), raw)
	}
	s := h.stats()
	if s.Messages != 3 || s.Mailboxes != 2 || s.BytesRaw != total || s.BytesOnDisk <= 0 || !s.Oldest.Equal(base.Add(time.Hour)) {
		t.Errorf("stats %+v, want 3 messages, 2 mailboxes, %d bytes, oldest %v", s, total, base.Add(time.Hour))
	}
}

func testConcurrentAppends(t *testing.T, h *harness) {
	ctx := h.ctx
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				tag := fmt.Sprintf("w%d-%d", w, i)
				e := env("s@example.org", time.Time{}, "shared@example.com", fmt.Sprintf("own%d@example.com", w))
				raw := msg(tag)
				if i%10 == 0 {
					raw += strings.Repeat("some longer body text\r\n", 20000)
				}
				res, err := h.j.Append(ctx, e, strings.NewReader(raw))
				if err == nil && res.Duplicate {
					err = fmt.Errorf("%s reported as a duplicate", tag)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	items := h.list("shared@example.com", 0)
	if len(items) != writers*each {
		t.Fatalf("shared mailbox holds %d, want %d", len(items), writers*each)
	}
	seen := map[journal.ID]bool{}
	var lastSeq uint64
	for i, it := range items {
		if it.UID == 0 || (i > 0 && it.UID <= items[i-1].UID) {
			t.Errorf("UID %d after %d", it.UID, items[max(i-1, 0)].UID)
		}
		if seen[it.ID] {
			t.Errorf("%s listed twice", it.ID)
		}
		seen[it.ID] = true
		// UID order is arrival order.
		seq := h.get(it.ID).Seq
		if seq <= lastSeq {
			t.Errorf("UID %d has seq %d, after seq %d", it.UID, seq, lastSeq)
		}
		lastSeq = seq
	}
	for w := range writers {
		if n := len(h.list(fmt.Sprintf("own%d@example.com", w), 0)); n != each {
			t.Errorf("own%d holds %d", w, n)
		}
	}
	if got := h.scan(time.Time{}, time.Time{}); len(got) != writers*each {
		t.Errorf("scan finds %d", len(got))
	}
	h.verify()
}

func testSweepWhileAppending(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	horizon := base.Add(24 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for w := range 4 {
		wg.Go(func() {
			for i := range 30 {
				received := base // old: swept
				if i%2 == 1 {
					received = horizon.Add(time.Hour) // young: kept
				}
				raw := msg(fmt.Sprintf("sw%d-%d", w, i))
				if i%7 == 0 {
					raw += strings.Repeat("body of a larger message\r\n", 30000)
				}
				if _, err := h.j.Append(ctx, env("s@example.org", received, "shared@example.com"), strings.NewReader(raw)); err != nil {
					errs <- err
				}
			}
		})
	}
	done := make(chan struct{})
	stop := stopSweeping(&wg)
	var sweeps int
	go func() {
		defer close(done)
		for {
			if _, err := h.j.Sweep(ctx, horizon); err != nil {
				errs <- fmt.Errorf("sweep: %w", err)
				return
			}
			sweeps++
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	wg.Wait()
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h.sweep(horizon)
	if s := h.stats(); s.Messages != 4*15 {
		t.Errorf("%d messages left after %d sweeps, want %d young ones", s.Messages, sweeps, 4*15)
	}
	if n := h.mailbox("shared@example.com"); n.Messages != 4*15 || n.UIDNext < 4*30+1 {
		t.Errorf("shared mailbox %+v", n)
	}
	h.verify()
}

// stopSweeping returns a channel closed once wg is done; the sweeper polls it
// between sweeps.
func stopSweeping(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	return ch
}

func testCancel(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	e := env("s@example.org", base, "a@example.com")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.j.Append(cancelled, e, strings.NewReader(msg("cancel"))); !errors.Is(err, context.Canceled) {
		t.Errorf("append with a cancelled context: %v", err)
	}

	// Cancelled while the message streams in.
	const size = 6 << 20
	c2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	r := &cancelAfter{r: Generated(size, 5), after: 3 << 20, cancel: cancel2}
	if _, err := h.j.Append(c2, e, r); !errors.Is(err, context.Canceled) {
		t.Errorf("append cancelled midway: %v", err)
	}
	if s := h.stats(); s.Messages != 0 {
		t.Errorf("%d messages stored by cancelled appends", s.Messages)
	}
	// The same message afterwards is new, not a duplicate.
	res, err := h.j.Append(ctx, e, Generated(size, 5))
	if err != nil || res.Duplicate {
		t.Errorf("append after cancel: %+v %v", res, err)
	}
	h.verify()
}

// cancelAfter cancels a context once after bytes have been read, and goes on
// reading.
type cancelAfter struct {
	r      io.Reader
	after  int64
	n      int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n >= c.after && c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	return n, err
}

func testReaderError(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	boom := errors.New("connection reset")
	for _, size := range []int64{100, 4 << 20} {
		r := io.MultiReader(io.LimitReader(Generated(size+1000, 9), size), &failingReader{err: boom})
		_, err := h.j.Append(ctx, env("s@example.org", base, "a@example.com"), r)
		if !errors.Is(err, boom) {
			t.Errorf("append from a failing reader (%d bytes): %v", size, err)
		}
	}
	if s := h.stats(); s.Messages != 0 {
		t.Errorf("%d messages stored from failing readers", s.Messages)
	}
	h.verify()
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

func testClosed(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	res := h.append(env("s@example.org", base, "a@example.com"), msg("closed"))
	if err := h.j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	j := h.j
	h.j = nil // closed: the cleanup must not close it again
	check := func(what string, err error) {
		if !errors.Is(err, journal.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	_, err := j.Append(ctx, env("s@example.org", base, "a@example.com"), strings.NewReader(msg("late")))
	check("Append", err)
	_, err = j.Get(ctx, res.ID)
	check("Get", err)
	_, err = j.Open(ctx, res.ID)
	check("Open", err)
	check("Scan", j.Scan(ctx, time.Time{}, time.Time{}, func(journal.Entry) error { return nil }))
	_, err = j.Mailbox(ctx, "a@example.com")
	check("Mailbox", err)
	check("Mailboxes", j.Mailboxes(ctx, func(string) error { return nil }))
	check("List", j.List(ctx, "a@example.com", 0, func(journal.MailboxItem) error { return nil }))
	check("SetState", j.SetState(ctx, res.ID, 0, journal.StateDelivered, ""))
	_, err = j.Sweep(ctx, base)
	check("Sweep", err)
	_, err = j.Stats(ctx)
	check("Stats", err)
	_, err = j.Verify(ctx)
	check("Verify", err)
	_, err = j.Structure(ctx, res.ID)
	check("Structure", err)

	// Everything is there after opening again.
	h.j = h.open(t, h.dir)
	if string(h.read(res.ID)) != msg("closed") {
		t.Error("message differs after Close and open")
	}
}

func testCustodyQueue(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	q := h.j
	walk := func(from uint64) []journal.CustodyItem {
		t.Helper()
		var out []journal.CustodyItem
		if err := q.Custody(ctx, from, func(ci journal.CustodyItem) error { out = append(out, ci); return nil }); err != nil {
			t.Fatalf("Custody: %v", err)
		}
		return out
	}
	e1 := env("s@example.org", base, "a@example.com", "b@example.com", "c@example.com")
	e1.Recipients[0].State = journal.StateCustody
	e1.Recipients[0].Server = "one"
	e1.Recipients[2].State = journal.StateCustody
	e1.Recipients[2].Server = "two"
	m1 := h.append(e1, msg("q1")).ID
	h.append(env("s@example.org", base, "a@example.com"), msg("q2"))
	e3 := env("s@example.org", base, "a@example.com")
	e3.Recipients[0].State = journal.StateRetrying
	m3 := h.append(e3, msg("q3")).ID
	s1, s3 := h.get(m1).Seq, h.get(m3).Seq

	want := []journal.CustodyItem{
		{Seq: s1, ID: m1, Rcpt: 0, State: journal.StateCustody, Server: "one"},
		{Seq: s1, ID: m1, Rcpt: 2, State: journal.StateCustody, Server: "two"},
		{Seq: s3, ID: m3, Rcpt: 0, State: journal.StateRetrying},
	}
	if got := walk(0); !slices.Equal(got, want) {
		t.Errorf("custody queue %+v, want %+v", got, want)
	}
	if got := walk(s1 + 1); !slices.Equal(got, want[2:]) {
		t.Errorf("custody queue from %d: %+v", s1+1, got)
	}
	h.setState(m1, 0, journal.StateDelivered, "250")
	h.setState(m1, 2, journal.StateRetrying, "451")
	h.setState(m3, 0, journal.StateFailed, "550")
	want = []journal.CustodyItem{{Seq: s1, ID: m1, Rcpt: 2, State: journal.StateRetrying, Server: "two"}}
	if got := walk(0); !slices.Equal(got, want) {
		t.Errorf("custody queue %+v, want %+v", got, want)
	}
	h.setState(m3, 0, journal.StateCustody, "operator")
	h.reopen()
	q = h.j
	want = append(want, journal.CustodyItem{Seq: s3, ID: m3, Rcpt: 0, State: journal.StateCustody})
	if got := walk(0); !slices.Equal(got, want) {
		t.Errorf("custody queue after reopen %+v, want %+v", got, want)
	}
	h.verify()
}

func testMessageIDIndex(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	x, ok := h.j.(journal.MessageIDIndex)
	if !ok {
		t.Skip("backend has no Message-ID index")
	}
	find := func(msgid string) []journal.ID {
		t.Helper()
		var out []journal.ID
		if err := x.ByMessageID(ctx, msgid, func(id journal.ID) error { out = append(out, id); return nil }); err != nil {
			t.Fatalf("ByMessageID: %v", err)
		}
		return out
	}
	a := h.append(env("s@example.org", base, "a@example.com"), msg("mid")).ID
	b := h.append(env("s@example.org", base.Add(48*time.Hour), "b@example.com"), msg("mid")).ID
	h.append(env("s@example.org", base, "a@example.com"), msg("mid2"))
	for _, q := range []string{"<mid@example.org>", "mid@example.org", " <mid@example.org> "} {
		if got := find(q); !slices.Equal(got, []journal.ID{a, b}) {
			t.Errorf("%q: %v, want %v", q, got, []journal.ID{a, b})
		}
	}
	if got := find("<mid@example.or>"); len(got) != 0 {
		t.Errorf("prefix of a Message-ID matched %v", got)
	}
	h.sweep(base.Add(time.Hour))
	if got := find("mid@example.org"); !slices.Equal(got, []journal.ID{b}) {
		t.Errorf("after sweep: %v", got)
	}
	h.verify()
}

// testUpdate: one Update changes several recipients at once, records replay
// progress (attempts, next attempt, mailboxes done) and is all-or-nothing.
func testUpdate(t *testing.T, h *harness) {
	base, ctx := h.base, h.ctx
	e := env("s@example.org", base, "a@example.com", "b@example.com", "list@example.com")
	for i := range e.Recipients {
		e.Recipients[i].State = journal.StateCustody
		e.Recipients[i].Server = "mx"
	}
	e.Recipients[2].Mailboxes = []string{"c@example.com", "d@example.com"}
	id := h.append(e, msg("u1")).ID
	next := base.Add(time.Hour)
	err := h.j.Update(ctx, id,
		journal.Change{Rcpt: 0, To: journal.StateDelivered, Reply: "250 2.0.0 ok"},
		journal.Change{Rcpt: 1, To: journal.StateRetrying, Reply: "452 4.2.2 full", NextAttempt: next},
		journal.Change{Rcpt: 2, To: journal.StateRetrying, Reply: "451", NextAttempt: next, Done: []string{"c@example.com"}})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	got := h.get(id).Envelope.Recipients
	if got[0].State != journal.StateDelivered || got[0].Attempts != 1 || got[0].LastReply != "250 2.0.0 ok" {
		t.Errorf("recipient 0: %+v", got[0])
	}
	if got[1].State != journal.StateRetrying || !got[1].NextAttempt.Equal(next) || got[1].Attempts != 1 {
		t.Errorf("recipient 1: %+v", got[1])
	}
	if !slices.Equal(got[2].Done, []string{"c@example.com"}) {
		t.Errorf("recipient 2 done %q", got[2].Done)
	}
	var items []journal.CustodyItem
	if err := h.j.Custody(ctx, 0, func(ci journal.CustodyItem) error { items = append(items, ci); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Rcpt != 1 || !items[0].NextAttempt.Equal(next) || items[0].Server != "mx" ||
		items[0].State != journal.StateRetrying {
		t.Errorf("custody queue after update: %+v", items)
	}
	// A forbidden transition in the batch leaves every recipient as it was.
	err = h.j.Update(ctx, id,
		journal.Change{Rcpt: 1, To: journal.StateDelivered, Reply: "250"},
		journal.Change{Rcpt: 0, To: journal.StateRetrying, Reply: "451"})
	if !errors.Is(err, journal.ErrInvalidState) {
		t.Fatalf("Update with delivered -> retrying: %v, want ErrInvalidState", err)
	}
	if r := h.get(id).Envelope.Recipients[1]; r.State != journal.StateRetrying {
		t.Errorf("failed update changed recipient 1 to %s", r.State)
	}
	// Retrying again keeps Done when the change does not name it.
	if err := h.j.Update(ctx, id, journal.Change{Rcpt: 2, To: journal.StateDelivered, Reply: "250"}); err != nil {
		t.Fatal(err)
	}
	if r := h.get(id).Envelope.Recipients[2]; r.Attempts != 2 || !slices.Equal(r.Done, []string{"c@example.com"}) {
		t.Errorf("recipient 2 after delivery: %+v", r)
	}
	h.reopen()
	if r := h.get(id).Envelope.Recipients[1]; !r.NextAttempt.Equal(next) {
		t.Errorf("next attempt after reopen %v", r.NextAttempt)
	}
	h.verify()
}

// testControlStore: control values and event logs are durable and ordered.
func testControlStore(t *testing.T, h *harness) {
	ctx := h.ctx
	if _, err := h.j.Control(ctx, "outage/mx"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Control of a missing key: %v", err)
	}
	for _, kv := range [][2]string{{"outage/mx", "1"}, {"outage/alt", "2"}, {"window/7", "w"}} {
		if err := h.j.SetControl(ctx, kv[0], []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.j.SetControl(ctx, "outage/mx", []byte("3")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		seq, err := h.j.AppendEvent(ctx, "outage", []byte(fmt.Sprint("ev", i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("AppendEvent %d: seq %d, %v", i, seq, err)
		}
	}
	if _, err := h.j.AppendEvent(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	h.reopen()
	v, err := h.j.Control(ctx, "outage/mx")
	if err != nil || string(v) != "3" {
		t.Errorf("Control after reopen: %q, %v", v, err)
	}
	var keys []string
	if err := h.j.Controls(ctx, "outage/", func(k string, v []byte) error {
		keys = append(keys, k+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"outage/alt=2", "outage/mx=3"}; !slices.Equal(keys, want) {
		t.Errorf("Controls: %q, want %q", keys, want)
	}
	if err := h.j.SetControl(ctx, "outage/alt", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.j.Control(ctx, "outage/alt"); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("deleted key: %v", err)
	}
	var evs []string
	if err := h.j.Events(ctx, "outage", 2, func(seq uint64, v []byte) error {
		evs = append(evs, fmt.Sprint(seq, "=", string(v)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"2=ev2", "3=ev3"}; !slices.Equal(evs, want) {
		t.Errorf("Events: %q, want %q", evs, want)
	}
	if seq, err := h.j.AppendEvent(ctx, "outage", []byte("ev4")); err != nil || seq != 4 {
		t.Errorf("AppendEvent after reopen: %d, %v", seq, err)
	}
	h.verify()
}

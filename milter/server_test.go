package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
)

var testNow = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func fixedClock() time.Time { return testNow }

// domainResolver maps recipients of example.com to the mailbox server "mbx1"
// and records what it was asked.
type domainResolver struct {
	mu    sync.Mutex
	calls []string
	panic string // panic when asked about this address
}

func (r *domainResolver) Resolve(rcpt, mailer, host string) ([]string, string) {
	r.mu.Lock()
	r.calls = append(r.calls, rcpt+"|"+mailer+"|"+host)
	r.mu.Unlock()
	if rcpt == r.panic {
		panic("resolver exploded")
	}
	local, domain, _ := strings.Cut(strings.ToLower(rcpt), "@")
	if domain != "example.com" {
		return nil, ""
	}
	return []string{local}, "mbx1"
}

// richMessage has what a faithful rebuild must survive: folded headers (space
// and tab continuations), a header with two blanks after the colon, one with a
// tab, an empty one, 8-bit UTF-8 and Latin-1 bytes in header and body, a
// 3000-byte header line, a 5000-byte body line, an empty body line, trailing
// blanks, a line starting with a dot, and no final empty line.
var richMessage = "From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.org>\r\n" +
	"To: alice@example.com,\r\n" +
	"\tBob <bob@example.com>\r\n" +
	"Cc:  carol@example.net\r\n" +
	"Subject: Grüße aus Köln – 8-bit\r\n" +
	"X-Latin1: caf\xe9 cr\xe8me\r\n" +
	"X-Tab:\tafter a tab\r\n" +
	"X-Empty:\r\n" +
	"X-Folded: first\r\n" +
	"  second with two blanks\r\n" +
	"\tthird with a tab\r\n" +
	"X-Long: " + strings.Repeat("x", 3000) + "\r\n" +
	"Message-ID: <rich.1@example.org>\r\n" +
	"Date: Fri, 14 Mar 2025 09:26:53 +0000\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Hello Alice,\r\n" +
	"8-bit: Grüße \xff\xfe\x80\r\n" +
	strings.Repeat("0123456789", 500) + "\r\n" +
	"\r\n" +
	"trailing blanks   \r\n" +
	".a line starting with a dot\r\n" +
	"-- \r\n" +
	"Jürgen\r\n"

var richEnvelope = envelope{
	from: "juergen@example.org",
	rcpts: []rcpt{
		{"alice@example.com", "lmtp", "mbx1.example.com"},
		{"bob@example.com", "lmtp", "mbx1.example.com"},
		{"carol@example.net", "smtp", "[mx.example.net]:25"},
	},
	queueID: "4ZYx1k2Q3zz9",
	auth:    "juergen",
}

func simpleMessage(id, body string) string {
	return "From: a@example.org\r\nTo: alice@example.com\r\nSubject: message " + id +
		"\r\nMessage-ID: <" + id + "@example.org>\r\n\r\n" + body
}

func TestJournalsMessageFaithfully(t *testing.T) {
	j := newTestJournal(t)
	res := &domainResolver{}
	ts := startServer(t, Options{Journal: j, Resolver: res, Clock: fixedClock})

	m := dial(t, ts.addr)
	if !m.sess.ProtocolOption(gomilter.OptHeaderLeadingSpace) {
		t.Fatal("SMFIP_HDR_LEADSPC was not negotiated")
	}
	if !m.sess.ActionOption(gomilter.OptSetMacros) {
		t.Fatal("SMFIF_SETSYMLIST was not negotiated: Postfix would ignore the macro requests")
	}
	// On TCP Lifeline answers every event: without replies Postfix's writes
	// would wait on Nagle's algorithm (protocolFor).
	for _, o := range []gomilter.OptProtocol{gomilter.OptNoMailReply, gomilter.OptNoRcptReply, gomilter.OptNoHeaderReply, gomilter.OptNoEOHReply, gomilter.OptNoBodyReply, gomilter.OptNoConnect, gomilter.OptNoData} {
		if m.sess.ProtocolOption(o) {
			t.Errorf("%v negotiated on a TCP connection", o)
		}
	}
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)

	msgs := storedMessages(t, j)
	if len(msgs) != 1 {
		t.Fatalf("journal holds %d messages, want 1", len(msgs))
	}
	if got := string(msgs[0].raw); got != richMessage {
		t.Errorf("journaled bytes differ from the message:\n%s", firstDiff(got, richMessage))
	}
	env := msgs[0].entry.Envelope
	want := journal.Envelope{
		MailFrom: "juergen@example.org",
		Recipients: []journal.Recipient{
			{Address: "alice@example.com", Mailboxes: []string{"alice"}, Server: "mbx1", Mailer: "lmtp", Host: "mbx1.example.com", State: journal.StateMTA, Updated: testNow},
			{Address: "bob@example.com", Mailboxes: []string{"bob"}, Server: "mbx1", Mailer: "lmtp", Host: "mbx1.example.com", State: journal.StateMTA, Updated: testNow},
			{Address: "carol@example.net", Mailer: "smtp", Host: "[mx.example.net]:25", State: journal.StateMTA, Updated: testNow},
		},
		QueueID:  "4ZYx1k2Q3zz9",
		Received: testNow,
		AuthUser: "juergen",
		Source:   "milter",
	}
	if fmt.Sprintf("%+v", env) != fmt.Sprintf("%+v", want) {
		t.Errorf("envelope:\n got %+v\nwant %+v", env, want)
	}
	// The journal's own header parser reads the rebuilt header section.
	wantSummary := journal.Summary{
		From:      "=?UTF-8?Q?J=C3=BCrgen?= <juergen@example.org>",
		To:        "alice@example.com,\tBob <bob@example.com>", // RFC 5322 §2.2.3 unfolding drops only the CRLF
		Cc:        "carol@example.net",
		Subject:   "Grüße aus Köln – 8-bit",
		Date:      "Fri, 14 Mar 2025 09:26:53 +0000",
		MessageID: "<rich.1@example.org>",
	}
	if got := msgs[0].entry.Summary; got != wantSummary {
		t.Errorf("summary:\n got %+q\nwant %+q", got, wantSummary)
	}
	wantCalls := []string{
		"alice@example.com|lmtp|mbx1.example.com",
		"bob@example.com|lmtp|mbx1.example.com",
		"carol@example.net|smtp|[mx.example.net]:25",
	}
	if !slices.Equal(res.calls, wantCalls) {
		t.Errorf("resolver calls = %q, want %q", res.calls, wantCalls)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journaled"); got != 1 {
		t.Errorf("journaled = %v, want 1", got)
	}
	if got := ts.metric("lifeline_journal_append_seconds"); got != 1 {
		t.Errorf("append histogram count = %v, want 1", got)
	}

	// The same message again (an MTA retry after a lost answer) is a duplicate.
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	if got := ts.metric("lifeline_milter_messages_total", "result", "duplicate"); got != 1 {
		t.Errorf("duplicate = %v, want 1", got)
	}

	// Logs: one connection id on every line of the connection, never the body.
	logs := ts.logs.String()
	if !strings.Contains(logs, "message journaled") {
		t.Errorf("no journaled line in the log")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !strings.Contains(line, "milter listening") && !strings.Contains(line, " conn=1 ") {
			t.Errorf("log line without the connection id: %s", line)
		}
	}
	if strings.Contains(logs, "Hello Alice") || strings.Contains(logs, "0123456789") {
		t.Errorf("the message body leaked into the log")
	}
}

// TestUnixSocketWithoutReplies: on a unix socket the milter asks for no
// connect and DATA events and no reply before end of message, and still
// journals every message of the connection faithfully and answers at the end.
func TestUnixSocketWithoutReplies(t *testing.T) {
	j := newTestJournal(t)
	sock := filepath.Join(t.TempDir(), "milter.sock")
	ts := startServerOn(t, "unix", sock, Options{Journal: j, Resolver: &domainResolver{}, Clock: fixedClock})
	m := dialOn(t, "unix", sock)
	for _, o := range []gomilter.OptProtocol{gomilter.OptNoMailReply, gomilter.OptNoRcptReply, gomilter.OptNoHeaderReply, gomilter.OptNoEOHReply, gomilter.OptNoBodyReply, gomilter.OptNoConnect, gomilter.OptNoData, gomilter.OptHeaderLeadingSpace} {
		if !m.sess.ProtocolOption(o) {
			t.Errorf("%v not negotiated on a unix socket", o)
		}
	}
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	second := simpleMessage("unix.2", strings.Repeat("0123456789abcdef\r\n", 20000)) // 360 KB: several body events
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "lmtp", "mbx1.example.com"}}, queueID: "Q2"}, []byte(second), gomilter.ActionAccept)

	msgs := storedMessages(t, j)
	if len(msgs) != 2 {
		t.Fatalf("journal holds %d messages, want 2", len(msgs))
	}
	got := map[string]bool{string(msgs[0].raw): true, string(msgs[1].raw): true}
	for _, want := range []string{richMessage, second} {
		if !got[want] {
			t.Errorf("a message was not journaled byte for byte (%d bytes)", len(want))
		}
	}
	for _, msg := range msgs {
		if string(msg.raw) == richMessage {
			if rs := msg.entry.Envelope.Recipients; len(rs) != 3 || rs[2].Host != "[mx.example.net]:25" || msg.entry.Envelope.AuthUser != "juergen" || msg.entry.Envelope.QueueID != "4ZYx1k2Q3zz9" {
				t.Errorf("envelope of the first message: %+v", msg.entry.Envelope)
			}
		}
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journaled"); got != 2 {
		t.Errorf("journaled = %v, want 2", got)
	}
}

// TestWithoutLeadingSpace covers MTAs that do not offer SMFIP_HDR_LEADSPC
// (Postfix with milter_protocol < 6, older Sendmail): one space after the
// colon is dropped on the wire and put back by the rebuild.
func TestWithoutLeadingSpace(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j})
	m := dial(t, ts.addr, gomilter.WithoutProtocol(gomilter.OptHeaderLeadingSpace))
	if m.sess.ProtocolOption(gomilter.OptHeaderLeadingSpace) {
		t.Fatal("SMFIP_HDR_LEADSPC negotiated although the MTA does not offer it")
	}
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	msgs := storedMessages(t, j)
	if len(msgs) != 1 || string(msgs[0].raw) != richMessage {
		t.Fatalf("journaled bytes differ:\n%s", firstDiff(string(msgs[0].raw), richMessage))
	}
}

// TestMilterProtocolVersion2 negotiates with an MTA that speaks only milter
// protocol 2: no leading space, no SMFIR_PROGRESS, a reply to every event.
func TestMilterProtocolVersion2(t *testing.T) {
	j := newTestJournal(t)
	slow := &faultJournal{Journal: j, delay: 50 * time.Millisecond}
	ts := startServer(t, Options{Journal: slow, ProgressInterval: time.Millisecond})
	m := dial(t, ts.addr, gomilter.WithMaximumVersion(2), gomilter.WithProtocols(0), gomilter.WithActions(0))
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	msgs := storedMessages(t, j)
	if len(msgs) != 1 || string(msgs[0].raw) != richMessage {
		t.Fatalf("journaled bytes differ:\n%s", firstDiff(string(msgs[0].raw), richMessage))
	}
	if strings.Contains(ts.logs.String(), "sending progress") {
		t.Errorf("progress was attempted on protocol 2")
	}
}

func TestTwoMessagesAndAbortOnOneConnection(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j, Resolver: &domainResolver{}, Clock: fixedClock, SpoolThreshold: 1024})
	m := dial(t, ts.addr)

	first := simpleMessage("first", "one\r\n")
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "lmtp", "mbx1"}}, queueID: "Q1"}, []byte(first), gomilter.ActionAccept)

	// RSET in the middle of the second message (after its body, spooled to
	// disk): nothing is journaled and the spool file goes away.
	m.begin(envelope{from: "b@example.org", rcpts: []rcpt{{"bob@example.com", "lmtp", "mbx1"}, {"x@example.net", "smtp", "mx"}}, queueID: "Q2"})
	m.content([]byte(simpleMessage("aborted", strings.Repeat("aborted body line\r\n", 1000))))
	waitFor(t, "the aborted message to spool to disk", func() bool { return len(openSpoolFiles(t, ts.spoolDir)) > 0 })
	m.abort()
	waitFor(t, "the aborted message's spool file to be removed", func() bool { return len(openSpoolFiles(t, ts.spoolDir)) == 0 })

	third := simpleMessage("third", "three\r\n")
	m.send(envelope{from: "c@example.org", rcpts: []rcpt{{"carol@example.com", "local", "localhost"}}, queueID: "Q3"}, []byte(third), gomilter.ActionAccept)

	msgs := storedMessages(t, j)
	if len(msgs) != 2 {
		t.Fatalf("journal holds %d messages, want 2", len(msgs))
	}
	for i, want := range []struct {
		raw, from, rcpt, queueID string
	}{{first, "a@example.org", "alice@example.com", "Q1"}, {third, "c@example.org", "carol@example.com", "Q3"}} {
		env := msgs[i].entry.Envelope
		if string(msgs[i].raw) != want.raw {
			t.Errorf("message %d bytes:\n%s", i, firstDiff(string(msgs[i].raw), want.raw))
		}
		if env.MailFrom != want.from || env.QueueID != want.queueID || len(env.Recipients) != 1 || env.Recipients[0].Address != want.rcpt {
			t.Errorf("message %d envelope = %+v, want from %s, rcpt %s, queue id %s", i, env, want.from, want.rcpt, want.queueID)
		}
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "aborted"); got != 1 {
		t.Errorf("aborted = %v, want 1", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journaled"); got != 2 {
		t.Errorf("journaled = %v, want 2", got)
	}
}

// TestSpoolsPastThreshold checks that a message larger than SpoolThreshold is
// streamed to the journal from a temporary file in SpoolDir that has no name
// (unlinked at creation) and is closed after the append, and that a small one
// never touches the disk.
func TestSpoolsPastThreshold(t *testing.T) {
	j := newTestJournal(t)
	var mu sync.Mutex
	var created []string
	var seenDuringAppend []string
	var inDirDuringAppend int
	var readerType string
	spoolDir := t.TempDir()
	fj := &faultJournal{Journal: j, hook: func(_ context.Context, _ journal.Envelope, r io.Reader) {
		mu.Lock()
		defer mu.Unlock()
		seenDuringAppend = openSpoolFiles(t, spoolDir)
		entries, _ := os.ReadDir(spoolDir)
		inDirDuringAppend = len(entries)
		readerType = fmt.Sprintf("%T", r)
	}}
	ts := startServer(t, Options{Journal: fj, SpoolThreshold: 4096, SpoolDir: spoolDir}, func(s *Server) {
		s.spoolCreated = func(path string) {
			mu.Lock()
			created = append(created, path)
			mu.Unlock()
		}
	})
	m := dial(t, ts.addr)

	small := simpleMessage("small", "tiny\r\n")
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "", ""}}}, []byte(small), gomilter.ActionAccept)
	mu.Lock()
	if len(created) != 0 || readerType != "*bytes.Reader" {
		t.Errorf("small message: spool files %v, reader %s; want none, *bytes.Reader", created, readerType)
	}
	mu.Unlock()

	big := simpleMessage("big", strings.Repeat("a line of a big message, long enough to spill over the threshold\r\n", 5000))
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "", ""}}}, []byte(big), gomilter.ActionAccept)
	mu.Lock()
	if len(created) != 1 {
		t.Fatalf("big message: %d spool files created, want 1", len(created))
	}
	if readerType != "*io.SectionReader" {
		t.Errorf("big message reader = %s, want *io.SectionReader (streamed from the file)", readerType)
	}
	if inDirDuringAppend != 0 {
		t.Errorf("during the append the spool dir held %d names, want 0 (unlinked)", inDirDuringAppend)
	}
	if len(seenDuringAppend) != 1 || seenDuringAppend[0] != created[0]+" (deleted)" {
		t.Errorf("open spool files during append = %q, want [%q]", seenDuringAppend, created[0]+" (deleted)")
	}
	mu.Unlock()
	msgs := storedMessages(t, j)
	if len(msgs) != 2 || string(msgs[1].raw) != big {
		t.Fatalf("big message not journaled intact")
	}
	waitFor(t, "the spool file to be closed", func() bool { return len(openSpoolFiles(t, ts.spoolDir)) == 0 })
}

func TestJournalErrorAccepts(t *testing.T) {
	fj := &faultJournal{Journal: newTestJournal(t), err: errors.New("disk on fire")}
	ts := startServer(t, Options{Journal: fj})
	m := dial(t, ts.addr)
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	if got := ts.metric("lifeline_journal_append_errors_total"); got != 1 {
		t.Errorf("append errors = %v, want 1", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_accepted"); got != 1 {
		t.Errorf("journal_error_accepted = %v, want 1", got)
	}
	if !strings.Contains(ts.logs.String(), "disk on fire") {
		t.Errorf("the journal error was not logged")
	}
}

func TestJournalErrorTempFails(t *testing.T) {
	fj := &faultJournal{Journal: newTestJournal(t), err: errors.New("disk on fire")}
	ts := startServer(t, Options{Journal: fj, OnJournalError: TempFail})
	m := dial(t, ts.addr)
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionTempFail)
	// The MTA connection survives a TEMPFAIL: the next message is answered too.
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "", ""}}}, []byte(simpleMessage("next", "x\r\n")), gomilter.ActionTempFail)
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_tempfail"); got != 2 {
		t.Errorf("journal_error_tempfail = %v, want 2", got)
	}
	if got := ts.metric("lifeline_journal_append_errors_total"); got != 2 {
		t.Errorf("append errors = %v, want 2", got)
	}
}

// TestProgressDuringSlowAppend: the MTA side waits at most 300 ms for any
// packet (Postfix's milter_content_timeout in miniature); a 1 s append only
// succeeds because the milter sends SMFIR_PROGRESS meanwhile.
func TestProgressDuringSlowAppend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		wantOK   bool
	}{{"progress", 50 * time.Millisecond, true}, {"no progress", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			j := newTestJournal(t)
			fj := &faultJournal{Journal: j, delay: time.Second}
			ts := startServer(t, Options{Journal: fj, ProgressInterval: tc.interval})
			m := dial(t, ts.addr, gomilter.WithReadTimeout(300*time.Millisecond))
			m.begin(richEnvelope)
			m.content([]byte(richMessage))
			act, err := m.end()
			if tc.wantOK {
				if err != nil || act.Type != gomilter.ActionAccept {
					t.Fatalf("end of message = %v, %v; want accept", act, err)
				}
			} else if err == nil {
				t.Fatalf("end of message = %v without progress; want a read timeout (the control case)", act)
			}
			waitFor(t, "the append to finish", func() bool { return ts.metric("lifeline_journal_append_seconds") == 1 })
		})
	}
}

func TestPanicInCallbackIsRecovered(t *testing.T) {
	j := newTestJournal(t)
	res := &domainResolver{panic: "boom@example.com"}
	ts := startServer(t, Options{Journal: j, Resolver: res})
	ts.wantPanics = 1
	m := dial(t, ts.addr)

	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "", ""}, {"boom@example.com", "", ""}}}, []byte(simpleMessage("boom", "x\r\n")), gomilter.ActionAccept)
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_accepted"); got != 1 {
		t.Errorf("journal_error_accepted = %v, want 1", got)
	}
	if got := len(storedMessages(t, j)); got != 0 {
		t.Errorf("a message whose recipient panicked was journaled (%d)", got)
	}
	// The connection and the process live on.
	ok := simpleMessage("ok", "fine\r\n")
	m.send(envelope{from: "a@example.org", rcpts: []rcpt{{"alice@example.com", "", ""}}}, []byte(ok), gomilter.ActionAccept)
	if msgs := storedMessages(t, j); len(msgs) != 1 || string(msgs[0].raw) != ok {
		t.Errorf("the message after the panic was not journaled")
	}
	if !strings.Contains(ts.logs.String(), "resolver exploded") {
		t.Errorf("the panic was not logged")
	}
}

func TestPanicInJournalIsRecovered(t *testing.T) {
	for _, tc := range []struct {
		onErr  ErrorAction
		want   gomilter.ActionType
		result string
	}{{Accept, gomilter.ActionAccept, "journal_error_accepted"}, {TempFail, gomilter.ActionTempFail, "journal_error_tempfail"}} {
		t.Run(tc.onErr.String(), func(t *testing.T) {
			// The append runs long enough for progress ticks before it panics;
			// the ticker must stop with it.
			slowly := func(context.Context, journal.Envelope, io.Reader) { time.Sleep(150 * time.Millisecond) }
			fj := &faultJournal{Journal: newTestJournal(t), panicMsg: "journal exploded", hook: slowly}
			ts := startServer(t, Options{Journal: fj, OnJournalError: tc.onErr, ProgressInterval: 10 * time.Millisecond})
			ts.wantPanics = 1
			m := dial(t, ts.addr)
			m.send(richEnvelope, []byte(richMessage), tc.want)
			const tick = "sent progress"
			ticks := strings.Count(ts.logs.String(), tick)
			if ticks == 0 {
				t.Errorf("no progress was sent during the slow append")
			}
			time.Sleep(50 * time.Millisecond)
			if after := strings.Count(ts.logs.String(), tick); after != ticks {
				t.Errorf("progress went on after the answer: %d ticks, then %d", ticks, after)
			}
			if got := ts.metric("lifeline_milter_messages_total", "result", tc.result); got != 1 {
				t.Errorf("journal error result = %v, want 1", got)
			}
		})
	}
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j})
	m := dial(t, ts.addr)
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionAccept)
	idle := dial(t, ts.addr) // connected, never sent a message

	start := time.Now()
	ts.stop(5 * time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown of idle connections took %v", d)
	}
	for _, c := range []*mta{m, idle} {
		if c.stillWorks() {
			t.Errorf("a connection still works after Shutdown")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Errorf("Serve after Shutdown left the listener open")
	}
}

// stillWorks reports whether a whole transaction still gets an answer. Writes
// to a closed peer may succeed; the first read fails.
func (m *mta) stillWorks() bool {
	if _, err := m.sess.Mail("late@example.org", ""); err != nil {
		return false
	}
	if _, err := m.sess.Rcpt("x@example.com", ""); err != nil {
		return false
	}
	if _, err := m.sess.DataStart(); err != nil {
		return false
	}
	_, _, err := m.sess.End()
	return err == nil
}

func TestShutdownWaitsForMessageInFlight(t *testing.T) {
	j := newTestJournal(t)
	fj := &faultJournal{Journal: j, delay: 300 * time.Millisecond, started: make(chan struct{})}
	ts := startServer(t, Options{Journal: fj})
	m := dial(t, ts.addr)
	m.begin(richEnvelope)
	m.content([]byte(richMessage))

	type result struct {
		act *gomilter.Action
		err error
	}
	answered := make(chan result, 1)
	go func() {
		act, err := m.end()
		answered <- result{act, err}
	}()
	<-fj.started
	ts.stop(5 * time.Second) // returns only once the message is answered and the connection closed
	r := <-answered
	if r.err != nil || r.act.Type != gomilter.ActionAccept {
		t.Fatalf("message in flight during Shutdown answered %v, %v; want accept", r.act, r.err)
	}
	if got := len(storedMessages(t, j)); got != 1 {
		t.Errorf("journal holds %d messages, want 1", got)
	}
}

func TestShutdownDeadlineCancelsAppend(t *testing.T) {
	fj := &faultJournal{Journal: newTestJournal(t), block: true, started: make(chan struct{})}
	ts := startServer(t, Options{Journal: fj})
	m := dial(t, ts.addr)
	m.begin(richEnvelope)
	m.content([]byte(richMessage))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.end() // the answer races with the forced close; either is fine
	}()
	<-fj.started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	<-done
	// The blocked append saw its context cancelled and ended as a journal error.
	waitFor(t, "the cancelled append to be counted", func() bool {
		return ts.metric("lifeline_journal_append_errors_total") == 1
	})
}

func TestNewValidatesAndSharesRegistry(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Journal") {
		t.Errorf("New without a journal = %v, want an error naming Journal", err)
	}
	if _, err := New(Options{Journal: newTestJournal(t), OnJournalError: 7}); err == nil {
		t.Errorf("New with an unknown OnJournalError succeeded")
	}

	reg := prometheus.NewRegistry()
	for i := range 2 {
		if _, err := New(Options{Journal: newTestJournal(t), Registerer: reg}); err != nil {
			t.Fatalf("New #%d on a shared registry: %v", i+1, err)
		}
	}

	// With Options.Panics the milter uses the caller's counter and registers
	// no lifeline_panics_total of its own.
	reg2 := prometheus.NewRegistry()
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeline_panics_total", Help: "Panics by component (cmd's)."}, []string{"component"})
	reg2.MustRegister(vec)
	s, err := New(Options{Journal: newTestJournal(t), Registerer: reg2, Panics: vec.WithLabelValues("milter")})
	if err != nil {
		t.Fatalf("New with Panics: %v", err)
	}
	s.metrics.panics.Inc()
	if got := metricValue(t, reg2, "lifeline_panics_total", "component", "milter"); got != 1 {
		t.Errorf("caller's panic counter = %v, want 1", got)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// firstDiff describes where got and want first differ.
func firstDiff(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-40)
	return fmt.Sprintf("lengths %d and %d, first difference at byte %d:\n got …%q\nwant …%q",
		len(got), len(want), i, got[lo:min(len(got), i+40)], want[lo:min(len(want), i+40)])
}

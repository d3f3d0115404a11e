package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/journal"
)

func TestJournalListenerStoresMTA(t *testing.T) {
	ts := start(t, Options{Mode: Journal})
	rcpts := []string{"alice@example.com", "Bob+news@example.com", "carol@elsewhere.test"}
	msg := message("m1", 3)
	got := ts.send(t, "sender@remote.test", rcpts, msg)
	for _, r := range rcpts {
		if got[r] != 250 {
			t.Errorf("%s: %d", r, got[r])
		}
	}
	es := entries(t, ts.j)
	if len(es) != 1 {
		t.Fatalf("%d entries, want 1", len(es))
	}
	e := es[0]
	if e.Envelope.MailFrom != "sender@remote.test" || e.Envelope.Source != "lmtp" || len(e.Envelope.Recipients) != 3 {
		t.Fatalf("envelope %+v", e.Envelope)
	}
	for i, r := range e.Envelope.Recipients {
		if r.State != journal.StateMTA || r.Address != rcpts[i] {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
	if b := e.Envelope.Recipients[1]; b.Server != "dovecot" || len(b.Mailboxes) != 1 || b.Mailboxes[0] != "bob@example.com" {
		t.Errorf("bob resolved to %+v", b)
	}
	if c := e.Envelope.Recipients[2]; c.Server != "" || len(c.Mailboxes) != 0 {
		t.Errorf("foreign recipient resolved to %+v", c)
	}
	// The stored bytes are what was sent.
	rc, err := ts.j.Open(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close() //nolint:errcheck // test
	if string(body) != msg {
		t.Errorf("stored %q, sent %q", body, msg)
	}
	// Offered again after a lost reply: stored once.
	got = ts.send(t, "sender@remote.test", rcpts, msg)
	for _, r := range rcpts {
		if got[r] != 250 {
			t.Errorf("re-offer %s: %d", r, got[r])
		}
	}
	if n := len(entries(t, ts.j)); n != 1 {
		t.Errorf("%d entries after re-offer", n)
	}
	if v := counter(t, ts, "lifeline_ingest_messages_total", "listener", "journal", "result", "duplicate"); v != 1 {
		t.Errorf("duplicate messages %v", v)
	}
	if v := counter(t, ts, "lifeline_ingest_recipients_total", "listener", "journal", "result", "stored"); v != 3 {
		t.Errorf("stored recipients %v", v)
	}
}

func TestCustodyPerRecipient(t *testing.T) {
	ts := start(t, Options{Mode: Custody})
	rcpts := []string{"alice@example.com", "bob@example.com", "carol@example.com"}
	msg := message("c1", 2)
	got := ts.send(t, "sender@remote.test", rcpts, msg)
	for _, r := range rcpts {
		if got[r] != 250 {
			t.Errorf("%s: %d", r, got[r])
		}
	}
	if n := custodyCount(t, ts.j); n != 3 {
		t.Fatalf("%d in custody, want 3", n)
	}
	for _, e := range entries(t, ts.j) {
		if len(e.Envelope.Recipients) != 1 || e.Envelope.Recipients[0].State != journal.StateCustody || e.Envelope.Recipients[0].Server != "dovecot" {
			t.Errorf("entry %+v", e.Envelope)
		}
	}
	// A lost reply: the MTA offers all again, in another grouping and case.
	got = ts.send(t, "sender@remote.test", []string{"BOB@example.com", "alice@example.com"}, msg)
	got2 := ts.send(t, "sender@remote.test", []string{"carol@example.com"}, msg)
	if got["BOB@example.com"] != 250 || got["alice@example.com"] != 250 || got2["carol@example.com"] != 250 {
		t.Errorf("re-offer: %v %v", got, got2)
	}
	if n, m := custodyCount(t, ts.j), len(entries(t, ts.j)); n != 3 || m != 3 {
		t.Errorf("after re-offer: %d in custody, %d entries; want 3, 3", n, m)
	}
	if v := counter(t, ts, "lifeline_ingest_recipients_total", "listener", "custody", "result", "duplicate"); v != 3 {
		t.Errorf("duplicate recipients %v", v)
	}
	// A recipient named twice in one transaction gets two replies, one record.
	got = ts.send(t, "sender@remote.test", []string{"dave@example.com", "Dave@example.com"}, msg)
	if got["dave@example.com"] != 250 || got["Dave@example.com"] != 250 {
		t.Errorf("doubled recipient: %v", got)
	}
	if n := custodyCount(t, ts.j); n != 4 {
		t.Errorf("%d in custody, want 4", n)
	}
}

func TestCustodyOneRecipientFails(t *testing.T) {
	fj := &faultyJournal{Journal: openJournal(t)}
	ts := start(t, Options{Mode: Custody, Journal: fj})
	fj.setFail("bob@example.com", errors.New("injected"))
	rcpts := []string{"alice@example.com", "bob@example.com", "carol@example.com"}
	msg := message("f1", 2)
	got := ts.send(t, "sender@remote.test", rcpts, msg)
	if got["alice@example.com"] != 250 || got["bob@example.com"] != 451 || got["carol@example.com"] != 250 {
		t.Fatalf("replies %v, want 250/451/250", got)
	}
	if n := custodyCount(t, fj); n != 2 {
		t.Fatalf("%d in custody, want 2", n)
	}
	if v := counter(t, ts, "lifeline_ingest_messages_total", "listener", "custody", "result", "partial"); v != 1 {
		t.Errorf("partial %v", v)
	}
	// The MTA retries bob alone once the journal works: one more record.
	fj.setFail("bob@example.com", nil)
	got = ts.send(t, "sender@remote.test", []string{"bob@example.com"}, msg)
	if got["bob@example.com"] != 250 {
		t.Fatalf("retry: %v", got)
	}
	if n := custodyCount(t, fj); n != 3 {
		t.Errorf("%d in custody, want 3", n)
	}
}

func TestCustodyJournalFailure(t *testing.T) {
	fj := &faultyJournal{Journal: openJournal(t)}
	ts := start(t, Options{Mode: Custody, Journal: fj})
	rcpts := []string{"alice@example.com", "bob@example.com"}
	fj.setFail("*", fmt.Errorf("wrapped: %w", journal.ErrDiskFull))
	got := ts.send(t, "sender@remote.test", rcpts, message("d1", 1))
	if got["alice@example.com"] != 452 || got["bob@example.com"] != 452 {
		t.Errorf("disk full: %v, want 452", got)
	}
	fj.setFail("*", journal.ErrClosed)
	got = ts.send(t, "sender@remote.test", rcpts, message("d2", 1))
	if got["alice@example.com"] != 451 || got["bob@example.com"] != 451 {
		t.Errorf("journal closed: %v, want 451", got)
	}
	if n := len(entries(t, fj)); n != 0 {
		t.Errorf("%d entries", n)
	}
	if v := counter(t, ts, "lifeline_ingest_messages_total", "listener", "custody", "result", "tempfail"); v != 2 {
		t.Errorf("tempfail %v", v)
	}
}

func TestJournalListenerFailure(t *testing.T) {
	fj := &faultyJournal{Journal: openJournal(t)}
	ts := start(t, Options{Mode: Journal, Journal: fj})
	fj.setFail("*", errors.New("injected"))
	got := ts.send(t, "sender@remote.test", []string{"alice@example.com", "bob@example.com"}, message("j1", 1))
	if got["alice@example.com"] != 451 || got["bob@example.com"] != 451 {
		t.Errorf("%v, want 451", got)
	}
}

// A message the journal listener stored as the MTA's copy and then offered
// for custody (the mailbox server failed between Exim's unseen copy and its
// delivery) is taken over: 250, the recipient is in custody once, and a
// second offer is a duplicate.
func TestCustodyAfterMTACopy(t *testing.T) {
	j := openJournal(t)
	jl := start(t, Options{Mode: Journal, Journal: j})
	var mu sync.Mutex
	var told []string
	cl := start(t, Options{Mode: Custody, Journal: j, OnCustody: func(server string) {
		mu.Lock()
		told = append(told, server)
		mu.Unlock()
	}})
	msg := message("x1", 1)
	if got := jl.send(t, "s@remote.test", []string{"alice@example.com"}, msg); got["alice@example.com"] != 250 {
		t.Fatal(got)
	}
	if n := custodyCount(t, j); n != 0 {
		t.Fatalf("%d in custody after the journal copy", n)
	}
	for i := 0; i < 2; i++ {
		if got := cl.send(t, "s@remote.test", []string{"alice@example.com"}, msg); got["alice@example.com"] != 250 {
			t.Errorf("custody offer %d of an mta copy: %v, want 250", i, got)
		}
		if n := custodyCount(t, j); n != 1 {
			t.Errorf("after offer %d: %d in custody, want 1", i, n)
		}
	}
	if v := counter(t, cl, "lifeline_ingest_recipients_total", "listener", "custody", "result", "duplicate"); v != 1 {
		t.Errorf("duplicates counted %v, want 1", v)
	}
	// OnCustody ran once: for the take-over, not for the duplicate.
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 1 || told[0] == "" {
		t.Errorf("OnCustody calls: %q, want one with the server", told)
	}
}

func TestCustodyUnknownDomain(t *testing.T) {
	ts := start(t, Options{Mode: Custody})
	got := ts.send(t, "s@remote.test", []string{"x@elsewhere.test", "alice@example.com"}, message("u1", 1))
	if got["x@elsewhere.test"] != 451 || got["alice@example.com"] != 250 {
		t.Errorf("%v", got)
	}
	if v := counter(t, ts, "lifeline_ingest_recipients_total", "listener", "custody", "result", "refused"); v != 1 {
		t.Errorf("refused %v", v)
	}
}

func TestLimits(t *testing.T) {
	ts := start(t, Options{Mode: Custody, MaxMessageSize: 2048, MaxRecipients: 2})
	got := ts.send(t, "s@remote.test", []string{"a@example.com", "b@example.com", "c@example.com"}, message("l1", 1))
	if got["a@example.com"] != 250 || got["b@example.com"] != 250 || got["c@example.com"] != 452 {
		t.Errorf("recipients: %v", got)
	}
	got = ts.send(t, "s@remote.test", []string{"a@example.com"}, message("l2", 200))
	if got["a@example.com"] != 552 {
		t.Errorf("size: %v", got)
	}
	if n := custodyCount(t, ts.j); n != 2 {
		t.Errorf("%d in custody, want 2", n)
	}
	if v := counter(t, ts, "lifeline_ingest_messages_total", "listener", "custody", "result", "too_large"); v != 1 {
		t.Errorf("too_large %v", v)
	}
}

// A message above the spool threshold goes through a file and is stored
// byte for byte, once per recipient.
func TestSpooledMessage(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Options{Mode: Custody, SpoolThreshold: 1024, SpoolDir: dir})
	msg := message("big", 5000)
	got := ts.send(t, "s@remote.test", []string{"a@example.com", "b@example.com"}, msg)
	if got["a@example.com"] != 250 || got["b@example.com"] != 250 {
		t.Fatal(got)
	}
	for _, e := range entries(t, ts.j) {
		rc, err := ts.j.Open(context.Background(), e.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close() //nolint:errcheck // test
		if string(b) != msg {
			t.Errorf("%s: stored %d bytes, sent %d", e.ID, len(b), len(msg))
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// An idle client is told 421 and disconnected after the read timeout.
func TestReadTimeout(t *testing.T) {
	ts := start(t, Options{Mode: Journal, ReadTimeout: 200 * time.Millisecond})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close() //nolint:errcheck // test
	if err := nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(nc)
	start := time.Now()
	var lines []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "220 ") || !strings.HasPrefix(lines[1], "421 ") {
		t.Errorf("got %q", lines)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v", d)
	}
}

// Shutdown closes idle connections at once and lets a transaction finish.
func TestShutdown(t *testing.T) {
	ts := start(t, Options{Mode: Custody})
	idle, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close() //nolint:errcheck // test
	br := bufio.NewReader(idle)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
		t.Fatal(l, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("shutdown took %v with an idle connection", d)
	}
	if err := idle.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("idle connection still open")
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("still accepting")
	}
}

// Python's smtplib.LMTP is an independent client: per-recipient replies
// after DATA as it reads them (RFC 2033 §4.2).
func TestPythonLMTPClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is missing")
		}
		t.Skip("python3 not installed")
	}
	fj := &faultyJournal{Journal: openJournal(t)}
	ts := start(t, Options{Mode: Custody, Journal: fj})
	fj.setFail("bob@example.com", errors.New("injected"))
	host, port, _ := net.SplitHostPort(ts.addr)
	script := `
import smtplib, sys
c = smtplib.LMTP(sys.argv[1], int(sys.argv[2]))
c.ehlo("py.test")
msg = b"From: s@remote.test\r\nSubject: py\r\nMessage-ID: <py@remote.test>\r\n\r\nhello\r\n"
rcpts = ["alice@example.com", "bob@example.com"]
c.mail("s@remote.test")
for r in rcpts:
    c.rcpt(r)
# SMTP.data reads the first reply; LMTP sends one per recipient
# (RFC 2033 §4.2), read with getreply. (smtplib's sendmail reads only the
# first, a known limit of smtplib.LMTP.)
codes = [c.data(msg)[0]] + [c.getreply()[0] for _ in rcpts[1:]]
print(" ".join(str(x) for x in codes))
c.quit()
`
	out, err := exec.Command(py, "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "250 451" {
		t.Errorf("python says %q", got)
	}
	if n := custodyCount(t, fj); n != 1 {
		t.Errorf("%d in custody, want 1", n)
	}
}

func TestUnixSocket(t *testing.T) {
	ts := start(t, Options{Mode: Journal})
	sock := filepath.Join(t.TempDir(), "lmtp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ts.srv.Serve(ln) }() // ends with the Shutdown at cleanup
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(nc)
	defer c.Close() //nolint:errcheck // test
	if err := c.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("s@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, message("unix", 1)) //nolint:errcheck // checked at close
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		t.Fatal(err)
	}
	if n := len(entries(t, ts.j)); n != 1 {
		t.Errorf("%d entries", n)
	}
}

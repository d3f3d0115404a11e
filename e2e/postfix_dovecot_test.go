package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// sentMessage is one message the test sent and where it must arrive.
type sentMessage struct {
	id        string
	name      string // corpus file or generated case
	from      string
	to        []string // envelope recipients
	mailboxes []string // Dovecot mailboxes it must reach (aliases expanded, +detail stripped)
	data      []byte   // the bytes sent (CRLF)
	utf8      bool
}

// TestPostfixDovecotJournal sends the corpus and some hard cases through real
// Postfix with Lifeline's milter to real Dovecot, then checks that every
// message reached the right mailboxes exactly once, that the journal holds
// each message once with the bytes Dovecot stored (apart from the fields
// added on delivery), that export per mailbox returns exactly that mailbox's
// mail, and that `lifeline journal verify` passes.
func TestPostfixDovecotJournal(t *testing.T) {
	requireE2E(t)
	corpusDir := CorpusDir(t)
	corpus, err := ReadCorpus(corpusDir, "sisimai/bsd", "sisimai/err")
	if err != nil {
		t.Fatalf("reading the corpus: %v", err)
	}

	users := []string{"alice", "bob", "carol", "dave"}
	var many []string // the 50 recipients of one message
	for i := 1; i <= 50; i++ {
		many = append(many, fmt.Sprintf("r%02d", i))
	}
	env := Start(t, Options{
		Milter:  true,
		Users:   append(append([]string(nil), users...), many...),
		Aliases: map[string][]string{"sales@" + DefaultDomain: {"bob@" + DefaultDomain, "carol@" + DefaultDomain}},
	})
	a := env.Addr
	ledger := NewLedger()

	var msgs []*sentMessage
	add := func(name string, to []string, boxes []string, data []byte, utf8 bool) {
		id := ledger.NewID()
		m := &sentMessage{id: id, name: name, from: "sender@example.net", to: to, mailboxes: boxes, data: CRLF(WithTestID(id, data)), utf8: utf8}
		msgs = append(msgs, m)
	}

	// The corpus, spread over the mailboxes; every fifth goes to a +detail
	// address, which Dovecot files in dave's folder "corpus".
	rcpts := []struct{ to, box string }{
		{a("alice"), a("alice")}, {a("bob"), a("bob")}, {a("carol"), a("carol")}, {a("dave"), a("dave")}, {a("dave+corpus"), a("dave")},
	}
	for i, c := range corpus {
		r := rcpts[i%len(rcpts)]
		add(c.Name, []string{r.to}, []string{r.box}, c.Data, false)
	}

	// 8-bit headers and body in ISO-8859-1, without SMTPUTF8 (what old
	// clients send; Postfix and Dovecot pass the bytes through).
	add("8bit-latin1", []string{a("alice")}, []string{a("alice")}, []byte(
		"From: \xc9milie <emilie@example.net>\nTo: alice@example.test\nSubject: R\xe9sum\xe9 \xe0 relire\n"+
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"+
			"Voil\xe0 le r\xe9sum\xe9, \xe7a va?\n"), false)
	// UTF-8 headers (RFC 6532): a UTF-8 display name, address and subject.
	// They are sent without SMTPUTF8, as 8BITMIME, which Postfix accepts
	// and delivers: with SMTPUTF8 Postfix would bounce them ("SMTPUTF8 is
	// required, but was not offered by host"), because Dovecot 2.3's LMTP
	// does not offer SMTPUTF8.
	add("utf8-headers", []string{a("bob")}, []string{a("bob")}, []byte(
		"From: Jörg Müller <jörg@bücher.example>\nTo: bob@example.test\nSubject: Grüße – 日本語のテスト\n"+
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"+
			"Schöne Grüße, こんにちは\n"), false)
	// SMTPUTF8 with UTF-8 in the body only: Postfix delivers it to an LMTP
	// server without SMTPUTF8.
	add("smtputf8-body", []string{a("bob")}, []string{a("bob")}, []byte(
		"From: joerg@example.net\nTo: bob@example.test\nSubject: SMTPUTF8, UTF-8 body\n"+
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"+
			"Schöne Grüße, こんにちは\n"), true)
	// A 1,000-character body line (over SMTP's 998) and a 1,200-character
	// header line: Postfix's LMTP client breaks both, the journal keeps them.
	add("long-lines", []string{a("carol")}, []string{a("carol")}, []byte(
		"From: long@example.net\nTo: carol@example.test\nSubject: long "+strings.Repeat("s", 1194)+"\n\n"+
			strings.Repeat("0123456789", 100)+"\nshort line\n"+strings.Repeat("y", 2500)+"\n"), false)
	// Dot-stuffing: lines that start with "." (RFC 5321 §4.5.2).
	add("dots", []string{a("dave")}, []string{a("dave")}, []byte(
		"From: dots@example.net\nTo: dave@example.test\nSubject: dots\n\n.\n..\n.leading dot\n. \nend\n."), false)
	// One message to 50 recipients: stored once in the journal, delivered 50 times.
	var manyTo []string
	for _, r := range many {
		manyTo = append(manyTo, a(r))
	}
	add("50-recipients", manyTo, manyTo, []byte(
		"From: list@example.net\nTo: undisclosed-recipients:;\nSubject: to fifty\n\nHello, all fifty.\n"), false)
	// A +detail recipient and an alias with two members.
	add("detail", []string{a("alice+news")}, []string{a("alice")}, []byte(
		"From: news@example.net\nTo: alice+news@example.test\nSubject: detail\n\nnews\n"), false)
	add("alias", []string{a("sales")}, []string{a("bob"), a("carol")}, []byte(
		"From: customer@example.net\nTo: sales@example.test\nSubject: alias\n\nan order\n"), false)
	// A 25 MB attachment (about 34 MB as base64).
	add("25MB-attachment", []string{a("alice")}, []string{a("alice")}, BigMessage(25<<20, "alice@example.test"), false)

	for _, m := range msgs {
		ledger.Expect(m.id, m.mailboxes...)
	}
	sendAll(t, env, msgs, 8)
	report := env.WaitDelivered(t, ledger, 3*time.Minute)
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("Dovecot: %s", report)

	// Every message went through the milter, and nothing panicked on the way.
	page, err := env.Lifeline.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := MetricSum(page, "lifeline_panics_total"); !ok || n != 0 {
		t.Errorf("lifeline_panics_total = %v (exported: %v), want 0", n, ok)
	}
	if n, _ := MetricSum(page, `lifeline_milter_messages_total{result="journaled"}`); int(n) != len(msgs) {
		t.Errorf("lifeline_milter_messages_total{result=\"journaled\"} = %v, want %d", n, len(msgs))
	}

	// The journal is read with `lifeline serve` stopped: the embedded
	// journal allows one process at a time.
	if err := env.Lifeline.Stop(); err != nil {
		t.Fatalf("lifeline serve did not stop cleanly: %v", err)
	}
	ctx := context.Background()
	if out, err := env.Lifeline.Verify(ctx); err != nil {
		t.Errorf("lifeline journal verify: %v", err)
	} else {
		t.Logf("lifeline journal verify:\n%s", out)
	}
	stats, err := env.Lifeline.Stats(ctx)
	if err != nil {
		t.Fatalf("lifeline journal stats: %v", err)
	}
	t.Logf("lifeline journal stats: %v", stats)
	if n, err := stats.Int("messages"); err != nil {
		t.Errorf("%v", err)
	} else if n != int64(len(msgs)) {
		t.Errorf("journal stats: messages: %d, sent %d distinct messages (the 50-recipient one must be stored once)", n, len(msgs))
	}

	byID := map[string]*sentMessage{}
	for _, m := range msgs {
		byID[m.id] = m
	}
	boxes := env.Dovecot.Users()
	sort.Strings(boxes)
	exportRoot := t.TempDir()
	journalIDs := map[string]string{} // test id → journal id
	removedSeen := map[string]int{}   // added fields by name, for the log
	var diffs []string
	// Problems are gathered, so that one broken export does not print a
	// line for each of the 54 mailboxes.
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	compared := 0
	for _, box := range boxes {
		files, err := env.Lifeline.ExportEML(ctx, box, filepath.Join(exportRoot, box))
		if err != nil {
			bad("export %s: %v", box, err)
			continue
		}
		got := map[string]string{} // test id → exported file
		for jid, path := range files {
			tid, err := testIDOfFile(path)
			if err != nil {
				bad("export %s: %s: %v", box, path, err)
				continue
			}
			if tid == "" {
				bad("export %s: %s has no %s header", box, path, TestIDHeader)
				continue
			}
			if prev, ok := got[tid]; ok {
				bad("export %s: message %s exported twice (%s, %s)", box, tid, prev, path)
			}
			got[tid] = path
			if prev, ok := journalIDs[tid]; ok && prev != jid {
				bad("message %s has journal id %s in one mailbox and %s in %s: stored more than once", tid, prev, jid, box)
			}
			journalIDs[tid] = jid
		}
		want := ledger.Expected(box)
		var missing, extra []string
		for _, id := range want {
			if _, ok := got[id]; !ok {
				missing = append(missing, fmt.Sprintf("%s (%s)", id, byID[id].name))
			}
		}
		wantSet := map[string]bool{}
		for _, id := range want {
			wantSet[id] = true
		}
		for id := range got {
			if !wantSet[id] {
				extra = append(extra, id)
			}
		}
		if len(missing) > 0 {
			bad("export %s: %d journaled messages missing: %s", box, len(missing), strings.Join(firstN(missing, 20), ", "))
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			bad("export %s: %d messages that were not sent to it: %s", box, len(extra), strings.Join(firstN(extra, 20), ", "))
		}

		// Journal bytes against Dovecot's bytes, message by message.
		for id, path := range got {
			stored := report.Files[box][id]
			if len(stored) != 1 {
				continue // reported by the accounting
			}
			jb, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := os.ReadFile(stored[0])
			if err != nil {
				t.Fatal(err)
			}
			removed, err := CompareJournal(jb, sb)
			if err != nil {
				diffs = append(diffs, fmt.Sprintf("%s (%s) in %s: %v", id, byID[id].name, box, err))
				continue
			}
			compared++
			for _, f := range removed {
				name, _, _ := strings.Cut(f, ":")
				removedSeen[name]++
			}
			// The journal has exactly what was sent, apart from what
			// Postfix's cleanup changed before the milter saw it; at least
			// the test id header must have come through first.
			if !bytes.HasPrefix(jb, []byte(TestIDHeader+": "+id+"\r\n")) {
				bad("%s (%s): journaled copy does not start with its %s line: %q", id, byID[id].name, TestIDHeader, jb[:min(len(jb), 120)])
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d problems with the journal exports:\n%s", len(problems), strings.Join(firstN(problems, 30), "\n"))
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("%d journaled messages differ from Dovecot's copy beyond the delivery fields:\n%s", len(diffs), strings.Join(firstN(diffs, 15), "\n"))
	}
	if len(journalIDs) != len(msgs) {
		t.Errorf("found %d of %d sent messages in the exports", len(journalIDs), len(msgs))
	}
	// The mbox form of one mailbox holds the same messages.
	mbox := filepath.Join(t.TempDir(), "alice.mbox")
	if err := env.Lifeline.ExportMbox(ctx, a("alice"), mbox); err != nil {
		t.Errorf("%v", err)
	} else if b, err := os.ReadFile(mbox); err != nil {
		t.Errorf("%v", err)
	} else {
		if !bytes.HasPrefix(b, []byte("From ")) {
			t.Errorf("export --format mbox: %s does not start with a \"From \" line: %q", mbox, b[:min(len(b), 80)])
		}
		var missing []string
		for _, id := range ledger.Expected(a("alice")) {
			if !bytes.Contains(b, []byte("\n"+TestIDHeader+": "+id+"\n")) && !bytes.Contains(b, []byte("\n"+TestIDHeader+": "+id+"\r\n")) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			t.Errorf("export --format mbox of %s lacks %d of its messages: %s", a("alice"), len(missing), strings.Join(firstN(missing, 20), " "))
		}
	}
	t.Logf("compared %d journaled copies with Dovecot's; fields removed from Dovecot's copies: %v", compared, removedSeen)
}

// sendAll sends msgs over SMTP to Postfix with n concurrent clients.
func sendAll(t *testing.T, env *Env, msgs []*sentMessage, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	work := make(chan *sentMessage)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: m.from, To: m.to, Data: m.data, UTF8: m.utf8}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s (%s): %v", m.id, m.name, err))
					mu.Unlock()
				}
			}
		}()
	}
	start := time.Now()
	for _, m := range msgs {
		work <- m
	}
	close(work)
	wg.Wait()
	t.Logf("sent %d messages in %v", len(msgs), time.Since(start).Round(time.Millisecond))
	if len(errs) > 0 {
		t.Fatalf("%d messages were not accepted:\n%s", len(errs), strings.Join(firstN(errs, 20), "\n"))
	}
}

func testIDOfFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return TestIDOf(bufio.NewReader(f))
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… and %d more", len(s)-n))
	}
	return s
}

package imap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// malformed are messages that break naive MIME parsers.
var malformed = []string{
	"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
	"Content-Type: multipart/mixed; boundary=x\r\n\r\nnever delimited\r\n",
	"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nunterminated",
	"Content-Type: message/rfc822\r\n\r\n",
	"Content-Type: message/rfc822\r\n\r\nnot: a\r\n\x00\xff\r\n",
	"Content-Type: text/plain; charset=\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64===\r\n",
	"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n",
	"Content-Type: ;;;\r\nContent-Disposition: ;;\r\nContent-Language: ,,\r\n\r\n",
	"From: <>, <@>, @, \"unterminated\r\nTo: group: a@b, c@d;, undisclosed-recipients:;\r\nDate: not a date\r\n\r\n",
	"Subject: =?bogus?q?x?= =?utf-8?b?////?=\r\n\r\n",
	"\r\n\r\n\r\n",
	"",
	"no header at all, just text",
	strings.Repeat("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n", 40) + "deep\r\n",
	"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nx\r\n--d--\r\n",
	"Content-Type: text/plain\n\nbare LF\nlines\n",
}

// TestMalformedMessages fetches every item of messages that break naive
// parsers: none may fail a command or cost the connection.
func TestMalformedMessages(t *testing.T) {
	f := newFixture(t)
	for _, m := range malformed {
		appendMsg(t, f, m, "carol")
	}
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "carol", nil)
	selectBox(t, c, "INBOX")
	fetchAll(t, c, f.msgs["carol"])
	// BINARY of an encoding nobody knows: NO [UNKNOWN-CTE], connection kept.
	_, err := c.Fetch(goimap.SeqSetNum(7), &goimap.FetchOptions{BinarySection: []*goimap.FetchItemBinarySection{{Part: []int{1}}}}).Collect()
	if statusCode(err) != goimap.ResponseCodeUnknownCTE {
		t.Errorf("BINARY of x-uuencode: %v", err)
	}
	r := dialRaw(t, ts.addr)
	r.login("carol")
	r.ok("SELECT INBOX")
	r.ok("FETCH 1:* (BODY BODYSTRUCTURE ENVELOPE BODY.PEEK[1.1.1.1] BODY.PEEK[2.HEADER] BODY.PEEK[1.MIME])")
	r.ok("SEARCH TEXT x")
	r.ok("SEARCH HEADER Subject bogus")
}

// fetchAll fetches BODYSTRUCTURE, ENVELOPE and BODY[] of every message of the
// selected mailbox and checks BODY[] against want.
func fetchAll(t *testing.T, c *imapclient.Client, want [][]byte) {
	t.Helper()
	body := &goimap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(goimap.SeqSet{{Start: 1, Stop: 0}}, &goimap.FetchOptions{
		UID: true, Envelope: true, BodyStructure: &goimap.FetchItemBodyStructure{Extended: true},
		BodySection: []*goimap.FetchItemBodySection{body, {Specifier: goimap.PartSpecifierHeader, Peek: true},
			{Specifier: goimap.PartSpecifierText, Peek: true}, {Part: []int{1}, Peek: true},
			{Part: []int{2, 1}, Specifier: goimap.PartSpecifierMIME, Peek: true}},
	}).Collect()
	if err != nil {
		t.Fatalf("FETCH 1:*: %v", err)
	}
	if len(msgs) != len(want) {
		t.Fatalf("FETCH 1:*: %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if got := m.FindBodySection(body); m.SeqNum != uint32(i+1) || !bytes.Equal(got, want[i]) {
			t.Errorf("message %d: BODY[] differs from the journal (%d vs %d bytes)", i+1, len(got), len(want[i]))
		}
		if m.Envelope == nil || m.BodyStructure == nil {
			t.Errorf("message %d: no ENVELOPE or BODYSTRUCTURE", i+1)
		}
		checkHeaderEnd(t, want[i])
	}
	if _, err := c.Fetch(goimap.SeqSet{{Start: 1, Stop: 0}}, &goimap.FetchOptions{
		BodyStructure: &goimap.FetchItemBodyStructure{}, BinarySectionSize: []*goimap.FetchItemBinarySectionSize{{Part: []int{1}}},
	}).Collect(); err != nil && statusCode(err) != goimap.ResponseCodeUnknownCTE {
		t.Errorf("FETCH 1:* BODY BINARY.SIZE[1]: %v", err)
	}
}

// TestCorpus journals every message of the sisimai corpus and fetches it
// with imapclient: BODYSTRUCTURE, ENVELOPE and sections without an error or
// a disconnect, BODY[] equal to the journal's bytes.
func TestCorpus(t *testing.T) {
	dir := corpusDir(t)
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, "LICENSE") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	// Concurrent appends share the journal's fsyncs; the UID order is then
	// read back from the journal.
	var mu sync.Mutex
	byID := map[journal.ID][]byte{}
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, p := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			b, err := os.ReadFile(p)
			var res journal.AppendResult
			if err == nil {
				res, err = f.j.Append(context.Background(), journal.Envelope{MailFrom: "sender@example.org",
					Recipients: []journal.Recipient{{Address: "carol@example.com", Mailboxes: []string{"carol"}, State: journal.StateMTA}}},
					bytes.NewReader(b))
			}
			mu.Lock()
			defer mu.Unlock()
			byID[res.ID] = b
			errs = append(errs, err)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	err = f.j.List(context.Background(), "carol", 1, func(it journal.MailboxItem) error {
		f.msgs["carol"] = append(f.msgs["carol"], byID[it.ID])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.msgs["carol"]) < 600 {
		t.Fatalf("only %d corpus messages journaled", len(f.msgs["carol"]))
	}
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "carol", nil)
	selectBox(t, c, "INBOX")
	fetchAll(t, c, f.msgs["carol"])
	d, err := c.Search(&goimap.SearchCriteria{Text: []string{"mailer-daemon"}}, nil).Wait()
	if err != nil || len(d.AllSeqNums()) == 0 {
		t.Errorf("SEARCH TEXT mailer-daemon over the corpus: %v %v", d, err)
	}
	t.Logf("%d corpus messages fetched", len(f.msgs["carol"]))
}

// TestStructureFallback covers messages journaled before the journal stored
// structures: the structure is parsed on demand and cached.
func TestStructureFallback(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", func(o *Options) { o.Journal = noStructure{f.j}; o.StructureCacheSize = 1 }, nil)
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")
	fetchAll(t, c, f.msgs["alice"])
	m := fetchOne(t, c, goimap.SeqSetNum(3), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{{Part: []int{3, 1}, Peek: true}}})
	if got := string(m.FindBodySection(&goimap.FetchItemBodySection{Part: []int{3, 1}, Peek: true})); got != "inner body text" {
		t.Errorf("BODY[3.1] from a parsed structure: %q", got)
	}
	if n := ts.structs.ll.Len(); n != 1 {
		t.Errorf("cache holds %d structures, limit 1", n)
	}
}

type noStructure struct{ journal.Journal }

func (noStructure) Structure(context.Context, journal.ID) (*mimestruct.Info, error) {
	return nil, journal.ErrNotFound
}

// TestLargeMessage streams a 50 MB message: BODY[] arrives whole, and the
// heap does not grow by the message's size while it is sent (the client reads
// the literal as a stream too).
func TestLargeMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB message")
	}
	f := newFixture(t)
	var b strings.Builder
	b.WriteString("From: big@example.org\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n")
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 2) + "\r\n"
	for b.Len() < 50<<20 {
		b.WriteString(line)
	}
	big := b.String()
	appendMsg(t, f, big, "carol")
	want := sha256.Sum256([]byte(big))
	b.Reset()
	big = ""
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "carol", nil)
	selectBox(t, c, "INBOX")

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	cmd := c.Fetch(goimap.SeqSetNum(1), &goimap.FetchOptions{RFC822Size: true, BodySection: []*goimap.FetchItemBodySection{{Peek: true}}})
	msg := cmd.Next()
	if msg == nil {
		t.Fatal("no FETCH response")
	}
	h := sha256.New()
	var n int64
	for item := msg.Next(); item != nil; item = msg.Next() {
		if bs, ok := item.(imapclient.FetchItemDataBodySection); ok {
			var err error
			if n, err = io.Copy(h, bs.Literal); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if got != want || n < 50<<20 {
		t.Errorf("BODY[] of the 50 MB message: %d bytes, digest differs: %v", n, got != want)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap in use grew by %d MB while streaming %d MB", grew>>20, n>>20)
	if grew > 25<<20 {
		t.Errorf("heap grew by %d MB while streaming a %d MB message", grew>>20, n>>20)
	}
}

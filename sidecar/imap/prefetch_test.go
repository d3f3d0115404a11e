package imap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

// TestFetchReadAhead fetches a mailbox of messages below and above
// prefetchMax (one of several chunks) in one command, whole and in sections,
// and compares every byte with the journal's: the messages read ahead and
// those streamed must give the same answers, whether the journal reads many
// at once (journal.ItemReader) or not (then each is read through Open).
func TestFetchReadAhead(t *testing.T) {
	t.Run("ItemReader", func(t *testing.T) { testFetchReadAhead(t, nil) })
	t.Run("Open", func(t *testing.T) {
		var opens atomic.Int64
		n := testFetchReadAhead(t, func(o *Options) { o.Journal = plainJournal{o.Journal, &opens} })
		// Read ahead, a small message is opened once for its three
		// sections; without, once per section.
		if got := opens.Load(); got >= int64(2*n) {
			t.Errorf("%d messages opened %d times: not read ahead", n, got)
		}
	})
}

// plainJournal hides every optional interface of the journal it wraps and
// counts the messages opened.
type plainJournal struct {
	journal.Journal
	opens *atomic.Int64
}

func (p plainJournal) Open(ctx context.Context, id journal.ID) (io.ReadCloser, error) {
	p.opens.Add(1)
	return p.Journal.Open(ctx, id)
}

// testFetchReadAhead returns the number of messages fetched.
func testFetchReadAhead(t *testing.T, opts func(*Options)) int {
	f := newFixture(t)
	var sizes []int
	for i := range 3 * prefetchBatch {
		size := 200 + i*97
		switch i % 7 {
		case 3:
			size = prefetchMax + 1 // the first size not read ahead
		case 5:
			size = prefetchMax // the last one read ahead
		}
		sizes = append(sizes, size)
	}
	sizes = append(sizes, 600<<10) // three chunks
	for i, size := range sizes {
		var b strings.Builder
		fmt.Fprintf(&b, "From: a@example.org\r\nSubject: read-ahead %d\r\nContent-Type: text/plain\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\n", i)
		for b.Len() < size-2 {
			fmt.Fprintf(&b, "%x", b.Len()%251)
			if b.Len()%76 == 0 {
				b.WriteString("\r\n")
			}
		}
		msg := b.String()[:size-2] + "\r\n"
		appendMsg(t, f, msg, "carol")
	}
	ts := startServer(t, f, "", opts, nil)
	c := login(t, ts.addr, "carol", nil)
	selectBox(t, c, "INBOX")

	whole := &goimap.FetchItemBodySection{Peek: true}
	subject := &goimap.FetchItemBodySection{Peek: true, Specifier: goimap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}
	text := &goimap.FetchItemBodySection{Peek: true, Specifier: goimap.PartSpecifierText, Partial: &goimap.SectionPartial{Offset: 10, Size: 100}}
	msgs, err := c.Fetch(goimap.UIDSet{{Start: 1, Stop: 0}}, &goimap.FetchOptions{
		UID: true, BodySection: []*goimap.FetchItemBodySection{whole, subject, text},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(sizes) {
		t.Fatalf("%d messages, want %d", len(msgs), len(sizes))
	}
	for i, m := range msgs {
		want := f.msgs["carol"][i]
		if got := m.FindBodySection(whole); !bytes.Equal(got, want) {
			t.Errorf("message %d (%d bytes): BODY[] differs (%d bytes)", i+1, len(want), len(got))
		}
		if got, w := string(m.FindBodySection(subject)), fmt.Sprintf("Subject: read-ahead %d\r\n\r\n", i); got != w {
			t.Errorf("message %d: HEADER.FIELDS %q, want %q", i+1, got, w)
		}
		body := want[bytes.Index(want, []byte("\r\n\r\n"))+4:]
		if got := m.FindBodySection(text); !bytes.Equal(got, body[10:min(110, len(body))]) {
			t.Errorf("message %d: TEXT<10.100> %q", i+1, got)
		}
	}
	return len(sizes)
}

// TestFetchSweptMeanwhile: messages swept by retention between SELECT and a
// FETCH of their bodies are answered as without read-ahead (their literals
// filled, the command NO), and the others' bytes are exact.
func TestFetchSweptMeanwhile(t *testing.T) {
	f := newFixture(t)
	old := time.Now().Add(-48 * time.Hour)
	for i := range 6 {
		received := time.Now()
		if i%2 == 1 {
			received = old
		}
		appendAt(t, f, received, fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i), "carol")
	}
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "carol", nil)
	selectBox(t, c, "INBOX")
	if res, err := f.j.Sweep(context.Background(), time.Now().Add(-time.Hour)); err != nil || res.Removed < 3 { // and the fixture's old messages
		t.Fatalf("Sweep: %+v, %v", res, err)
	}
	whole := &goimap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(goimap.SeqSetNum(1, 2, 3, 4, 5, 6), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{whole}}).Collect()
	if err == nil {
		t.Fatal("FETCH of swept messages succeeded")
	}
	if len(msgs) != 6 {
		t.Fatalf("%d responses (%v)", len(msgs), err)
	}
	for i, m := range msgs {
		got := m.FindBodySection(whole)
		if i%2 == 0 {
			if want := f.msgs["carol"][i]; !bytes.Equal(got, want) {
				t.Errorf("message %d: %q, want %q", i+1, got, want)
			}
		} else if strings.Trim(string(got), " ") != "" {
			t.Errorf("swept message %d: %q, want spaces", i+1, got)
		}
	}
}

// countingJournal counts how messages are opened.
type countingJournal struct {
	*badgerjournal.Journal
	opens, items, reads atomic.Int64
}

func (c *countingJournal) Open(ctx context.Context, id journal.ID) (io.ReadCloser, error) {
	c.opens.Add(1)
	return c.Journal.Open(ctx, id)
}

func (c *countingJournal) OpenItem(ctx context.Context, it journal.MailboxItem) (io.ReadCloser, error) {
	c.items.Add(1)
	return c.Journal.OpenItem(ctx, it)
}

func (c *countingJournal) ReadItems(ctx context.Context, items []journal.MailboxItem, buf func(int) []byte, got func(int, []byte)) error {
	return c.Journal.ReadItems(ctx, items, buf, func(k int, msg []byte) {
		c.reads.Add(1)
		got(k, msg)
	})
}

// TestFetchOpensItems: a FETCH of bodies reads every message from its
// mailbox item, not by ID: small ones read ahead whole (journal.ItemReader),
// the large one streamed (journal.ItemOpener); the bytes are the message's.
func TestFetchOpensItems(t *testing.T) {
	f := newFixture(t)
	cj := &countingJournal{Journal: f.j}
	big := "Subject: big\r\n\r\n" + strings.Repeat("large body line\r\n", 10000) // past prefetchMax
	bodies := []string{"Subject: a\r\n\r\none\r\n", big, "Subject: c\r\n\r\nthree\r\n", "Subject: d\r\n\r\nfour\r\n"}
	for _, b := range bodies {
		appendMsg(t, f, b, "alice")
	}
	want := f.msgs["alice"] // the fixture's messages, then these
	ts := startServer(t, f, "", func(o *Options) { o.Journal = cj }, nil)
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")
	cmd := c.Fetch(goimap.UIDSet{{Start: 1, Stop: 0}}, &goimap.FetchOptions{UID: true, BodySection: []*goimap.FetchItemBodySection{{Peek: true}}})
	msgs, err := cmd.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(want) {
		t.Fatalf("fetched %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if got := m.FindBodySection(&goimap.FetchItemBodySection{Peek: true}); !bytes.Equal(got, want[i]) {
			t.Errorf("message %d: %d bytes, want %d", i+1, len(got), len(want[i]))
		}
	}
	// The small ones are read whole (ItemReader), the large one opened.
	if o, it, r := cj.opens.Load(), cj.items.Load(), cj.reads.Load(); o != 0 || it != 1 || r != int64(len(want)-1) {
		t.Errorf("opened %d messages by ID, %d by item, read %d whole; want 0, 1 and %d", o, it, r, len(want)-1)
	}
}

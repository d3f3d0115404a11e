package imap

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
)

// TestFetchReadAhead fetches a mailbox of messages below and above
// prefetchMax (one of several chunks) in one command, whole and in sections,
// and compares every byte with the journal's: the messages read ahead and
// those streamed must give the same answers.
func TestFetchReadAhead(t *testing.T) {
	f := newFixture(t)
	var sizes []int
	for i := range 3 * prefetchWindow {
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
	ts := startServer(t, f, "", nil, nil)
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

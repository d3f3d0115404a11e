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

	"github.com/lifelinemail/lifeline/journal"
)

func appendTo(t *testing.T, c *imapclient.Client, mailbox, msg string, o *goimap.AppendOptions) (*goimap.AppendData, error) {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(msg)), o)
	if _, err := cmd.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	return cmd.Wait()
}

func TestAppendToSent(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	var u updates
	c := login(t, ts.addr, "alice", &u)
	// A second session has Sent selected and IDLEs: it hears of the APPEND.
	var u2 updates
	c2 := login(t, ts.addr, "alice", &u2)
	// The empty Sent folder already has the UIDVALIDITY its first message
	// keeps: a client that synced it empty must not have to start over.
	emptySent, err := c2.Select("Sent", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c2.Idle()
	if err != nil {
		t.Fatal(err)
	}

	sent := "From: alice@example.com\r\nTo: zed@example.net\r\nSubject: my reply\r\nMessage-ID: <sent-1@t>\r\n\r\nthanks!\r\n"
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	d, err := appendTo(t, c, "Sent", sent, &goimap.AppendOptions{Flags: []goimap.Flag{goimap.FlagSeen, "$Sent", `\Recent`}, Time: when})
	if err != nil {
		t.Fatalf("APPEND Sent: %v", err)
	}
	info, err := f.j.Mailbox(context.Background(), "alice/Sent")
	if err != nil {
		t.Fatal(err)
	}
	if d.UID != 1 || d.UIDValidity != info.UIDValidity || emptySent.UIDValidity != info.UIDValidity {
		t.Errorf("APPENDUID %+v, journal %+v, UIDVALIDITY of the empty folder %d", d, info, emptySent.UIDValidity)
	}
	waitFor(t, "EXISTS in the idling session", func() bool {
		exists, _, _ := u2.snapshot()
		return slices.Contains(exists, 1)
	})
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}

	// The journal holds it for alice/Sent only, in state mta: replay never
	// delivers it.
	var entry journal.Entry
	err = f.j.List(context.Background(), "alice/Sent", 1, func(it journal.MailboxItem) error {
		entry, err = f.j.Get(context.Background(), it.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	env := entry.Envelope
	if env.MailFrom != "alice" || env.Source != "imap" || len(env.Recipients) != 1 || env.Recipients[0].Address != "alice/Sent" ||
		!slices.Equal(env.Recipients[0].Mailboxes, []string{"alice/Sent"}) || env.Recipients[0].State != journal.StateMTA ||
		env.Recipients[0].Server != "" || !env.Received.Equal(when) {
		t.Errorf("journaled envelope: %+v", env)
	}

	selectBox(t, c, "Sent")
	m := fetchOne(t, c, goimap.SeqSetNum(1), &goimap.FetchOptions{UID: true, Flags: true, InternalDate: true,
		BodySection: []*goimap.FetchItemBodySection{{Peek: true}}})
	if !bytes.Equal(m.FindBodySection(&goimap.FetchItemBodySection{Peek: true}), []byte(sent)) ||
		!slices.Equal(m.Flags, []goimap.Flag{goimap.FlagSeen, "$Sent"}) || !m.InternalDate.Equal(when) {
		t.Errorf("Sent message: flags %v date %v", m.Flags, m.InternalDate)
	}

	// The same bytes again (a client retrying): the copy already stored.
	d, err = appendTo(t, c, "Sent", sent, nil)
	if err != nil || d.UID != 1 {
		t.Errorf("APPEND of the same message: %+v %v", d, err)
	}
	d, err = appendTo(t, c, "Sent", strings.Replace(sent, "sent-1", "sent-2", 1), nil)
	if err != nil || d.UID != 2 {
		t.Errorf("second APPEND: %+v %v", d, err)
	}

	for _, tc := range []struct{ mailbox, code string }{
		{"INBOX", "CANNOT"}, {"inbox", "CANNOT"}, {"Archive", "NONEXISTENT"}, {"bob/Sent", "NONEXISTENT"},
	} {
		_, err := appendTo(t, c, tc.mailbox, sent, nil)
		if string(statusCode(err)) != tc.code {
			t.Errorf("APPEND %s: %v, want [%s]", tc.mailbox, err, tc.code)
		}
	}
	_, err = appendTo(t, c, "Sent", sent, &goimap.AppendOptions{Flags: []goimap.Flag{`\Bogus`}})
	if err == nil {
		t.Error(`APPEND with \Bogus succeeded`)
	}
	// Too large for APPENDLIMIT: refused before the literal is sent.
	r := dialRaw(t, ts.addr)
	r.login("alice")
	if _, done := r.cmd("APPEND Sent {99999999999}"); !strings.HasPrefix(done, "NO [TOOBIG]") {
		t.Errorf("APPEND over the limit: %q", done)
	}

	// An expunged Sent message cannot be appended again: there would be no
	// visible copy to name in APPENDUID.
	selectBox(t, c, "Sent")
	if err := c.Store(goimap.UIDSetNum(1), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Flags: []goimap.Flag{goimap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := appendTo(t, c, "Sent", sent, nil); statusCode(err) != goimap.ResponseCodeAlreadyExists {
		t.Errorf("APPEND of an expunged message: %v", err)
	}
	// A message that is already in INBOX with the same identity.
	self := "From: alice@example.com\r\nTo: alice@example.com\r\nSubject: note to self\r\n\r\nremember\r\n"
	if _, err := f.j.Append(context.Background(), journal.Envelope{MailFrom: "alice", Recipients: []journal.Recipient{
		{Address: "alice", Mailboxes: []string{"alice"}, State: journal.StateMTA}}}, strings.NewReader(self)); err != nil {
		t.Fatal(err)
	}
	// A note to self journaled for INBOX and its Sent copy are two messages.
	if d, err := appendTo(t, c, "Sent", self, nil); err != nil || d.UID != 3 {
		t.Errorf("APPEND of a message journaled for INBOX too: %+v, %v", d, err)
	}
}

package imap

import (
	"slices"
	"testing"

	goimap "github.com/emersion/go-imap/v2"

	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// TestRestart checks that what a client caches survives a restart of
// Lifeline: UIDVALIDITY and UIDs (the journal's), flags and expunges (the
// user's view in the journal's control store).
func TestRestart(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "alice", nil)
	before := selectBox(t, c, "INBOX")
	if err := c.Store(goimap.UIDSetNum(1), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd,
		Flags: []goimap.Flag{goimap.FlagAnswered, "$Label1"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(goimap.UIDSetNum(2), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Flags: []goimap.Flag{goimap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	sent := "Subject: kept\r\n\r\nsent\r\n"
	if _, err := appendTo(t, c, "Sent", sent, &goimap.AppendOptions{Flags: []goimap.Flag{goimap.FlagSeen}}); err != nil {
		t.Fatal(err)
	}
	sentBefore := selectBox(t, c, "Sent")
	c.Close()
	ts.stop(t)

	// Restart: a new journal handle on the same directory, a new server.
	if err := f.j.Close(); err != nil {
		t.Fatal(err)
	}
	f.j = openJournal(t, f.dir)
	f.store = userview.New(f.j)
	ts = startServer(t, f, "", nil, nil)
	c = login(t, ts.addr, "alice", nil)
	after := selectBox(t, c, "INBOX")
	if after.UIDValidity != before.UIDValidity || after.UIDNext != before.UIDNext || after.NumMessages != 2 {
		t.Errorf("after restart %+v, before %+v", after, before)
	}
	msgs, err := c.Fetch(goimap.SeqSetNum(1, 2), &goimap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].UID != 1 || !slices.Equal(msgs[0].Flags, []goimap.Flag{goimap.FlagAnswered, "$Label1"}) ||
		msgs[1].UID != 3 || len(msgs[1].Flags) != 0 {
		t.Errorf("after restart: %+v %+v", msgs[0], msgs[1])
	}
	if !slices.Contains(after.Flags, "$Label1") {
		t.Errorf("FLAGS after restart: %v", after.Flags)
	}
	sentAfter := selectBox(t, c, "Sent")
	if sentAfter.UIDValidity != sentBefore.UIDValidity || sentAfter.NumMessages != 1 {
		t.Errorf("Sent after restart %+v, before %+v", sentAfter, sentBefore)
	}
	m := fetchOne(t, c, goimap.SeqSetNum(1), &goimap.FetchOptions{Flags: true})
	if !slices.Equal(m.Flags, []goimap.Flag{goimap.FlagSeen}) {
		t.Errorf("Sent flags after restart: %v", m.Flags)
	}
}

package imap

import (
	"slices"
	"strings"
	"testing"

	goimap "github.com/emersion/go-imap/v2"
)

func TestIdle(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	var u1, u2 updates
	c1 := login(t, ts.addr, "alice", &u1)
	c2 := login(t, ts.addr, "alice", &u2)
	selectBox(t, c1, "INBOX")
	selectBox(t, c2, "INBOX")
	idle1, err := c1.Idle()
	if err != nil {
		t.Fatal(err)
	}
	idle2, err := c2.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// Both idlers share one poller for the mailbox.
	waitFor(t, "two idlers on one watch", func() bool {
		ts.watches.mu.Lock()
		defer ts.watches.mu.Unlock()
		w := ts.watches.m["alice"]
		return len(ts.watches.m) == 1 && w != nil && len(w.idlers) == 2 && w.stopPoll != nil
	})

	// Mail journaled while the clients idle is pushed to both (RFC 2177).
	appendMsg(t, f, "From: x@example.org\r\nSubject: new mail\r\n\r\nnew\r\n", "alice")
	for i, u := range []*updates{&u1, &u2} {
		waitFor(t, "EXISTS 4", func() bool {
			exists, _, _ := u.snapshot()
			return slices.Contains(exists, 4)
		})
		_ = i
	}
	if err := idle2.Close(); err != nil {
		t.Fatal(err)
	}

	// A flag change and an expunge by another session reach the idler.
	if err := c2.Store(goimap.SeqSetNum(4), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Flags: []goimap.Flag{goimap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "FETCH FLAGS", func() bool {
		_, _, fetches := u1.snapshot()
		return slices.Contains(fetches, `4 4 [\Flagged]`)
	})
	if err := c2.Store(goimap.SeqSetNum(1), &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Flags: []goimap.Flag{goimap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EXPUNGE 1", func() bool {
		_, expunges, _ := u1.snapshot()
		return slices.Contains(expunges, 1)
	})
	if err := idle1.Close(); err != nil {
		t.Fatal(err)
	}
	// Without idlers, the poller stops.
	waitFor(t, "poller stopped", func() bool {
		ts.watches.mu.Lock()
		defer ts.watches.mu.Unlock()
		w := ts.watches.m["alice"]
		return w != nil && w.stopPoll == nil && len(w.idlers) == 0
	})
	if n, err := c1.Fetch(goimap.SeqSetNum(1, 2, 3), &goimap.FetchOptions{UID: true}).Collect(); err != nil || len(n) != 3 || n[0].UID != 2 {
		t.Errorf("after EXPUNGE: %v %v", n, err)
	}
}

// TestExpungeTiming checks RFC 3501 §7.4.1: no EXPUNGE while answering
// FETCH, STORE or SEARCH; it follows at the next command that allows it, and
// the message stays fetchable until then.
func TestExpungeTiming(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	a := dialRaw(t, ts.addr)
	a.login("alice")
	a.ok("SELECT INBOX")
	b := dialRaw(t, ts.addr)
	b.login("alice")
	b.ok("SELECT INBOX")
	b.ok(`STORE 2 +FLAGS (\Deleted)`)
	b.ok(`EXPUNGE`)

	u := a.ok("FETCH 2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if len(u) != 1 || !strings.Contains(u[0], "Subject: shared") {
		t.Errorf("FETCH of a message expunged elsewhere: %q", u)
	}
	if u := a.ok("SEARCH ALL"); !slices.Equal(u, []string{"* SEARCH 1 3"}) {
		t.Errorf("SEARCH = %q", u)
	}
	if u := a.ok("NOOP"); !slices.Equal(u, []string{"* 2 EXPUNGE"}) {
		t.Errorf("NOOP = %q", u)
	}

	// New mail shows at the next command, without waiting for a poll.
	appendMsg(t, f, "Subject: more\r\n\r\nmore\r\n", "alice")
	if u := a.ok("NOOP"); !slices.Equal(u, []string{"* 3 EXISTS"}) {
		t.Errorf("NOOP after new mail = %q", u)
	}
	if u := a.ok("UID FETCH 1:* (FLAGS)"); len(u) != 3 || !strings.Contains(u[2], "UID 4") {
		t.Errorf("UID FETCH 1:* = %q", u)
	}
}

package imap

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestStoreAndExpunge(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")

	if u := r.ok(`STORE 1 +FLAGS (\Flagged $Important)`); !slices.Equal(u, []string{
		`* FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Important)`, // a new keyword (RFC 3501 §7.2.6)
		`* 1 FETCH (FLAGS (\Flagged $Important))`,
	}) && !slices.Equal(u, []string{`* 1 FETCH (FLAGS (\Flagged $Important))`, `* FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Important)`}) {
		t.Errorf("STORE +FLAGS = %q", u)
	}
	if u := r.ok(`UID STORE 1:2 +FLAGS.SILENT (\Seen)`); len(u) != 0 {
		t.Errorf("STORE .SILENT = %q", u)
	}
	if u := r.ok(`UID STORE 1 -FLAGS (\flagged)`); !slices.Equal(u, []string{`* 1 FETCH (UID 1 FLAGS (\Seen $Important))`}) {
		t.Errorf("UID STORE -FLAGS = %q", u)
	}
	if u := r.ok(`STORE 2 FLAGS (\Answered \Recent)`); !slices.Equal(u, []string{`* 2 FETCH (FLAGS (\Answered))`}) {
		t.Errorf("STORE FLAGS = %q", u)
	}
	if _, done := r.cmd(`STORE 1 +FLAGS (\Bogus)`); !strings.HasPrefix(done, "BAD") {
		t.Errorf("STORE of an unknown system flag: %q", done)
	}
	if _, done := r.cmd(`STORE 1 +FLAGS (\*)`); !strings.HasPrefix(done, "BAD") {
		t.Errorf(`STORE \*: %q`, done)
	}
	if fl, _ := f.store.Flags(context.Background(), "alice", 1); !slices.Equal(fl, []string{`\Seen`, "$Important"}) {
		t.Errorf("stored flags of UID 1: %v", fl)
	}

	// UID EXPUNGE removes only the named \Deleted messages (RFC 4315 §2.1).
	r.ok(`STORE 1:3 +FLAGS (\Deleted)`)
	if u := r.ok(`UID EXPUNGE 2`); !slices.Equal(u, []string{"* 2 EXPUNGE"}) {
		t.Errorf("UID EXPUNGE 2 = %q", u)
	}
	if u := r.ok(`STORE 2 -FLAGS (\Deleted)`); len(u) != 1 {
		t.Errorf("STORE after expunge = %q", u)
	}
	if u := r.ok(`EXPUNGE`); !slices.Equal(u, []string{"* 1 EXPUNGE"}) {
		t.Errorf("EXPUNGE = %q", u)
	}
	if u := r.ok(`UID SEARCH ALL`); !slices.Equal(u, []string{"* SEARCH 3"}) {
		t.Errorf("after EXPUNGE: %q", u)
	}
	// Hidden for alice only: bob still has the shared message, and the
	// journal keeps every copy.
	ms, _ := f.store.Messages(context.Background(), "bob")
	if len(ms) != 2 {
		t.Errorf("bob's view after alice's EXPUNGE: %+v", ms)
	}
	if info, _ := f.j.Mailbox(context.Background(), "alice"); info.Messages != 3 {
		t.Errorf("journal mailbox after EXPUNGE: %+v", info)
	}
	rb := dialRaw(t, ts.addr)
	rb.login("bob")
	if u := rb.ok(`SELECT INBOX`); !slices.Contains(u, "* 2 EXISTS") {
		t.Errorf("bob's SELECT: %q", u)
	}

	// CLOSE expunges silently; CLOSE of an EXAMINEd mailbox expunges nothing.
	r.ok(`STORE 1 +FLAGS (\Deleted)`)
	r.ok(`EXAMINE INBOX`)
	r.ok(`CLOSE`)
	r.ok(`SELECT INBOX`)
	if u := r.ok(`FETCH 1 (UID FLAGS)`); !slices.Equal(u, []string{`* 1 FETCH (UID 3 FLAGS (\Deleted))`}) {
		t.Errorf("after CLOSE of EXAMINE: %q", u)
	}
	if u := r.ok(`CLOSE`); len(u) != 0 {
		t.Errorf("CLOSE = %q", u)
	}
	if u := r.ok(`SELECT INBOX`); !slices.Contains(u, "* 0 EXISTS") {
		t.Errorf("after CLOSE: %q", u)
	}
	if _, done := r.cmd(`EXPUNGE`); !strings.HasPrefix(done, "OK") {
		t.Errorf("EXPUNGE of nothing: %q", done)
	}
	r.ok(`EXAMINE INBOX`)
	if _, done := r.cmd(`EXPUNGE`); !strings.HasPrefix(done, "NO [CANNOT]") {
		t.Errorf("EXPUNGE in EXAMINE: %q", done)
	}
}

func TestCopyMoveRefused(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	for cmd, want := range map[string]string{
		"COPY 1 Sent":          "NO [CANNOT]",
		"UID COPY 1:* Sent":    "NO [CANNOT]",
		"MOVE 1 Sent":          "NO [CANNOT]",
		"UID MOVE 2 Sent":      "NO [CANNOT]",
		"COPY 1 INBOX":         "NO [CANNOT]",
		"MOVE 1 Trash":         "NO [NONEXISTENT]",
		"COPY 1 bob":           "NO [NONEXISTENT]",
		`COPY 1 "bob/Sent"`:    "NO [NONEXISTENT]",
		"COPY 9 Sent":          "BAD",
		"UID COPY 9 Sent":      "NO [CANNOT]",
		"UID MOVE 1:9 \"../\"": "NO [NONEXISTENT]",
	} {
		if _, done := r.cmd("%s", cmd); !strings.HasPrefix(done, want) {
			t.Errorf("%s: %q, want %s", cmd, done, want)
		}
	}
	if u := r.ok("UID SEARCH ALL"); !slices.Equal(u, []string{"* SEARCH 1 2 3"}) {
		t.Errorf("after refused MOVE: %q", u)
	}
}

func TestUIDExpungeSets(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	r.ok(`STORE 1:* +FLAGS (\Deleted)`)
	if u := r.ok(`UID EXPUNGE *`); !slices.Equal(u, []string{"* 3 EXPUNGE"}) {
		t.Errorf("UID EXPUNGE * = %q", u)
	}
	r.ok(`SEARCH RETURN (SAVE) UID 1`)
	if u := r.ok(`UID EXPUNGE $`); !slices.Equal(u, []string{"* 1 EXPUNGE"}) {
		t.Errorf("UID EXPUNGE $ = %q", u)
	}
	if u := r.ok(`UID SEARCH ALL`); !slices.Equal(u, []string{"* SEARCH 2"}) {
		t.Errorf("left: %q", u)
	}
}

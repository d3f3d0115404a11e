package imap

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestIsolation checks that alice reaches none of bob's mail, by any
// mailbox name or UID guess: bob's only message (UID 2 in his INBOX, with
// "SECRET-BOB" in it) and his Sent folder.
func TestIsolation(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	rb := dialRaw(t, ts.addr)
	rb.login("bob")
	rb.ok(`APPEND Sent {30}` + "\r\nSubject: SECRET-BOB sent\r\n\r\nx")
	rb.ok(`SELECT INBOX`)
	rb.ok(`STORE 2 +FLAGS (\Flagged)`)

	r := dialRaw(t, ts.addr)
	r.login("alice")
	names := []string{"bob", "bob/Sent", "BOB", "INBOX/../bob", "../bob", "/bob", "Sent/../../bob", "alice/../bob",
		"alice", "alice/Sent", "INBOX/Sent", "%", "*", "bob@example.com", `"bob"`, "#shared/bob", "~bob", "\"\""}
	for _, n := range names {
		q := fmt.Sprintf("%q", n)
		for _, cmd := range []string{"SELECT " + q, "EXAMINE " + q, "STATUS " + q + " (MESSAGES)", "APPEND " + q + " {1}\r\nx",
			"DELETE " + q, "RENAME " + q + " x", "SUBSCRIBE " + q} {
			u, done := r.cmd("%s", cmd)
			if !strings.HasPrefix(done, "NO") && !strings.HasPrefix(done, "BAD") {
				t.Errorf("%s: %q %q", cmd, u, done)
			}
			if strings.Contains(strings.Join(u, " "), "SECRET") {
				t.Errorf("%s leaked: %q", cmd, u)
			}
		}
		u := r.ok("LIST %s *", q)
		for _, l := range u {
			if !strings.HasSuffix(l, " INBOX") && !strings.HasSuffix(l, ` "Sent"`) {
				t.Errorf("LIST %s *: %q", q, u)
			}
		}
	}

	// Every UID and sequence number alice can name is her own.
	for _, box := range []string{"INBOX", "Sent"} {
		r.ok("SELECT %s", box)
		for _, cmd := range []string{
			"UID FETCH 1:4294967295 (UID FLAGS BODY.PEEK[] BODY.PEEK[HEADER] BINARY.PEEK[1] ENVELOPE)",
			"FETCH 1:* (BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[2] BODYSTRUCTURE)",
			"UID FETCH 2 (BODY.PEEK[])", "UID FETCH 4 (BODY.PEEK[])", "UID FETCH 0:* (BODY.PEEK[])",
			"UID SEARCH TEXT SECRET-BOB", "SEARCH OR BODY SECRET-BOB SUBJECT SECRET", "UID SEARCH UID 1:*",
			`UID STORE 1:4294967295 +FLAGS (\Answered)`, `UID STORE 2:9 -FLAGS (\Flagged)`,
			"UID COPY 1:* INBOX", "UID MOVE 2 bob", "UID EXPUNGE 1:*",
		} {
			u, _ := r.cmd("%s", cmd)
			if strings.Contains(strings.Join(u, " "), "SECRET") {
				t.Errorf("%s in %s leaked: %q", cmd, box, u)
			}
			if strings.HasPrefix(cmd, "UID SEARCH TEXT") && !slices.Equal(u, []string{"* SEARCH"}) {
				t.Errorf("%s: %q", cmd, u)
			}
		}
	}
	// Bob's view is untouched: his flags, his messages.
	ctx := context.Background()
	if fl, _ := f.store.Flags(ctx, "bob", 2); !slices.Equal(fl, []string{`\Flagged`}) {
		t.Errorf("bob's flags on UID 2: %v", fl)
	}
	if fl, _ := f.store.Flags(ctx, "bob", 1); len(fl) != 0 {
		t.Errorf("bob's flags on UID 1 (shared with alice): %v", fl)
	}
	ms, _ := f.store.Messages(ctx, "bob")
	sent, _ := f.store.Messages(ctx, "bob/Sent")
	if len(ms) != 2 || len(sent) != 1 {
		t.Errorf("bob's mailboxes: %d, %d messages", len(ms), len(sent))
	}
	if info, _ := f.j.Mailbox(ctx, "alice/Sent"); info.Messages != 0 {
		t.Errorf("alice/Sent: %+v", info)
	}
}

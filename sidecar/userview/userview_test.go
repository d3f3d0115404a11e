package userview_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

func open(t *testing.T, dir string) *badgerjournal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(dir, badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func add(t *testing.T, j journal.Journal, n int, mailboxes ...string) {
	t.Helper()
	var rcpts []journal.Recipient
	for _, m := range mailboxes {
		rcpts = append(rcpts, journal.Recipient{Address: m + "@example.com", Mailboxes: []string{m}, State: journal.StateMTA})
	}
	msg := fmt.Sprintf("From: x@example.org\r\nTo: %s\r\nSubject: test %d\r\nMessage-ID: <%d.%s@test>\r\n\r\nbody %d\r\n",
		strings.Join(mailboxes, ", "), n, n, strings.Join(mailboxes, "."), n)
	if _, err := j.Append(context.Background(), journal.Envelope{MailFrom: "x@example.org", Recipients: rcpts}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
}

func uids(ms []userview.Message) []uint32 {
	var out []uint32
	for _, m := range ms {
		out = append(out, m.UID)
	}
	return out
}

func TestView(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j := open(t, dir)
	for i := 1; i <= 3; i++ {
		add(t, j, i, "alice", "bob")
	}
	add(t, j, 4, "a/b") // a name with a slash must not leak into mailbox "a"
	add(t, j, 5, "a")
	s := userview.New(j)

	ms, err := s.Messages(ctx, "alice")
	if err != nil || !slices.Equal(uids(ms), []uint32{1, 2, 3}) {
		t.Fatalf("Messages = %v, %v", uids(ms), err)
	}
	if ms, err := s.Messages(ctx, "nobody"); err != nil || len(ms) != 0 {
		t.Fatalf("unknown mailbox: %v, %v", ms, err)
	}

	got, err := s.AddFlags(ctx, "alice", 2, []string{"$Label1", `\seen`, `\Flagged`, `\SEEN`})
	if err != nil || !slices.Equal(got, []string{`\Seen`, `\Flagged`, "$Label1"}) {
		t.Fatalf("AddFlags = %q, %v", got, err)
	}
	got, err = s.RemoveFlags(ctx, "alice", 2, []string{`\flagged`})
	if err != nil || !slices.Equal(got, []string{`\Seen`, "$Label1"}) {
		t.Fatalf("RemoveFlags = %q, %v", got, err)
	}
	if _, err := s.AddFlags(ctx, "alice", 2, []string{`\Recent`}); !errors.Is(err, userview.ErrBadFlag) {
		t.Fatalf("\\Recent: %v", err)
	}
	if _, err := s.AddFlags(ctx, "alice", 2, []string{"a b"}); !errors.Is(err, userview.ErrBadFlag) {
		t.Fatalf("bad keyword: %v", err)
	}
	if _, err := s.AddFlags(ctx, "alice", 99, []string{`\Seen`}); !errors.Is(err, userview.ErrNoMessage) {
		t.Fatalf("unknown uid: %v", err)
	}
	if _, err := s.AddFlags(ctx, "alice", 4, []string{`\Seen`}); !errors.Is(err, userview.ErrNoMessage) {
		t.Fatalf("uid of another mailbox: %v", err)
	}

	if err := s.Hide(ctx, "alice", 1, 3, 99); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Flags(ctx, "alice", 1); !errors.Is(err, userview.ErrNoMessage) {
		t.Fatalf("Flags of hidden: %v", err)
	}
	if _, err := s.SetFlags(ctx, "alice", 3, []string{`\Seen`}); !errors.Is(err, userview.ErrNoMessage) {
		t.Fatalf("SetFlags of hidden: %v", err)
	}
	ms, _ = s.Messages(ctx, "alice")
	if !slices.Equal(uids(ms), []uint32{2}) || !slices.Equal(ms[0].Flags, []string{`\Seen`, "$Label1"}) {
		t.Fatalf("after Hide: %+v", ms)
	}
	// Bob's view is his own.
	if ms, _ := s.Messages(ctx, "bob"); !slices.Equal(uids(ms), []uint32{1, 2, 3}) || ms[1].Flags != nil {
		t.Fatalf("bob: %+v", ms)
	}
	if err := s.Hide(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	if ms, _ := s.Messages(ctx, "a/b"); len(ms) != 1 {
		t.Fatalf("a/b: %+v", ms)
	}
	// SetFlags to nothing deletes the key.
	if got, err := s.SetFlags(ctx, "alice", 2, nil); err != nil || got != nil {
		t.Fatalf("SetFlags(nil) = %q, %v", got, err)
	}
	n := 0
	j.Controls(ctx, "view/alice/", func(k string, v []byte) error { n++; return nil })
	if n != 2 {
		t.Fatalf("%d keys for alice, want 2 (the hidden ones)", n)
	}

	// Durable: survives a reopen.
	s.AddFlags(ctx, "bob", 1, []string{`\Answered`})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir)
	defer j.Close()
	s = userview.New(j)
	if ms, _ := s.Messages(ctx, "alice"); !slices.Equal(uids(ms), []uint32{2}) {
		t.Fatalf("after reopen: %v", uids(ms))
	}
	if f, err := s.Flags(ctx, "bob", 1); err != nil || !slices.Equal(f, []string{`\Answered`}) {
		t.Fatalf("bob flags after reopen: %q, %v", f, err)
	}
	if n, err := s.Prune(ctx, "alice"); err != nil || n != 0 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
}

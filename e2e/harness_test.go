package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPostfixDovecotBaseline runs the harness without Lifeline: mail sent to
// Postfix arrives once in the right Dovecot mailboxes, with a +detail
// recipient and an alias of two members.
func TestPostfixDovecotBaseline(t *testing.T) {
	requireE2E(t)
	env := Start(t, Options{
		Users:   []string{"alice", "bob", "carol"},
		Aliases: map[string][]string{"sales@" + DefaultDomain: {"bob@" + DefaultDomain, "carol@" + DefaultDomain}},
	})
	ctx := context.Background()
	l := NewLedger()
	send := func(to []string, boxes ...string) {
		t.Helper()
		id := l.NewID()
		msg := fmt.Sprintf("From: s@example.net\nTo: %s\nSubject: %s\n\nbody\n", to[0], id)
		if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "s@example.net", To: to, Data: WithTestID(id, []byte(msg))}); err != nil {
			t.Fatal(err)
		}
		l.Expect(id, boxes...)
	}
	send([]string{env.Addr("alice")}, env.Addr("alice"))
	send([]string{env.Addr("alice+news")}, env.Addr("alice"))
	send([]string{env.Addr("sales")}, env.Addr("bob"), env.Addr("carol"))
	send([]string{env.Addr("alice"), env.Addr("bob")}, env.Addr("alice"), env.Addr("bob"))
	r := env.WaitDelivered(t, l, time.Minute)
	t.Logf("%s", r)
}

// TestPostfixRestartWithBogusIncoming restarts Postfix with a half-written
// file left in incoming/ (what an smtpd killed mid-message leaves behind):
// postsuper, run by postfix start as mail_owner, logs a warning about it to
// maillog_file, and must be able to (CI once saw postfix start fail here).
func TestPostfixRestartWithBogusIncoming(t *testing.T) {
	requireE2E(t)
	env := Start(t, Options{Users: []string{"alice"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bogus := filepath.Join(env.Postfix.QueueDir, "incoming", "481977.7324")
	if err := os.WriteFile(bogus, []byte("half a message"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RestartPostfix(ctx, env.Postfix); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(env.Postfix.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "bogus file name") {
		t.Errorf("postsuper's warning about %s is not in %s", bogus, env.Postfix.LogPath)
	}
	l := NewLedger()
	id := l.NewID()
	msg := fmt.Sprintf("From: s@example.net\nTo: %s\nSubject: %s\n\nbody\n", env.Addr("alice"), id)
	if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "s@example.net", To: []string{env.Addr("alice")}, Data: WithTestID(id, []byte(msg))}); err != nil {
		t.Fatal(err)
	}
	l.Expect(id, env.Addr("alice"))
	env.WaitDelivered(t, l, time.Minute)
}

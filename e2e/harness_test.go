package e2e

import (
	"context"
	"fmt"
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

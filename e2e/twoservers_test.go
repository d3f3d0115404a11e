package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestTwoMailboxServers checks the harness's second mailbox server: Postfix
// routes each domain to its own Dovecot (transport_maps), Lifeline's config
// has a [[server]] for each, and mail to both arrives once in the right one.
func TestTwoMailboxServers(t *testing.T) {
	requireE2E(t)
	env := Start(t, Options{Milter: true, Users: []string{"alice", "bob"}, SecondDomain: secondDomain, SecondUsers: []string{"dave"}})
	if env.Dovecot2 == nil || env.Dovecot2.LMTPAddr == env.Dovecot.LMTPAddr {
		t.Fatalf("no second Dovecot")
	}
	ctx := context.Background()
	l := NewLedger()
	for i, to := range [][]string{
		{env.Addr("alice")},
		{"dave@" + secondDomain},
		{env.Addr("bob"), "dave@" + secondDomain},
	} {
		id := l.NewID()
		msg := fmt.Sprintf("From: s@example.net\nSubject: %d\n\nbody\n", i)
		if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "s@example.net", To: to, Data: WithTestID(id, []byte(msg))}); err != nil {
			t.Fatal(err)
		}
		l.Expect(id, to...)
	}
	r := env.WaitDelivered(t, l, time.Minute)
	t.Logf("%s", r)
	// Each mailbox lives in its own Dovecot's mail root.
	if n, err := CountMaildir(env.Dovecot2.Maildir("dave@" + secondDomain)); err != nil || n != 2 {
		t.Errorf("second Dovecot holds %d messages for dave (%v), want 2", n, err)
	}
	if n, err := CountMaildir(env.Dovecot.Maildir("dave@" + secondDomain)); err != nil || n != 0 {
		t.Errorf("first Dovecot holds %d messages for dave (%v), want 0", n, err)
	}
}

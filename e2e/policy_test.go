package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPolicyService: Postfix with check_policy_service pointing at
// Lifeline's [policy] listener, as contrib/postfix/main.cf has it.
//   - During an (operator) outage of Dovecot, a recipient Postfix knows but
//     Lifeline does not (not in known_recipients_file, no passwd-file, no
//     alias) is rejected at RCPT TO with 550 5.1.1, and a known one is
//     accepted and taken into custody (held: not in Dovecot, not in Postfix's
//     queue; Lifeline's backlog counts it).
//   - With the journal unable to take custody (defer_above below the disk's
//     current fill level), the known recipient gets 4xx at RCPT TO.
//   - With Lifeline stopped, default_action=DUNNO lets mail through to
//     Dovecot.
func TestPolicyService(t *testing.T) {
	requireE2E(t)
	policyAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	known := filepath.Join(t.TempDir(), "known-recipients")
	if err := os.WriteFile(known, []byte("# Lifeline's known mailboxes\nalice@"+DefaultDomain+"\nbob@"+DefaultDomain+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	oo := OutageOptions{Interval: "200ms", FailAfter: 3, RecoverAfter: 2}
	env := Start(t, Options{
		Milter: true,
		// carol is a mailbox to Postfix and Dovecot, but not to Lifeline.
		Users: []string{"alice", "bob", "carol"},
		Lifeline: LifelineOptions{Outage: &oo, ExtraTOML: fmt.Sprintf(
			"[policy]\nlisten = %q\nknown_recipients_file = %q\ndefer_above = \"100%%\"\n", "tcp:"+policyAddr, known)},
		Postfix: PostfixOptions{Main: map[string]string{
			// First in the list: the test's client is in mynetworks, which
			// contrib's permit_mynetworks would let through unchecked.
			"smtpd_recipient_restrictions": "check_policy_service { inet:" + policyAddr + ", default_action=DUNNO, timeout=10s }",
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := env.Lifeline
	alice, carol := env.Addr("alice"), env.Addr("carol")
	ledger := NewLedger()
	send := func(to ...string) (string, error) {
		id := ledger.NewID()
		msg := fmt.Sprintf("From: sender@remote.test\r\nTo: %s\r\nSubject: policy %s\r\nMessage-ID: <%s@remote.test>\r\n\r\nbody\r\n",
			strings.Join(to, ", "), id, id)
		_, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "sender@remote.test", To: to, Data: WithTestID(id, []byte(msg))})
		return id, err
	}
	rcptCode := func(err error) int {
		var se *SMTPError
		if errors.As(err, &se) && strings.HasPrefix(se.Stage, "RCPT") {
			return se.Code
		}
		return 0
	}

	// Normal: the policy says DUNNO, everyone gets mail.
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{alice, carol} {
		id, err := send(to)
		if err != nil {
			t.Fatalf("normal, %s: %v", to, err)
		}
		ledger.Expect(id, to)
	}
	if r, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil || !r.OK() {
		t.Fatalf("normal delivery: %v %v", r, err)
	}

	// Outage: carol is refused at RCPT TO, alice is taken into custody.
	if err := l.OutageStart(ctx, PrimaryServer, "e2e policy"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err := send(carol)
	if rcptCode(err) != 550 || !strings.HasSuffix(err.Error(), ": 550 5.1.1 <"+carol+">: Recipient address rejected: unknown mailbox") {
		t.Fatalf("unknown recipient in an outage: %v, want 550 5.1.1 at RCPT", err)
	}
	t.Logf("unknown recipient: %v", err)
	held, err := send(alice)
	if err != nil {
		t.Fatalf("known recipient in an outage: %v", err)
	}
	if _, err := l.WaitStatus(ctx, PrimaryServer, 30*time.Second, func(s ServerStatus) bool { return s.Backlog == 1 }); err != nil {
		t.Fatalf("custody backlog: %v", err)
	}
	if err := env.Postfix.WaitQueueEmpty(ctx, time.Minute); err != nil {
		t.Fatalf("custody mail must not stay in Postfix's queue: %v", err)
	}
	msgs, err := NewMaildirs(env.Dovecot).Messages(alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msgs[held]; ok {
		t.Errorf("%s reached Dovecot during the outage", held)
	}

	// The journal cannot take custody: 4xx at RCPT TO for the known
	// recipient (the unknown one is still refused for good).
	cfg, err := os.ReadFile(l.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	low := strings.Replace(string(cfg), `defer_above = "100%"`, `defer_above = "0.001%"`, 1)
	if low == string(cfg) {
		t.Fatal("defer_above not in the config")
	}
	writeFile(t, l.ConfigPath, low, 0o644)
	l.Restart(t)
	if _, _, err := l.WaitOutage(ctx, PrimaryServer, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err = send(alice)
	if c := rcptCode(err); c/100 != 4 || !strings.Contains(err.Error(), "Lifeline cannot take custody now") {
		t.Fatalf("journal full: %v, want 4xx at RCPT", err)
	}
	t.Logf("journal full: %v", err)

	// Lifeline stopped: Postfix's default_action=DUNNO (and the milter's
	// default_action=accept) let mail through to Dovecot, carol included.
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{alice, carol} {
		id, err := send(to)
		if err != nil {
			t.Fatalf("Lifeline stopped, %s: %v", to, err)
		}
		ledger.Expect(id, to)
	}
	if r, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil || !r.OK() {
		t.Fatalf("delivery with Lifeline stopped: %v %v", r, err)
	}
}

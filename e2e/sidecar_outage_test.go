package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/lifelinemail/lifeline/sidecar/serving"
)

// TestSidecarServeOutage runs the IMAP and POP3 servers with Lifeline's
// default serve mode ("outage"): while Dovecot is up a login is refused with
// a text that says why; once Dovecot is stopped and the outage declared the
// same login works and shows the mail journaled before the outage and the
// mail taken into custody during it, with the journal's bytes; after
// recovery logins are refused again.
func TestSidecarServeOutage(t *testing.T) {
	requireE2E(t)
	alice := qualify("alice", DefaultDomain)
	const password = "alice-Secret-1"
	env := Start(t, Options{
		Milter: true,
		Users:  []string{"alice"},
		Lifeline: LifelineOptions{
			Outage:  &OutageOptions{},
			Sidecar: &SidecarOptions{Users: map[string]string{alice: password}}, // serve left to its default
		},
	})
	ll := env.Lifeline
	ctx := context.Background()
	if _, _, err := ll.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	send := func(id, subject string) {
		t.Helper()
		data := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\nDate: %s\nFrom: sender@example.net\nTo: %s\nSubject: %s\n\n%s: message %s\n",
			id, time.Now().Format(time.RFC1123Z), alice, subject, subject, id)
		if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "sender@example.net", To: []string{alice}, Data: WithTestID(id, []byte(data))}); err != nil {
			t.Fatalf("sending %s: %v", id, err)
		}
	}
	ledger := NewLedger()
	before := ledger.NewID()
	send(before, "before the outage")
	ledger.Expect(before, alice)
	if _, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil {
		t.Fatal(err)
	}

	// Dovecot is up: both protocols refuse, saying why.
	refused := func(when string) {
		t.Helper()
		c, err := IMAPLogin(ll.IMAPAddr, nil, alice, password)
		var ierr *imap.Error
		switch {
		case err == nil:
			c.Close()
			t.Errorf("%s: IMAP LOGIN worked; serve = \"outage\" must refuse it while the mailbox server is up", when)
		case !errors.As(err, &ierr) || ierr.Type != imap.StatusResponseTypeNo || !strings.Contains(ierr.Text, serving.TextServerUp):
			t.Errorf("%s: IMAP LOGIN: %v; want NO %q", when, err, serving.TextServerUp)
		default:
			t.Logf("%s: IMAP LOGIN refused: %v", when, err)
		}
		r, err := POP3Login(ll.POP3Addr, alice, password)
		switch {
		case err != nil:
			t.Errorf("%s: POP3: %v", when, err)
		case r == "":
			t.Errorf("%s: POP3 USER/PASS worked; serve = \"outage\" must refuse it while the mailbox server is up", when)
		case !strings.HasPrefix(r, "-ERR ") || !strings.Contains(r, serving.TextServerUp):
			t.Errorf("%s: POP3 refusal %q; want -ERR %q", when, r, serving.TextServerUp)
		default:
			t.Logf("%s: POP3 login refused: %s", when, r)
		}
	}
	refused("Dovecot up")

	// The outage: Dovecot stops, the probes declare it, and new mail for
	// alice goes into Lifeline's custody.
	if err := env.Dovecot.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ll.WaitOutage(ctx, PrimaryServer, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	during := ledger.NewID()
	send(during, "during the outage")
	if st, err := ll.WaitStatus(ctx, PrimaryServer, 30*time.Second, func(s ServerStatus) bool { return s.Backlog >= 1 }); err != nil {
		t.Fatalf("the message sent during the outage is not in custody: %v", err)
	} else {
		t.Logf("status during the outage: %s", st)
	}

	// Now alice logs in and finds both messages, bytes as journaled.
	// Serving follows the outage state within a probe round: poll.
	got := map[string][]byte{}
	err := Poll(ctx, 30*time.Second, func() (bool, error) {
		cl, err := IMAPLogin(ll.IMAPAddr, nil, alice, password)
		if err != nil {
			return false, err
		}
		defer cl.Close()
		sel, err := cl.Select("INBOX", nil).Wait()
		if err != nil {
			return true, fmt.Errorf("SELECT INBOX: %w", err)
		}
		n, err := IMAPFetchBodies(cl, AllUIDs, func(_ imap.UID, body io.Reader) error {
			b, err := io.ReadAll(body)
			got[TestIDOfBytes(b)] = b
			return err
		})
		t.Logf("IMAP during the outage: SELECT INBOX: %d messages, UIDNEXT %d; UID FETCH 1:* returned %d bodies", sel.NumMessages, sel.UIDNext, n)
		return true, errors.Join(err, cl.Logout().Wait())
	})
	if err != nil {
		t.Fatalf("IMAP during the outage: %v", err)
	}
	for _, id := range []string{before, during} {
		if _, ok := got[id]; !ok {
			t.Errorf("IMAP during the outage: message %s is not in alice's INBOX (has %d messages)", id, len(got))
		}
	}
	if r, err := POP3Login(ll.POP3Addr, alice, password); err != nil || r != "" {
		t.Errorf("POP3 login during the outage: %q, %v; want it to work", r, err)
	}

	// Recovery: Dovecot back, the outage ends, custody mail is replayed,
	// and the continuity mailbox is closed again.
	env.Dovecot.Restart(t)
	if _, _, err := ll.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ledger.Expect(during, alice)
	if _, err := ll.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if r, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil || !r.OK() {
		t.Errorf("Dovecot after the replay: %v %v", r, err)
	}
	refused("after recovery")

	page, err := ll.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := MetricSum(page, "lifeline_panics_total"); !ok || n != 0 {
		t.Errorf("lifeline_panics_total = %v (exported: %v), want 0", n, ok)
	}
	if err := ll.Stop(); err != nil {
		t.Fatalf("lifeline serve did not stop cleanly: %v", err)
	}
	files, err := ll.ExportEML(ctx, alice, filepath.Join(t.TempDir(), "export"))
	if err != nil {
		t.Fatal(err)
	}
	journal := map[string][]byte{}
	for _, f := range files {
		b := mustRead(t, f)
		journal[TestIDOfBytes(b)] = b
	}
	for id, b := range got {
		if want, ok := journal[id]; !ok {
			t.Errorf("IMAP showed message %q, which the journal's export of %s lacks", id, alice)
		} else if !bytes.Equal(b, want) {
			t.Errorf("IMAP copy of %s differs from the journal: %s", id, describeDiff(b, want))
		}
	}
}

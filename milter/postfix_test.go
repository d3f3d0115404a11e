package milter

import (
	"context"
	"fmt"
	"net/smtp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/e2e"
)

// downResolver maps every recipient of e2e.DefaultDomain to mailbox server
// "down" if its local part starts with "down", else to "up".
type downResolver struct{}

func (downResolver) Resolve(rcpt, _, _ string) ([]string, string) {
	local, domain, _ := strings.Cut(strings.ToLower(rcpt), "@")
	if domain != e2e.DefaultDomain {
		return nil, ""
	}
	local = strings.Trim(local, `"`)
	if strings.HasPrefix(local, "down") {
		return []string{local}, "down"
	}
	return []string{local}, "up"
}

// TestCustodyWithRealPostfix checks the answers against the real Postfix: the
// address form of SMFIR_DELRCPT must match what cleanup_del_rcpt compares
// (custody.go), in mixed case and with a quoted local part, and DISCARD must
// leave nothing in the queue. No mailbox server listens, so whatever Postfix
// keeps stays in its queue, where postqueue -j shows its recipients.
func TestCustodyWithRealPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postfix")
	}
	e2e.Require(t)
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j, Resolver: downResolver{}, Outage: newFakeOutage("down")})
	d := e2e.DefaultDomain
	pf := e2e.StartPostfix(t, e2e.PostfixOptions{
		Users:      []string{"alice@" + d, "down.carol@" + d, "down.q@" + d, "down.dave@" + d},
		LMTPAddr:   fmt.Sprintf("127.0.0.1:%d", e2e.FreePort(t)), // nothing listens: Postfix defers
		MilterAddr: "inet:" + ts.addr,
	})
	t.Cleanup(func() {
		if err := pf.Stop(); err != nil {
			t.Errorf("stopping Postfix: %v", err)
		}
	})

	send := func(id string, rcpts ...string) {
		t.Helper()
		c, err := smtp.Dial(pf.SMTPAddr)
		if err != nil {
			t.Fatalf("dial Postfix: %v", err)
		}
		defer func() { _ = c.Close() }()
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("sender@example.net"); err != nil {
			t.Fatal(err)
		}
		for _, r := range rcpts {
			if err := c.Rcpt(r); err != nil {
				t.Fatalf("RCPT TO:<%s>: %v", r, err)
			}
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(simpleMessage(id, "body\r\n"))); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil { // the 250 (or 4xx) after the milter's answer
			t.Fatalf("end of DATA for %s: %v", id, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	// Mixed: alice stays with Postfix; the two others are taken, given in
	// mixed case and with an (unneeded) quoted local part.
	send("pf-mixed", "alice@"+d, "Down.Carol@Example.TEST", `"down.q"@`+d)
	// All in custody: discarded.
	send("pf-all", "down.dave@"+d)

	ctx := context.Background()
	var queue []e2e.QueueEntry
	err := e2e.Poll(ctx, 10*time.Second, func() (bool, error) {
		q, err := pf.Queue(ctx)
		queue = q
		return len(q) >= 1, err
	})
	if err != nil {
		t.Fatalf("waiting for the queue: %v", err)
	}
	var got []string
	for _, e := range queue {
		for _, r := range e.Recipients {
			got = append(got, r.Address)
		}
	}
	if want := []string{"alice@" + d}; !slices.Equal(got, want) {
		t.Errorf("Postfix queue recipients %q, want %q (%d messages)", got, want, len(queue))
	}

	var states []string
	for _, s := range storedMessages(t, j) {
		for _, r := range s.entry.Envelope.Recipients {
			states = append(states, r.Address+"="+r.State.String())
		}
	}
	want := []string{"alice@" + d + "=mta", "Down.Carol@Example.TEST=custody", `"down.q"@` + d + "=custody", "down.dave@" + d + "=custody"}
	if !slices.Equal(states, want) {
		t.Errorf("journal states %q, want %q", states, want)
	}
}

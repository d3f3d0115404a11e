package replay_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/e2e"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/replay"
)

// The fake LMTP server's behaviour checked against the real thing: replay
// to Dovecot's LMTP delivers to existing mailboxes, fails an unknown one at
// RCPT (550 5.1.1), and one mailbox with several recipients' messages gets
// each once.
func TestReplayToDovecot(t *testing.T) {
	dc := e2e.StartDovecot(t, e2e.DovecotOptions{Users: []string{"alice", "bob"}})
	alice, bob := "alice@"+dc.Domain, "bob@"+dc.Domain
	nobody := "nobody@" + dc.Domain

	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	const n = 20
	var ids []journal.ID
	for i := range n {
		rcpts := []journal.Recipient{
			{Address: alice, Mailboxes: []string{alice}, Server: "dovecot", State: journal.StateCustody},
			{Address: "team@" + dc.Domain, Mailboxes: []string{bob}, Server: "dovecot", State: journal.StateCustody},
		}
		if i == 0 {
			rcpts = append(rcpts, journal.Recipient{Address: nobody, Mailboxes: []string{nobody}, Server: "dovecot", State: journal.StateCustody})
		}
		msg := fmt.Sprintf("From: s@example.org\r\nTo: %s\r\nSubject: replay %d\r\nMessage-ID: <replay-%d@example.org>\r\n\r\nbody %d\r\n", alice, i, i, i)
		res, err := j.Append(ctx, journal.Envelope{MailFrom: "s@example.org", Recipients: rcpts, Received: time.Now()}, strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}

	r, err := replay.New(replay.Options{
		Journal: j,
		Servers: []replay.Server{{Name: "dovecot", Network: "tcp", Address: dc.LMTPAddr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx) }()
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := r.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		p := r.Progress()[0]
		if p.Backlog == 0 && !p.Running && p.Delivered > 0 {
			if p.Delivered != 2*n || p.Failed != 1 {
				t.Errorf("progress %+v, want %d delivered, 1 failed", p, 2*n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replay did not finish: %+v", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e, err := j.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if rc := e.Envelope.Recipients[2]; rc.State != journal.StateFailed || !strings.HasPrefix(rc.LastReply, "550 5.1.1") {
		t.Errorf("unknown user: %v %q", rc.State, rc.LastReply)
	}
	if rc := e.Envelope.Recipients[0]; rc.State != journal.StateDelivered || !strings.HasPrefix(rc.LastReply, "250 2.0.0") {
		t.Errorf("alice: %v %q", rc.State, rc.LastReply)
	}
	for _, mb := range []string{alice, bob} {
		if got := countMaildir(t, dc.Maildir(mb)); got != n {
			t.Errorf("%s has %d messages, want %d", mb, got, n)
		}
	}
}

func countMaildir(t *testing.T, dir string) int {
	t.Helper()
	total := 0
	for _, sub := range []string{"new", "cur"} {
		es, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		total += len(es)
	}
	return total
}

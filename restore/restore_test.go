package restore_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/e2e"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/replay"
	"github.com/lifelinemail/lifeline/restore"
)

func TestTarget(t *testing.T) {
	for _, tc := range []struct{ mailbox, folder, delim, want string }{
		{"alice@x.test", "", "+", "alice@x.test"},
		{"alice@x.test", "restored", "+", "alice+restored@x.test"},
		{"alice@x.test", "restored", "-+", "alice-restored@x.test"},
	} {
		got, err := restore.Target(tc.mailbox, tc.folder, tc.delim)
		if err != nil || got != tc.want {
			t.Errorf("Target(%q, %q) = %q, %v; want %q", tc.mailbox, tc.folder, got, err, tc.want)
		}
	}
	for _, folder := range []string{"a b", "x@y", "<x>"} {
		if _, err := restore.Target("alice@x.test", folder, "+"); err == nil {
			t.Errorf("folder %q accepted", folder)
		}
	}
}

type lmtp struct{ d *replay.Deliverer }

func (l lmtp) DeliverOne(ctx context.Context, from, rcpt string, body io.Reader) (int, string, error) {
	rs, err := l.d.Deliver(ctx, from, []string{rcpt}, body)
	if err != nil {
		return 0, "", err
	}
	return rs[0].Code, rs[0].String(), nil
}

// TestRestoreToDovecot restores a time range of one mailbox into a folder of a
// real Dovecot over LMTP (lmtp_save_to_detail_mailbox), and checks that exactly
// the selected messages arrive there, whatever their delivery state.
func TestRestoreToDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dovecot")
	}
	d := e2e.StartDovecot(t, e2e.DovecotOptions{Users: []string{"alice", "bob"}})
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	ctx := t.Context()
	alice, bob := "alice@"+d.Domain, "bob@"+d.Domain
	base := time.Now().Add(-72 * time.Hour).Truncate(time.Second)
	states := []journal.State{journal.StateMTA, journal.StateDelivered, journal.StateCustody, journal.StateMTA}
	for i, st := range states {
		env := journal.Envelope{MailFrom: "s@example.org", Received: base.Add(time.Duration(i) * 24 * time.Hour), Source: "milter",
			Recipients: []journal.Recipient{{Address: alice, Mailboxes: []string{alice}, Server: "dc", State: journal.StateMTA}}}
		if st == journal.StateCustody {
			env.Recipients[0].State = st
		}
		msg := fmt.Sprintf("From: s@example.org\r\nTo: %s\r\nSubject: day %d\r\nMessage-ID: <day%d@example.org>\r\n\r\nbody %d\r\n", alice, i, i, i)
		if _, err := j.Append(ctx, env, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	other := journal.Envelope{MailFrom: "s@example.org", Received: base.Add(24 * time.Hour), Source: "milter",
		Recipients: []journal.Recipient{{Address: bob, Mailboxes: []string{bob}, State: journal.StateMTA}}}
	if _, err := j.Append(ctx, other, strings.NewReader("Subject: bob's\r\n\r\nnot alice's\r\n")); err != nil {
		t.Fatal(err)
	}

	dl := replay.NewDeliverer(replay.DelivererOptions{Network: "tcp", Address: d.LMTPAddr})
	t.Cleanup(func() { dl.Close() })
	req := restore.Request{Mailbox: alice, Since: base.Add(12 * time.Hour), Until: base.Add(60 * time.Hour), Folder: "restored"}

	dry := req
	dry.DryRun = true
	p, err := restore.Run(ctx, j, lmtp{dl}, dry, "+", nil)
	if err != nil || p.Total != 2 || p.Done != 2 || p.Delivered != 0 {
		t.Fatalf("dry run: %+v, %v", p, err)
	}
	if n := countFiles(t, d.Maildir(alice)); n != 0 {
		t.Fatalf("dry run delivered %d messages", n)
	}

	var calls int
	p, err = restore.Run(ctx, j, lmtp{dl}, req, "+", func(restore.Progress) { calls++ })
	if err != nil || p.Total != 2 || p.Delivered != 2 || p.Failed != 0 {
		t.Fatalf("restore: %+v, %v", p, err)
	}
	if calls != 3 { // the total, then one per message
		t.Errorf("progress called %d times, want 3", calls)
	}
	folder := filepath.Join(d.Maildir(alice), ".restored")
	var subjects []string
	err = e2e.Poll(ctx, 10*time.Second, func() (bool, error) {
		files, err := e2e.MaildirFiles(folder)
		if err != nil {
			return false, err
		}
		subjects = subjects[:0]
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return false, err
			}
			for _, line := range strings.Split(string(b), "\n") {
				if s, ok := strings.CutPrefix(line, "Subject: "); ok {
					subjects = append(subjects, strings.TrimSpace(s))
				}
			}
		}
		return len(files) >= 2, nil
	})
	if err != nil {
		t.Fatalf("restored messages in %s: %v (%q)", folder, err, subjects)
	}
	if strings.Join(subjects, ",") != "day 1,day 2" && strings.Join(subjects, ",") != "day 2,day 1" {
		t.Errorf("restored %q, want day 1 and day 2", subjects)
	}
	if n := countFiles(t, d.Maildir(alice)); n != 2 {
		t.Errorf("alice has %d messages in all, want the 2 restored", n)
	}
	if n := countFiles(t, d.Maildir(bob)); n != 0 {
		t.Errorf("bob got %d messages from alice's restore", n)
	}
	// Restore leaves delivery states alone: the custody recipient is still owed.
	var owed int
	if err := j.Custody(ctx, 0, func(journal.CustodyItem) error { owed++; return nil }); err != nil || owed != 1 {
		t.Errorf("custody after restore: %d, %v", owed, err)
	}

	if _, err := restore.Run(ctx, j, lmtp{dl}, restore.Request{Mailbox: "nobody@" + d.Domain, Since: base}, "+", nil); err == nil {
		t.Error("restore of an unknown mailbox succeeded")
	}
}

func countFiles(t *testing.T, maildir string) int {
	t.Helper()
	files, err := e2e.MaildirFiles(maildir)
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

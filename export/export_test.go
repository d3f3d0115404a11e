package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

func openJournal(t *testing.T) journal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	return j
}

func add(t *testing.T, j journal.Journal, at time.Time, rcpt, msg string) journal.ID {
	t.Helper()
	res, err := j.Append(context.Background(), journal.Envelope{
		MailFrom: "sender@example.org",
		Received: at,
		Recipients: []journal.Recipient{{
			Address: rcpt, Mailboxes: []string{rcpt}, State: journal.StateMTA,
		}},
	}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

var day = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

const tricky = "Subject: from lines\r\n\r\nFrom here on\r\n>From quoted\r\nnot From\r\nlast line without end"

func TestEMLAndFilter(t *testing.T) {
	j := openJournal(t)
	id1 := add(t, j, day, "a@example.com", "Subject: one\r\n\r\nbody one\r\n")
	add(t, j, day.Add(48*time.Hour), "a@example.com", "Subject: two\r\n\r\nbody two\r\n")
	add(t, j, day, "b@example.com", "Subject: other user\r\n\r\nnot for a\r\n")
	dir := t.TempDir()
	n, err := EML(context.Background(), j, Filter{Mailbox: "a@example.com", Until: day.Add(24 * time.Hour)}, dir)
	if err != nil || n != 1 {
		t.Fatalf("EML = %d, %v", n, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, id1.String()+".eml"))
	if err != nil || string(b) != "Subject: one\r\n\r\nbody one\r\n" {
		t.Fatalf("eml = %q, %v", b, err)
	}
	if n, err := EML(context.Background(), j, Filter{Mailbox: "a@example.com", Since: day.Add(time.Hour)}, t.TempDir()); err != nil || n != 1 {
		t.Fatalf("since: %d, %v", n, err)
	}
	if _, err := EML(context.Background(), j, Filter{Mailbox: "nobody@example.com"}, t.TempDir()); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("unknown mailbox: %v", err)
	}
}

// mboxrd quoting: every ^>*From  line gains one '>', so a reader can undo it.
func TestMboxrd(t *testing.T) {
	j := openJournal(t)
	add(t, j, day, "a@example.com", tricky)
	add(t, j, day.Add(time.Minute), "a@example.com", "Subject: 2\r\n\r\nx\r\n")
	var out bytes.Buffer
	n, err := Mbox(context.Background(), j, Filter{Mailbox: "a@example.com"}, &out)
	if err != nil || n != 2 {
		t.Fatalf("Mbox = %d, %v", n, err)
	}
	want := "From sender@example.org Sun Nov  1 12:00:00 2026\n" +
		"Subject: from lines\n\n>From here on\n>>From quoted\nnot From\nlast line without end\n\n" +
		"From sender@example.org Sun Nov  1 12:01:00 2026\nSubject: 2\n\nx\n\n"
	if out.String() != want {
		t.Fatalf("mbox:\n%q\nwant\n%q", out.String(), want)
	}
}

package daemon

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// openTestJournal opens a journal in a temporary directory, closed when the
// test ends.
func openTestJournal(t *testing.T) *badgerjournal.Journal {
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

// A retention sweep also removes the flags users kept for the messages it
// removed, and leaves those of the messages it kept.
func TestSweepPrunesViews(t *testing.T) {
	j := openTestJournal(t)
	ctx := context.Background()
	add := func(age time.Duration, subject string) {
		t.Helper()
		env := journal.Envelope{MailFrom: "s@example.org", Received: time.Now().Add(-age), Recipients: []journal.Recipient{
			{Address: "alice@example.com", Mailboxes: []string{"alice@example.com"}, State: journal.StateMTA},
		}}
		if _, err := j.Append(ctx, env, strings.NewReader("Subject: "+subject+"\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	add(100*24*time.Hour, "old")
	add(time.Hour, "new")
	views := userview.New(j)
	for _, uid := range []uint32{1, 2} {
		if _, err := views.AddFlags(ctx, "alice@example.com", uid, []string{userview.FlagSeen}); err != nil {
			t.Fatal(err)
		}
	}
	keys := func() int {
		n := 0
		if err := j.Controls(ctx, "view/", func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := keys(); n != 2 {
		t.Fatalf("%d view keys before the sweep", n)
	}
	sweepOnce(ctx, j, views, time.Now().Add(-90*24*time.Hour), slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics(prometheus.NewRegistry(), "test"))
	if n := keys(); n != 1 {
		t.Errorf("%d view keys after the sweep, want 1 (the kept message's)", n)
	}
	ms, err := views.Messages(ctx, "alice@example.com")
	if err != nil || len(ms) != 1 || ms[0].UID != 2 || len(ms[0].Flags) != 1 {
		t.Errorf("view after the sweep: %+v %v", ms, err)
	}
}

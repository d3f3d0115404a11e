package badgerjournal

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// Listings read pageSize items per transaction; check that walks longer than
// a page see every item once, in order.
func TestListingsCrossPages(t *testing.T) {
	j, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	const n = 2*pageSize + 17
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := journal.Envelope{MailFrom: "s@example.org", Received: base.Add(time.Duration(i) * time.Second),
				Recipients: []journal.Recipient{
					{Address: "all@example.com", Mailboxes: []string{"all@example.com"}, State: journal.StateCustody},
					{Address: fmt.Sprintf("u%d@example.com", i), Mailboxes: []string{fmt.Sprintf("u%03d@example.com", i)}, State: journal.StateMTA},
				}}
			if _, err := j.Append(ctx, env, strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var uids []uint32
	if err := j.List(ctx, "all@example.com", 1, func(it journal.MailboxItem) error { uids = append(uids, it.UID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(uids) != n {
		t.Fatalf("List: %d items, want %d", len(uids), n)
	}
	for i, u := range uids {
		if u != uint32(i+1) {
			t.Fatalf("List: uid %d at %d", u, i)
		}
	}
	var last time.Time
	scanned := 0
	if err := j.Scan(ctx, time.Time{}, time.Time{}, func(e journal.Entry) error {
		if e.Envelope.Received.Before(last) {
			return fmt.Errorf("scan out of order at %d", scanned)
		}
		last = e.Envelope.Received
		scanned++
		return nil
	}); err != nil || scanned != n {
		t.Fatalf("Scan: %d, %v", scanned, err)
	}
	var names []string
	if err := j.Mailboxes(ctx, func(name string) error { names = append(names, name); return nil }); err != nil || len(names) != n+1 {
		t.Fatalf("Mailboxes: %d, %v", len(names), err)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("Mailboxes out of order: %q, %q", names[i-1], names[i])
		}
	}
	custody := 0
	if err := j.Custody(ctx, 0, func(journal.CustodyItem) error { custody++; return nil }); err != nil || custody != n {
		t.Fatalf("Custody: %d, %v", custody, err)
	}
	// An error from the callback ends the walk and comes back as it is.
	stop := fmt.Errorf("stop")
	calls := 0
	if err := j.List(ctx, "all@example.com", 1, func(journal.MailboxItem) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("List with failing callback: %v after %d calls", err, calls)
	}
}

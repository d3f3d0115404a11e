package milter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

// newTestJournal opens the real Badger journal in a fresh directory.
func newTestJournal(t testing.TB) journal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatalf("opening the journal: %v", err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("closing the journal: %v", err)
		}
	})
	return j
}

// faultJournal wraps a real journal and injects faults into Append: an error,
// a delay, a block until the context ends, a panic, or a hook that sees the
// call; and an error into Get. It is the only fake in these tests and exists for fault injection.
type faultJournal struct {
	journal.Journal

	err      error                                                        // returned instead of appending
	delay    time.Duration                                                // before appending
	block    bool                                                         // wait for ctx to end, return its error
	panicMsg string                                                       // panic with this message
	hook     func(ctx context.Context, env journal.Envelope, r io.Reader) // called first
	getErr   error                                                        // returned by Get instead of reading

	calls   atomic.Int32
	started chan struct{} // closed when the first Append starts, if non-nil
	once    sync.Once
}

func (f *faultJournal) Append(ctx context.Context, env journal.Envelope, r io.Reader) (journal.AppendResult, error) {
	f.calls.Add(1)
	if f.started != nil {
		f.once.Do(func() { close(f.started) })
	}
	if f.hook != nil {
		f.hook(ctx, env, r)
	}
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	if f.block {
		<-ctx.Done()
		return journal.AppendResult{}, ctx.Err()
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return journal.AppendResult{}, ctx.Err()
		}
	}
	if f.err != nil {
		return journal.AppendResult{}, f.err
	}
	return f.Journal.Append(ctx, env, r)
}

func (f *faultJournal) Get(ctx context.Context, id journal.ID) (journal.Entry, error) {
	if f.getErr != nil {
		return journal.Entry{}, f.getErr
	}
	return f.Journal.Get(ctx, id)
}

// stored is one journaled message as read back through the interface.
type stored struct {
	entry journal.Entry
	raw   []byte
}

// storedMessages reads every message back from j in arrival order.
func storedMessages(t testing.TB, j journal.Journal) []stored {
	t.Helper()
	ctx := context.Background()
	var out []stored
	err := j.Scan(ctx, time.Time{}, time.Time{}, func(e journal.Entry) error {
		rc, err := j.Open(ctx, e.ID)
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		out = append(out, stored{entry: e, raw: raw})
		return err
	})
	if err != nil {
		t.Fatalf("reading the journal: %v", err)
	}
	return out
}

// TestFaultJournalPassesThrough checks the fault injector against the journal
// it wraps: without a fault configured it must behave exactly like it.
func TestFaultJournalPassesThrough(t *testing.T) {
	inner := newTestJournal(t)
	f := &faultJournal{Journal: inner}
	env := journal.Envelope{MailFrom: "a@example.org", Recipients: []journal.Recipient{{Address: "b@example.org", State: journal.StateMTA}}, Received: time.Now()}
	res, err := f.Append(context.Background(), env, bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n")))
	if err != nil || res.Duplicate {
		t.Fatalf("Append = %+v, %v", res, err)
	}
	res2, err := f.Append(context.Background(), env, bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n")))
	if err != nil || !res2.Duplicate || res2.ID != res.ID {
		t.Fatalf("second Append = %+v, %v; want duplicate of %v", res2, err, res.ID)
	}
	msgs := storedMessages(t, f)
	if len(msgs) != 1 || string(msgs[0].raw) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("stored %+v", msgs)
	}

	f.err = errors.New("disk on fire")
	if _, err := f.Append(context.Background(), env, bytes.NewReader(nil)); !errors.Is(err, f.err) {
		t.Fatalf("Append with fault = %v, want %v", err, f.err)
	}
}

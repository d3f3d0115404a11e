package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/addrmap"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

func openJournal(t testing.TB) journal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{MinFree: -1})
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

func testResolver() *addrmap.Map {
	return addrmap.New(addrmap.Options{
		Servers:     []addrmap.Server{{Name: "dovecot", Domains: []string{"example.com"}, LMTP: "tcp:127.0.0.1:24"}},
		StripDetail: true,
	})
}

type testServer struct {
	srv  *Server
	addr string
	j    journal.Journal
	reg  *prometheus.Registry
	done chan error
}

// start runs a server on a free loopback port; it is shut down at cleanup.
func start(t testing.TB, opts Options) *testServer {
	t.Helper()
	if opts.Journal == nil {
		opts.Journal = openJournal(t)
	}
	if opts.Resolver == nil {
		opts.Resolver = testResolver()
	}
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), j: opts.Journal, reg: reg, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

// send delivers msg over LMTP with go-smtp's client and returns each
// recipient's reply code (250 for success), or the error before DATA.
func (ts *testServer) send(t testing.TB, from string, rcpts []string, msg string) map[string]int {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(nc)
	defer c.Close() //nolint:errcheck // test client
	if err := c.Hello("mta.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	var accepted []string
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatal(err)
			}
			codes[r] = se.Code
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		return codes
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithLMTPResponse()
	for _, r := range accepted {
		codes[r] = 250
	}
	var le smtp.LMTPDataError
	if err != nil && !errors.As(err, &le) {
		var se *smtp.SMTPError
		if errors.As(err, &se) { // one reply for all (552)
			for _, r := range accepted {
				codes[r] = se.Code
			}
			return codes
		}
		t.Fatal(err)
	}
	for r, se := range le {
		codes[r] = se.Code
	}
	_ = resp
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	return codes
}

// entries returns every journal entry.
func entries(t testing.TB, j journal.Journal) []journal.Entry {
	t.Helper()
	var out []journal.Entry
	if err := j.Scan(context.Background(), time.Time{}, time.Time{}, func(e journal.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func custodyCount(t testing.TB, j journal.Journal) int {
	t.Helper()
	n := 0
	if err := j.Custody(context.Background(), 0, func(journal.CustodyItem) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func counter(t testing.TB, ts *testServer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func message(id string, bodyLines int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender@remote.test\r\nTo: alice@example.com\r\nSubject: test %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n", id, id)
	for i := range bodyLines {
		fmt.Fprintf(&b, "line %d of message %s\r\n", i, id)
	}
	return b.String()
}

// faultyJournal fails Append for envelopes with a recipient in fail.
type faultyJournal struct {
	journal.Journal
	mu   sync.Mutex
	fail map[string]error
}

func (f *faultyJournal) setFail(addr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[string]error{}
	}
	if err == nil {
		delete(f.fail, addr)
		return
	}
	f.fail[addr] = err
}

func (f *faultyJournal) Append(ctx context.Context, env journal.Envelope, r io.Reader) (journal.AppendResult, error) {
	f.mu.Lock()
	var err error
	for _, rc := range env.Recipients {
		if e, ok := f.fail[rc.Address]; ok {
			err = e
		}
		if e, ok := f.fail["*"]; ok {
			err = e
		}
	}
	f.mu.Unlock()
	if err != nil {
		return journal.AppendResult{}, err
	}
	return f.Journal.Append(ctx, env, r)
}

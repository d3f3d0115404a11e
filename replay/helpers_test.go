package replay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/notify"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeLMTP is a fault-injecting LMTP (or SMTP) server built on go-smtp's
// server: each test sets, per recipient, the reply at RCPT and after DATA,
// or makes it drop the connection after DATA without a reply.
type fakeLMTP struct {
	t    testing.TB
	addr string
	srv  *smtp.Server

	mu        sync.Mutex
	rcptReply map[string]*smtp.SMTPError // refused at RCPT
	dataReply map[string]*smtp.SMTPError // reply after DATA; nil = 250
	drop      bool                       // close the connection after DATA, no replies
	delivered map[string]int             // recipient → messages accepted
	bodies    map[string][][]byte
	froms     []string
	conns     int
	txns      int
}

func newFakeLMTP(t testing.TB, lmtp bool) *fakeLMTP {
	t.Helper()
	f := &fakeLMTP{
		t:         t,
		rcptReply: map[string]*smtp.SMTPError{},
		dataReply: map[string]*smtp.SMTPError{},
		delivered: map[string]int{},
		bodies:    map[string][][]byte{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		f.mu.Lock()
		f.conns++
		f.mu.Unlock()
		return &fakeSession{f: f, conn: c}, nil
	}))
	f.srv.LMTP = lmtp
	f.srv.Domain = "mailbox.test"
	f.srv.EnableSMTPUTF8 = true
	f.srv.ErrorLog = discardSMTPLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("fake LMTP server: %v", err)
		}
	}()
	t.Cleanup(func() {
		stopServer(t, f.srv)
		<-done
	})
	return f
}

// stopServer shuts a go-smtp server down gracefully: its Close races with
// a connection still in its greeting (go-smtp v0.25.1 reads Conn.session
// unlocked in handleGreet), and by now every client has hung up anyway.
func stopServer(t testing.TB, srv *smtp.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Logf("shutting down a test server: %v", err)
	}
}

type discardSMTPLog struct{}

func (discardSMTPLog) Printf(string, ...interface{}) {}
func (discardSMTPLog) Println(...interface{})        {}

func (f *fakeLMTP) setData(rcpt string, err *smtp.SMTPError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.dataReply, rcpt)
	} else {
		f.dataReply[rcpt] = err
	}
}

func (f *fakeLMTP) setRcpt(rcpt string, err *smtp.SMTPError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.rcptReply, rcpt)
	} else {
		f.rcptReply[rcpt] = err
	}
}

func (f *fakeLMTP) setDrop(drop bool) {
	f.mu.Lock()
	f.drop = drop
	f.mu.Unlock()
}

func (f *fakeLMTP) count(rcpt string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delivered[rcpt]
}

func (f *fakeLMTP) stats() (conns, txns int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, f.txns
}

type fakeSession struct {
	f     *fakeLMTP
	conn  *smtp.Conn
	from  string
	rcpts []string
}

func (s *fakeSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *fakeSession) Logout() error { return nil }
func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if err := s.f.rcptReply[to]; err != nil {
		return err
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *fakeSession) Data(r io.Reader) error {
	// SMTP: one reply for all; the first configured error wins.
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.txns++
	for _, rc := range s.rcpts {
		if e := s.f.dataReply[rc]; e != nil {
			return e
		}
	}
	for _, rc := range s.rcpts {
		s.f.delivered[rc]++
		s.f.bodies[rc] = append(s.f.bodies[rc], body)
	}
	s.f.froms = append(s.f.froms, s.from)
	return nil
}

func (s *fakeSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.txns++
	if s.f.drop {
		// The fault: the server dies after the final dot, before any reply.
		if err := s.conn.Conn().Close(); err != nil {
			s.f.t.Logf("dropping connection: %v", err)
		}
		return errors.New("dropped")
	}
	s.f.froms = append(s.f.froms, s.from)
	for _, rc := range s.rcpts {
		e := s.f.dataReply[rc]
		if e == nil {
			s.f.delivered[rc]++
			s.f.bodies[rc] = append(s.f.bodies[rc], body)
			status.SetStatus(rc, nil)
		} else {
			status.SetStatus(rc, e)
		}
	}
	return nil
}

// captured is one message a capture server received.
type captured struct {
	from string
	to   []string
	data []byte
}

// captureSMTP is an SMTP server that records every message (for DSNs and
// notification mail).
type captureSMTP struct {
	addr string
	mu   sync.Mutex
	msgs []captured
}

func newCaptureSMTP(t *testing.T) *captureSMTP {
	t.Helper()
	c := &captureSMTP{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &captureSession{c: c}, nil
	}))
	srv.Domain = "mta.test"
	srv.ErrorLog = discardSMTPLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		stopServer(t, srv)
		<-done
	})
	return c
}

func (c *captureSMTP) messages() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.msgs...)
}

type captureSession struct {
	c    *captureSMTP
	from string
	to   []string
}

func (s *captureSession) Reset()        { s.from, s.to = "", nil }
func (s *captureSession) Logout() error { return nil }
func (s *captureSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *captureSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *captureSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.c.mu.Lock()
	s.c.msgs = append(s.c.msgs, captured{from: s.from, to: append([]string(nil), s.to...), data: b})
	s.c.mu.Unlock()
	return nil
}

// switchOutage is an Outage a test flips.
type switchOutage struct{ on atomic.Bool }

func (o *switchOutage) InOutage(string) bool { return o.on.Load() }

// testClock is a clock a test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// events records what a Notifier was told.
type events struct {
	mu  sync.Mutex
	evs []notify.Event
}

func (e *events) Notify(_ context.Context, ev notify.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) kinds(kind string) []notify.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []notify.Event
	for _, ev := range e.evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("REPLAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openJournal(t testing.TB, dir string) *badgerjournal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(dir, badgerjournal.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	return j
}

// newJournal opens a journal in a fresh directory, closed at the end.
func newJournal(t *testing.T) *badgerjournal.Journal {
	t.Helper()
	j := openJournal(t, t.TempDir())
	t.Cleanup(func() {
		if err := j.Close(); err != nil && !errors.Is(err, journal.ErrClosed) {
			t.Errorf("close journal: %v", err)
		}
	})
	return j
}

// custody builds a custody recipient for server "mbx" whose mailbox is its
// address.
func custody(addr string, mailboxes ...string) journal.Recipient {
	if len(mailboxes) == 0 {
		mailboxes = []string{addr}
	}
	return journal.Recipient{Address: addr, Mailboxes: mailboxes, Server: "mbx", State: journal.StateCustody}
}

func message(tag string) string {
	return "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: message " + tag +
		"\r\nMessage-ID: <" + tag + "@example.org>\r\n\r\nThis is message " + tag + ".\r\n"
}

func appendMsg(t *testing.T, j journal.Journal, from, tag string, received time.Time, rcpts ...journal.Recipient) journal.ID {
	t.Helper()
	env := journal.Envelope{MailFrom: from, Recipients: rcpts, Received: received, Source: "milter", QueueID: "Q" + tag}
	res, err := j.Append(context.Background(), env, strings.NewReader(message(tag)))
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return res.ID
}

func getEntry(t *testing.T, j journal.Journal, id journal.ID) journal.Entry {
	t.Helper()
	e, err := j.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return e
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rcptState waits until recipient rcpt of id is in state want.
func waitState(t *testing.T, j journal.Journal, id journal.ID, rcpt int, want journal.State) journal.Recipient {
	t.Helper()
	var rc journal.Recipient
	eventually(t, "recipient "+want.String(), func() bool {
		rc = getEntry(t, j, id).Envelope.Recipients[rcpt]
		return rc.State == want
	})
	return rc
}

// startReplayer starts a Replayer with opts, shut down at the end of the test.
func startReplayer(t *testing.T, opts Options) *Replayer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	opts.Hostname = "lifeline.test"
	r, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(context.Background()) }()
	t.Cleanup(func() { stopReplayer(t, r, errc) })
	return r
}

func stopReplayer(t *testing.T, r *Replayer, errc chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	default:
	}
}

func lmtpServer(f *fakeLMTP) []Server {
	return []Server{{Name: "mbx", Network: "tcp", Address: f.addr}}
}

// counter reads a counter or gauge from a registry.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

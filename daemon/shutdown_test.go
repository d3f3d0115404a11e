package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/journal"
)

// A milter message in flight uses up the whole grace at shutdown. Replay must
// stop dispatching when shutdown begins and still get time of its own for the
// transaction in flight: before, it kept dispatching during the milter's
// grace and then got the used-up context, so the transaction it had started
// meanwhile was cut after the final dot — the server took the message, the
// journal recorded retrying, and it would be delivered again after the
// restart.
func TestShutdownReplayDrainsBesideMilter(t *testing.T) {
	const grace = 2 * time.Second
	lmtp := newSlowLMTP(t, 1200*time.Millisecond)
	dir := t.TempDir()
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg := adminConfig(t, dir, milterAddr, httpAddr, fmt.Sprintf(`
[[server]]
name = "dc"
domains = ["dc.test"]
lmtp = "tcp:%s"
  [[server.probe]]
  type = "tcp"
  address = "tcp:%s"
[replay]
concurrency = 1
retry_min = "1s"
retry_max = "2s"
`, lmtp.addr, lmtp.addr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", Ready: ready, Grace: grace})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	api := admin.NewClient(httpAddr, "t0ken")
	if _, err := api.StartOutage(ctx, "dc", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if act, _ := sendMilter(t, milterAddr, fmt.Sprint("d", i), "u@dc.test"); act.Type != gomilter.ActionDiscard {
			t.Fatalf("message %d: %v, want DISCARD", i, act)
		}
	}
	// A message the MTA has begun and not finished: the milter waits for it
	// for the whole grace.
	sess, err := gomilter.NewClient("tcp", milterAddr, gomilter.WithAction(gomilter.AllClientSupportedActionMasks)).Session(gomilter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if _, err := sess.Conn("mx.example.net", gomilter.FamilyInet, 1234, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Helo("mx.example.net"); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Mail("s@example.org", ""); err != nil {
		t.Fatal(err)
	}

	if _, err := api.EndOutage(ctx, "dc"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lmtp.dataSeen:
	case <-time.After(20 * time.Second):
		t.Fatal("replay did not start")
	}
	cancel() // shutdown while the first transaction waits for its reply
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(4 * grace):
		t.Fatal("Run did not return")
	}

	j, err := OpenJournal(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	left, retrying := 0, 0
	if err := j.Custody(context.Background(), 0, func(it journal.CustodyItem) error {
		left++
		if it.State == journal.StateRetrying {
			retrying++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	taken := lmtp.accepted()
	if retrying != 0 || taken+left != 3 {
		t.Errorf("the server took %d messages, %d are left in custody (%d retrying): want every message either delivered or untouched", taken, left, retrying)
	}
	if taken != 1 {
		t.Errorf("the server took %d messages, want 1: dispatching goes on during shutdown", taken)
	}
}

// slowLMTP is a fault-injecting LMTP server: it takes each message at the
// final dot (counted) and answers only after delay.
type slowLMTP struct {
	addr     string
	delay    time.Duration
	dataSeen chan struct{} // closed at the first final dot
	once     sync.Once
	mu       sync.Mutex
	n        int
}

func newSlowLMTP(t *testing.T, delay time.Duration) *slowLMTP {
	t.Helper()
	l := &slowLMTP{delay: delay, dataSeen: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &slowSess{l: l}, nil }))
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	srv.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("slow LMTP close: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("slow LMTP: %v", err)
		}
	})
	return l
}

func (l *slowLMTP) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

type slowSess struct {
	l  *slowLMTP
	to []string
}

func (s *slowSess) Reset()                                    { s.to = nil }
func (s *slowSess) Logout() error                             { return nil }
func (s *slowSess) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *slowSess) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *slowSess) Data(io.Reader) error                      { return errors.New("LMTP only") }

func (s *slowSess) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	// The message is the server's now (RFC 2033 §4.2: the replies follow
	// the final dot); the client learns it only after delay.
	s.l.mu.Lock()
	s.l.n++
	s.l.mu.Unlock()
	s.l.once.Do(func() { close(s.l.dataSeen) })
	time.Sleep(s.l.delay)
	for _, rc := range s.to {
		status.SetStatus(rc, nil)
	}
	return nil
}

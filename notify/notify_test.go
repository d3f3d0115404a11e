package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type captured struct {
	from string
	to   []string
	data []byte
}

// captureSMTP is a real SMTP server (go-smtp) that records what it gets.
type captureSMTP struct {
	addr   string
	mu     sync.Mutex
	msgs   []captured
	reject string // refuse this recipient with 550
}

func newCaptureSMTP(t *testing.T) *captureSMTP {
	t.Helper()
	c := &captureSMTP{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{c: c}, nil }))
	srv.Domain = "mta.test"
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		// Shutdown, not Close: go-smtp v0.25.1's Close races with a
		// connection in its greeting.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Logf("shutdown: %v", err)
		}
		<-done
	})
	return c
}

func (c *captureSMTP) messages() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.msgs...)
}

type session struct {
	c    *captureSMTP
	from string
	to   []string
}

func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.c.mu.Lock()
	reject := s.c.reject
	s.c.mu.Unlock()
	if to == reject {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	}
	s.to = append(s.to, to)
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.c.mu.Lock()
	s.c.msgs = append(s.c.msgs, captured{s.from, s.to, b})
	s.c.mu.Unlock()
	return nil
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, channel string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, "channel", channel) {
				return m.GetCounter().GetValue()
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

func newNotifier(t *testing.T, opts Options) *Notifier {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "lifeline.test"
	}
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

func TestWebhookAndMail(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s", r.Method, r.Header.Get("Content-Type"))
		}
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Error(err)
		}
		mu.Lock()
		bodies = append(bodies, m)
		mu.Unlock()
	}))
	defer hook.Close()
	mta := newCaptureSMTP(t)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, Options{Webhook: hook.URL, Postmaster: "postmaster@example.com",
		From: "lifeline@example.com", Submit: "tcp:" + mta.addr, Registerer: reg})
	when := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	n.Notify(context.Background(), Event{Kind: KindOutageStart, Server: "dovecot", Time: when, Cause: "probe", Reason: "connection refused"})
	n.Notify(context.Background(), Event{Kind: KindReplayFinished, Server: "dovecot", Time: when, Delivered: 10, Failed: 1, Duration: 90 * time.Second})

	eventually(t, "two webhook calls and two mails", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) == 2 && len(mta.messages()) == 2
	})
	mu.Lock()
	b0, b1 := bodies[0], bodies[1]
	mu.Unlock()
	if b0["kind"] != "outage_start" || b0["server"] != "dovecot" || b0["cause"] != "probe" ||
		b0["reason"] != "connection refused" || b0["time"] != "2026-12-01T02:00:00Z" || b0["host"] != "lifeline.test" {
		t.Errorf("outage_start payload %v", b0)
	}
	if _, ok := b0["delivered"]; ok {
		t.Errorf("outage_start carries counts: %v", b0)
	}
	if b1["kind"] != "replay_finished" || b1["delivered"] != 10.0 || b1["failed"] != 1.0 || b1["duration_seconds"] != 90.0 {
		t.Errorf("replay_finished payload %v", b1)
	}
	m := mta.messages()[1]
	if m.from != "lifeline@example.com" || len(m.to) != 1 || m.to[0] != "postmaster@example.com" {
		t.Errorf("mail envelope %q %v", m.from, m.to)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m.data))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Header.Get("Subject"), "replay finished on dovecot: 10 delivered, 1 failed") {
		t.Errorf("Subject %q", msg.Header.Get("Subject"))
	}
	if msg.Header.Get("Auto-Submitted") != "auto-generated" || msg.Header.Get("Message-Id") == "" {
		t.Errorf("header %v", msg.Header)
	}
	body, _ := io.ReadAll(msg.Body)
	if !strings.Contains(string(body), "Duration:   1m30s") {
		t.Errorf("body:\n%s", body)
	}
	if got := counter(t, reg, "lifeline_notify_sent_total", "webhook"); got != 2 {
		t.Errorf("webhook sent %v", got)
	}
}

// A webhook answering 500 is retried, then logged and counted.
func TestWebhookError(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer hook.Close()
	reg := prometheus.NewRegistry()
	n := newNotifier(t, Options{Webhook: hook.URL, Registerer: reg, RetryDelay: time.Millisecond})
	n.Notify(context.Background(), Event{Kind: KindOutageEnd, Server: "x"})
	eventually(t, "error counted", func() bool { return counter(t, reg, "lifeline_notify_errors_total", "webhook") == 1 })
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Errorf("%d calls, want 3 attempts", calls)
	}
}

// A full queue never blocks the caller for long and the loss is counted.
func TestQueueFull(t *testing.T) {
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer hook.Close()
	defer close(release)
	reg := prometheus.NewRegistry()
	n := newNotifier(t, Options{Webhook: hook.URL, Registerer: reg, QueueSize: 1, QueueTimeout: 20 * time.Millisecond})
	start := time.Now()
	for range 4 { // one in flight, one queued, two lost
		n.Notify(context.Background(), Event{Kind: KindOutageStart})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Notify blocked %v", d)
	}
	eventually(t, "losses counted", func() bool { return counter(t, reg, "lifeline_notify_errors_total", "queue") >= 2 })
}

func TestSubmitNullSender(t *testing.T) {
	mta := newCaptureSMTP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := []byte("Subject: x\r\n\r\nhello\r\n.leading dot\r\n")
	if err := Submit(ctx, "tcp", mta.addr, "", []string{"a@example.com"}, msg); err != nil {
		t.Fatal(err)
	}
	m := mta.messages()
	if len(m) != 1 || m[0].from != "" || !bytes.Equal(m[0].data, msg) {
		t.Fatalf("got %+v", m)
	}
	mta.mu.Lock()
	mta.reject = "bad@example.com"
	mta.mu.Unlock()
	err := Submit(ctx, "tcp", mta.addr, "", []string{"bad@example.com"}, msg)
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("rejected RCPT: %v", err)
	}
}

func TestOptions(t *testing.T) {
	if _, err := New(Options{Postmaster: "p@example.com"}); err == nil {
		t.Error("postmaster without submit accepted")
	}
	if _, err := New(Options{Postmaster: "p@example.com", Submit: "unix:relative"}); err == nil {
		t.Error("relative unix path accepted")
	}
	for in, want := range map[string][2]string{
		"tcp:127.0.0.1:25": {"tcp", "127.0.0.1:25"}, "[::1]:25": {"tcp", "[::1]:25"}, "unix:/run/x": {"unix", "/run/x"},
	} {
		n, a, err := SplitAddress(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("SplitAddress(%q) = %q %q %v", in, n, a, err)
		}
	}
}

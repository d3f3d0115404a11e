package mailview

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/internal/testcert"
)

// smtpSink is a go-smtp backend that records what it receives.
type smtpSink struct {
	mu       sync.Mutex
	auths    []string
	got      []sinkMsg
	reject   string        // RCPT address answered with 550
	blockRCP chan struct{} // RCPT waits on it when not nil
}

type sinkMsg struct {
	from  string
	rcpts []string
	data  string
	tls   bool
	user  string
}

type sinkSession struct {
	s    *smtpSink
	c    *smtp.Conn
	m    sinkMsg
	user string
}

func (s *smtpSink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &sinkSession{s: s, c: c}, nil
}

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		ss.s.mu.Lock()
		ss.s.auths = append(ss.s.auths, user+":"+pass)
		ss.s.mu.Unlock()
		if pass != "s3cret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		ss.user = user
		return nil
	}), nil
}
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	_, isTLS := ss.c.TLSConnectionState()
	ss.m = sinkMsg{from: from, tls: isTLS, user: ss.user}
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.blockRCP != nil {
		<-ss.s.blockRCP
	}
	if to == ss.s.reject {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}
	}
	ss.m.rcpts = append(ss.m.rcpts, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.m.data = string(b)
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, ss.m)
	ss.s.mu.Unlock()
	return nil
}
func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }

func (s *smtpSink) messages() []sinkMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMsg(nil), s.got...)
}

func (s *smtpSink) authCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.auths)
}

func startSMTP(t *testing.T, host string, sink *smtpSink, cert *testcert.Cert) string {
	t.Helper()
	srv := smtp.NewServer(sink)
	srv.Domain = "relay.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	if cert != nil {
		srv.TLSConfig = cert.ServerConfig()
	} else {
		// No TLS at all: AUTH is then allowed only because the test relay
		// is on loopback, as Relay.Send requires.
		srv.AllowInsecureAuth = true
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestRelaySend(t *testing.T) {
	cert, err := testcert.New(time.Now().Add(time.Hour), "relay.test")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Build(testDraft())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("starttls+auth", func(t *testing.T) {
		sink := &smtpSink{}
		addr := startSMTP(t, "127.0.0.1", sink, cert)
		r := Relay{Addr: addr, Username: "alice", Password: "s3cret", TLSConfig: cert.ClientConfig("relay.test"), HeloName: "webmail.test"}
		if err := r.Send(ctx, "alice@example.org", []string{"bob@example.org", "secret@example.com"}, msg); err != nil {
			t.Fatal(err)
		}
		eq(t, "messages", len(sink.messages()), 1)
		g := sink.messages()[0]
		eq(t, "tls", g.tls, true)
		eq(t, "user", g.user, "alice")
		eq(t, "from", g.from, "alice@example.org")
		eq(t, "rcpts", strings.Join(g.rcpts, ","), "bob@example.org,secret@example.com")
		eq(t, "data", g.data, string(msg))
	})

	t.Run("plain-loopback+auth", func(t *testing.T) {
		sink := &smtpSink{}
		addr := startSMTP(t, "127.0.0.1", sink, nil)
		r := Relay{Addr: addr, Username: "alice", Password: "s3cret"}
		if err := r.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg); err != nil {
			t.Fatal(err)
		}
		eq(t, "messages", len(sink.messages()), 1)
		eq(t, "tls", sink.messages()[0].tls, false)
		eq(t, "user", sink.messages()[0].user, "alice")
	})

	t.Run("bad-password", func(t *testing.T) {
		sink := &smtpSink{}
		addr := startSMTP(t, "127.0.0.1", sink, cert)
		r := Relay{Addr: addr, Username: "alice", Password: "wrong", TLSConfig: cert.ClientConfig("relay.test")}
		err := r.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			t.Fatalf("err = %v, want 535", err)
		}
		eq(t, "messages", len(sink.messages()), 0)
	})

	t.Run("550-surfaces", func(t *testing.T) {
		sink := &smtpSink{reject: "nobody@example.org"}
		addr := startSMTP(t, "127.0.0.1", sink, nil)
		err := Relay{Addr: addr}.Send(ctx, "alice@example.org", []string{"bob@example.org", "nobody@example.org"}, msg)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 {
			t.Fatalf("err = %v, want a wrapped 550", err)
		}
		var re *ReplyError
		if !errors.As(err, &re) || re.Error() != "550 5.1.1 user unknown" {
			t.Errorf("ReplyError = %v", re)
		}
		for _, want := range []string{"550 5.1.1 user unknown", "nobody@example.org"} {
			contains(t, err.Error(), want)
		}
		eq(t, "messages", len(sink.messages()), 0)
	})

	t.Run("untrusted-cert-no-fallback", func(t *testing.T) {
		sink := &smtpSink{}
		addr := startSMTP(t, "127.0.0.1", sink, cert)
		err := Relay{Addr: addr, Username: "alice", Password: "s3cret"}.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
		eq(t, "auths", sink.authCount(), 0)
		eq(t, "messages", len(sink.messages()), 0)
	})

	t.Run("no-cleartext-credentials", func(t *testing.T) {
		ip := nonLoopbackIP(t)
		sink := &smtpSink{}
		addr := startSMTP(t, ip, sink, nil)
		err := Relay{Addr: addr, Username: "alice", Password: "s3cret"}.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg)
		if err == nil || !strings.Contains(err.Error(), "clear text") {
			t.Fatalf("err = %v, want a refusal", err)
		}
		eq(t, "auths", sink.authCount(), 0)
	})

	t.Run("no-cleartext-mail-to-remote", func(t *testing.T) {
		ip := nonLoopbackIP(t)
		sink := &smtpSink{}
		addr := startSMTP(t, ip, sink, nil)
		err := Relay{Addr: addr}.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg)
		if err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") {
			t.Fatalf("err = %v, want a refusal", err)
		}
		eq(t, "messages", len(sink.messages()), 0)
		// Allowed by the operator: sent, without TLS.
		if err := (Relay{Addr: addr, AllowPlaintext: true}).Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg); err != nil {
			t.Fatalf("AllowPlaintext: %v", err)
		}
		eq(t, "messages", len(sink.messages()), 1)
		eq(t, "tls", sink.messages()[0].tls, false)
	})

	t.Run("timeout", func(t *testing.T) {
		sink := &smtpSink{blockRCP: make(chan struct{})}
		defer close(sink.blockRCP)
		addr := startSMTP(t, "127.0.0.1", sink, nil)
		start := time.Now()
		err := Relay{Addr: addr, Timeout: 300 * time.Millisecond}.Send(ctx, "alice@example.org", []string{"bob@example.org"}, msg)
		if err == nil {
			t.Fatal("Send to a hung relay succeeded")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Send took %v with a 300ms timeout", d)
		}
	})
}

func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address")
	return ""
}

func TestIsLoopback(t *testing.T) {
	for h, want := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "127.1.2.3": true, "10.0.0.1": false, "relay.example": false} {
		eq(t, h, isLoopback(h), want)
	}
}

package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestPlaintextRefusedOffLoopback checks RFC 3501 §6.2.3 / RFC 9051 §6.2.3:
// without TLS, a client that is not on loopback sees LOGINDISABLED, and
// LOGIN and AUTHENTICATE fail until STARTTLS.
func TestPlaintextRefusedOffLoopback(t *testing.T) {
	f := newFixture(t)
	for _, mode := range []string{"", "stls"} {
		ts := startServer(t, f, mode, nil, func(ln net.Listener) net.Listener { return remoteListener{ln} })
		r := dialRaw(t, ts.addr)
		u := r.ok("CAPABILITY")
		if len(u) != 1 || !strings.Contains(u[0], "LOGINDISABLED") || strings.Contains(u[0], "AUTH=PLAIN") ||
			strings.Contains(u[0], "STARTTLS") != (mode == "stls") {
			t.Errorf("%q: CAPABILITY = %q", mode, u)
		}
		if _, done := r.cmd(`LOGIN alice alice-pw`); !strings.HasPrefix(done, "NO [PRIVACYREQUIRED]") {
			t.Errorf("%q: plaintext LOGIN: %q", mode, done)
		}
		if _, done := r.cmd(`AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXB3`); !strings.HasPrefix(done, "NO [PRIVACYREQUIRED]") {
			t.Errorf("%q: plaintext AUTHENTICATE: %q", mode, done)
		}
		if mode == "" {
			continue
		}
		c, err := imapclient.DialStartTLS(ts.addr, &imapclient.Options{TLSConfig: clientTLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !c.Caps().Has("AUTH=PLAIN") || c.Caps().Has(goimap.CapLoginDisabled) {
			t.Errorf("capabilities after STARTTLS: %v", c.Caps())
		}
		if err := c.Login("alice", users["alice"]).Wait(); err != nil {
			t.Fatalf("LOGIN after STARTTLS: %v", err)
		}
		if d, err := c.Select("INBOX", nil).Wait(); err != nil || d.NumMessages != 3 {
			t.Errorf("SELECT after STARTTLS: %+v %v", d, err)
		}
	}
}

func TestImplicitTLS(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "implicit", nil, func(ln net.Listener) net.Listener { return remoteListener{ln} })
	c, err := imapclient.DialTLS(ts.addr, &imapclient.Options{TLSConfig: clientTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	if c.Caps().Has(goimap.CapStartTLS) || c.Caps().Has(goimap.CapLoginDisabled) || !c.Caps().Has("AUTH=PLAIN") {
		t.Errorf("capabilities on implicit TLS: %v", c.Caps())
	}
	if err := c.Login("bob", users["bob"]).Wait(); err != nil {
		t.Fatal(err)
	}
	selectBox(t, c, "INBOX")
	m := fetchOne(t, c, goimap.SeqSetNum(2), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{{Peek: true}}})
	if got := m.FindBodySection(&goimap.FetchItemBodySection{Peek: true}); string(got) != string(f.msgs["bob"][1]) {
		t.Errorf("BODY[] over TLS: %q", got)
	}

	// TLS 1.1 is refused (Options.TLSConfig's MinVersion is raised to 1.2).
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: clientTLSConfig().RootCAs, ServerName: "localhost",
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
	// A client that connects and never says hello is closed by Shutdown.
	idle, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestShutdown(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	waiting := dialRaw(t, ts.addr)
	waiting.login("alice")
	waiting.ok("SELECT INBOX")
	idler := dialRaw(t, ts.addr)
	idler.login("alice")
	idler.ok("SELECT INBOX")
	idler.conn.Write([]byte("I IDLE\r\n"))
	if l := idler.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	fresh := dialRaw(t, ts.addr)
	ts.stop(t)
	for name, r := range map[string]*raw{"waiting": waiting, "idling": idler, "not logged in": fresh} {
		l := r.line()
		if !strings.HasPrefix(l, "* BYE test.example Lifeline IMAP server shutting down") {
			t.Errorf("%s session: %q", name, l)
		}
		if !r.closed() {
			t.Errorf("%s session still open", name)
		}
	}
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Error("listener still open")
	}
	if n := counterValue(ts.metrics.sessions); n != 0 {
		t.Errorf("sessions gauge after shutdown: %v", n)
	}
	if got := ts.Serve(nil); got != ErrServerClosed {
		t.Errorf("Serve after Shutdown: %v", got)
	}
}

// TestShutdownWaitsForCommand checks the second phase of Shutdown: a FETCH
// that is still being written finishes, with its tagged response, before the
// BYE; a client that stops reading is cut off when the context ends.
func TestShutdownWaitsForCommand(t *testing.T) {
	f := newFixture(t)
	big := "Subject: big\r\n\r\n" + strings.Repeat("x", 8<<20) + "\r\n"
	appendMsg(t, f, big, "carol")
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("carol")
	r.ok("SELECT INBOX")
	// The client sends FETCH and does not read: the server blocks writing.
	r.conn.Write([]byte("F FETCH 1 (BODY.PEEK[])\r\n"))
	waitFor(t, "FETCH running", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for c := range ts.conns {
			c.mu.Lock()
			busy := c.busy
			c.mu.Unlock()
			if busy > 0 {
				return true
			}
		}
		return false
	})
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()
	l := r.line()
	if !strings.HasPrefix(l, "* 1 FETCH (BODY[] {") || len(l) < len(big) {
		t.Errorf("FETCH response: %d bytes", len(l))
	}
	if l := r.line(); !strings.HasPrefix(l, "F OK") {
		t.Errorf("after the literal: %q", l)
	}
	if l := r.line(); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("after the FETCH: %q", l)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}

	// Phase two cut short: the client never reads, the context ends.
	ts2 := startServer(t, f, "", nil, nil)
	r2 := dialRaw(t, ts2.addr)
	r2.login("carol")
	r2.ok("SELECT INBOX")
	r2.conn.Write([]byte("F FETCH 1 (BODY.PEEK[])\r\n"))
	waitFor(t, "FETCH running", func() bool { return counterValue(ts2.metrics.commands.WithLabelValues("FETCH")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ts2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a stuck client: %v", err)
	}
	if n := counterValue(ts2.metrics.sessions); n != 0 {
		t.Errorf("sessions after a forced shutdown: %v", n)
	}
}

package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifelinemail/lifeline/internal/testcert"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// testAuth is a tiny Authenticator: user -> password, mailbox = user.
type testAuth map[string]string

type tempErr struct{}

func (tempErr) Error() string   { return "passwd-file unreadable" }
func (tempErr) Temporary() bool { return true }

func (a testAuth) Login(_ context.Context, _, user, password string) (string, error) {
	if user == "broken" {
		return "", tempErr{}
	}
	if p, ok := a[user]; ok && p == password {
		return user, nil
	}
	return "", errors.New("bad credentials")
}

var users = testAuth{"alice": "alice-pw", "bob": "bob pw with spaces", "carol": "carol-pw"}

type fixture struct {
	j     *badgerjournal.Journal
	store *userview.Store
	// raw bodies by mailbox, in UID order
	msgs map[string][][]byte
}

func appendMsg(t testing.TB, f *fixture, body string, mailboxes ...string) {
	t.Helper()
	var rcpts []journal.Recipient
	for _, m := range mailboxes {
		rcpts = append(rcpts, journal.Recipient{Address: m + "@example.com", Mailboxes: []string{m}, State: journal.StateMTA})
	}
	if _, err := f.j.Append(context.Background(), journal.Envelope{MailFrom: "sender@example.org", Recipients: rcpts},
		strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	for _, m := range mailboxes {
		f.msgs[m] = append(f.msgs[m], []byte(body))
	}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	f := &fixture{j: j, store: userview.New(j), msgs: map[string][][]byte{}}
	appendMsg(t, f, "From: a@example.org\r\nTo: alice@example.com\r\nSubject: one\r\nMessage-ID: <1@t>\r\n\r\nfirst line\r\n.dot line\r\n..two dots\r\nlast\r\n", "alice")
	appendMsg(t, f, "From: a@example.org\r\nTo: alice@example.com, bob@example.com\r\nSubject: shared\r\nMessage-ID: <2@t>\r\n\r\nfor both of you\r\n", "alice", "bob")
	long := strings.Repeat("x", 100000)
	appendMsg(t, f, "From: a@example.org\r\nTo: alice@example.com\r\nSubject: big\r\nMessage-ID: <3@t>\r\n\r\n"+long+"\r\n"+strings.Repeat("line of text\r\n", 5000), "alice")
	appendMsg(t, f, "From: a@example.org\r\nTo: bob@example.com\r\nSubject: bob only SECRET-BOB\r\nMessage-ID: <4@t>\r\n\r\nSECRET-BOB body\r\n", "bob")
	return f
}

type testServer struct {
	*Server
	addr   string
	panics prometheus.Counter
	reg    *prometheus.Registry
}

// startServer serves f on a loopback listener; wrap may change the listener
// (e.g. to report a non-loopback client address); tlsMode is "", "stls" or
// "implicit".
func startServer(t testing.TB, f *fixture, tlsMode string, mod func(*Options), wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	panics := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_panics"})
	reg := prometheus.NewRegistry()
	o := Options{Store: f.store, Journal: f.j, Auth: users, Registerer: reg, Panics: panics, Hostname: "test.example",
		IdleTimeout: 30 * time.Second}
	if tlsMode != "" {
		o.TLSConfig = testTLSConfig(t)
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), panics: panics, reg: reg}
	var l net.Listener = ln
	if wrap != nil {
		l = wrap(ln)
	}
	done := make(chan error, 1)
	go func() {
		if tlsMode == "implicit" {
			done <- s.ServeTLS(l)
		} else {
			done <- s.Serve(l)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		if n := counterValue(panics); n != 0 {
			t.Errorf("%v panics recovered", n)
		}
	})
	return ts
}

var (
	certMu   sync.Mutex
	testCert *testcert.Cert // made once per test binary
)

func testTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	certMu.Lock()
	defer certMu.Unlock()
	if testCert == nil {
		c, err := testcert.New(time.Now().Add(time.Hour), "localhost")
		if err != nil {
			t.Fatal(err)
		}
		testCert = c
	}
	return testCert.ServerConfig()
}

func clientTLSConfig() *tls.Config {
	certMu.Lock()
	defer certMu.Unlock()
	return testCert.ClientConfig("localhost")
}

// remoteListener makes every connection look as if it came from 192.0.2.1.
type remoteListener struct{ net.Listener }

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4242}
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

// client is a minimal POP3 client for the tests.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	cl.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if l := cl.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("greeting %q", l)
	}
	return cl
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// cmd sends a command and returns the status line.
func (c *client) cmd(format string, args ...any) string {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, format+"\r\n", args...); err != nil {
		c.t.Fatal(err)
	}
	return c.line()
}

// ok sends a command and fails the test unless it succeeds.
func (c *client) ok(format string, args ...any) string {
	c.t.Helper()
	l := c.cmd(format, args...)
	if !strings.HasPrefix(l, "+OK") {
		c.t.Fatalf("%s: %q", fmt.Sprintf(format, args...), l)
	}
	return l
}

// multi reads a multi-line body and un-stuffs it (RFC 1939 §3).
func (c *client) multi() []byte {
	c.t.Helper()
	var b bytes.Buffer
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read multi-line: %v", err)
		}
		if l == ".\r\n" {
			return b.Bytes()
		}
		b.WriteString(strings.TrimPrefix(l, "."))
	}
}

func (c *client) login(user string) {
	c.t.Helper()
	c.ok("USER %s", user)
	c.ok("PASS %s", users[user])
}

func (c *client) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

func counterValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

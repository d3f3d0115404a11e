package imap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
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
	switch user {
	case "broken":
		return "", tempErr{}
	case "evil":
		if password == "evil-pw" {
			return "x@example.com/Sent", nil // a mailbox name that could alias a Sent folder
		}
	}
	if p, ok := a[user]; ok && p == password {
		return user, nil
	}
	return "", errors.New("bad credentials")
}

var users = testAuth{"alice": "alice-pw", "bob": "bob pw with spaces", "carol": "carol-pw"}

type fixture struct {
	dir   string
	j     *badgerjournal.Journal
	store *userview.Store
	// raw bodies by journal mailbox, in UID order
	msgs map[string][][]byte
}

// appendAt journals body for mailboxes with the given received time, and
// records it in f.msgs unless the journal already had it.
func appendAt(t testing.TB, f *fixture, received time.Time, body string, mailboxes ...string) journal.ID {
	t.Helper()
	var rcpts []journal.Recipient
	for _, m := range mailboxes {
		rcpts = append(rcpts, journal.Recipient{Address: m + "@example.com", Mailboxes: []string{m}, State: journal.StateMTA})
	}
	res, err := f.j.Append(context.Background(), journal.Envelope{MailFrom: "sender@example.org", Recipients: rcpts, Received: received},
		strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate { // the same message offered again is stored once
		for _, m := range mailboxes {
			f.msgs[m] = append(f.msgs[m], []byte(body))
		}
	}
	return res.ID
}

func appendMsg(t testing.TB, f *fixture, body string, mailboxes ...string) journal.ID {
	t.Helper()
	return appendAt(t, f, time.Time{}, body, mailboxes...)
}

func openJournal(t testing.TB, dir string) *badgerjournal.Journal {
	t.Helper()
	j, err := badgerjournal.Open(dir, badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// Messages of the standard fixture.
const (
	msgOne = "From: Anne Example <a@example.org>\r\nTo: alice@example.com\r\nSubject: one\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1@t>\r\n\r\nfirst line\r\nhello world\r\n"
	msgShared = "From: a@example.org\r\nTo: alice@example.com, bob@example.com\r\nSubject: shared\r\n" +
		"Date: Tue, 10 Mar 2020 10:00:00 +0000\r\nMessage-ID: <2@t>\r\n\r\nfor both of you\r\n"
	msgMultipart = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nTo: alice@example.com\r\n" +
		"Subject: =?iso-8859-1?q?Gr=FC=DFe?= multipart\r\nDate: Wed, 11 Mar 2020 10:00:00 +0000\r\n" +
		"Message-ID: <3@t>\r\nX-Custom: needle-in-header\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Sch=F6ne Gr=FC=DFe aus M=FCnchen\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gYmluYXJ5IHdvcmxk\r\n" +
		"--b1\r\nContent-Type: message/rfc822\r\n\r\n" +
		"From: inner@example.net\r\nSubject: inner subject\r\nMessage-ID: <inner@t>\r\n\r\ninner body text\r\n" +
		"--b1--\r\nepilogue\r\n"
	msgBob = "From: a@example.org\r\nTo: bob@example.com\r\nSubject: bob only SECRET-BOB\r\nMessage-ID: <4@t>\r\n\r\nSECRET-BOB body\r\n"
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	j := openJournal(t, dir)
	f := &fixture{dir: dir, j: j, store: userview.New(j), msgs: map[string][][]byte{}}
	t.Cleanup(func() { f.j.Close() })
	appendAt(t, f, time.Date(2006, 1, 2, 22, 0, 0, 0, time.Local), msgOne, "alice")
	appendAt(t, f, time.Date(2020, 3, 10, 12, 0, 0, 0, time.Local), msgShared, "alice", "bob")
	appendAt(t, f, time.Date(2020, 3, 11, 12, 0, 0, 0, time.Local), msgMultipart, "alice")
	appendAt(t, f, time.Date(2020, 3, 12, 12, 0, 0, 0, time.Local), msgBob, "bob")
	return f
}

type testServer struct {
	*Server
	addr   string
	panics prometheus.Counter
	reg    *prometheus.Registry
	done   chan error
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
		IdleTimeout: 30 * time.Second, PollInterval: 20 * time.Millisecond}
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
	ts := &testServer{Server: s, addr: ln.Addr().String(), panics: panics, reg: reg, done: make(chan error, 1)}
	var l net.Listener = ln
	if wrap != nil {
		l = wrap(ln)
	}
	go func() {
		if tlsMode == "implicit" {
			ts.done <- s.ServeTLS(l)
		} else {
			ts.done <- s.Serve(l)
		}
	}()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

var stopOnce sync.Map

// stop shuts the server down and checks that no panic was recovered.
func (ts *testServer) stop(t testing.TB) {
	if _, loaded := stopOnce.LoadOrStore(ts, true); loaded {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	if n := counterValue(ts.panics); n != 0 {
		t.Errorf("%v panics recovered", n)
	}
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

// updates collects the unilateral data a client receives.
type updates struct {
	mu       sync.Mutex
	exists   []uint32
	expunges []uint32
	fetches  []string // "seq uid flags"
}

func (u *updates) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) {
			u.mu.Lock()
			u.expunges = append(u.expunges, seq)
			u.mu.Unlock()
		},
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				u.mu.Lock()
				u.exists = append(u.exists, *d.NumMessages)
				u.mu.Unlock()
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.fetches = append(u.fetches, fmt.Sprintf("%d %d %v", buf.SeqNum, buf.UID, buf.Flags))
			u.mu.Unlock()
		},
	}
}

func (u *updates) snapshot() (exists, expunges []uint32, fetches []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]uint32(nil), u.exists...), append([]uint32(nil), u.expunges...), append([]string(nil), u.fetches...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dial connects an imapclient to addr (plain TCP) and waits for the greeting.
func dial(t testing.TB, addr string, u *updates) *imapclient.Client {
	t.Helper()
	o := &imapclient.Options{}
	if u != nil {
		o.UnilateralDataHandler = u.handler()
	}
	c, err := imapclient.DialInsecure(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	return c
}

// login dials and logs in as user.
func login(t testing.TB, addr, user string, u *updates) *imapclient.Client {
	t.Helper()
	c := dial(t, addr, u)
	if err := c.Login(user, users[user]).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

func selectBox(t testing.TB, c *imapclient.Client, name string) *goimap.SelectData {
	t.Helper()
	d, err := c.Select(name, nil).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	return d
}

// statusCode returns the response code of an IMAP error, "" if none.
func statusCode(err error) goimap.ResponseCode {
	var ie *goimap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
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

// raw is a minimal line client for checks of exact protocol text.
type raw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newRaw(t, c)
}

func newRaw(t testing.TB, c net.Conn) *raw {
	t.Helper()
	r := &raw{t: t, conn: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if l := r.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q", l)
	}
	return r
}

var literalRE = regexp.MustCompile(`\{(\d+)\}$`)

// line reads one response line, with any literals it carries inline.
func (r *raw) line() string {
	r.t.Helper()
	var b strings.Builder
	for {
		l, err := r.r.ReadString('\n')
		if err != nil {
			r.t.Fatalf("read: %v (got %q)", err, b.String()+l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		b.WriteString(l)
		m := literalRE.FindStringSubmatch(l)
		if m == nil {
			return b.String()
		}
		n, _ := strconv.Atoi(m[1])
		lit := make([]byte, n)
		if _, err := io.ReadFull(r.r, lit); err != nil {
			r.t.Fatalf("read literal: %v", err)
		}
		b.Write(lit)
	}
}

// cmd sends a command with a fresh tag and returns the untagged lines and
// the tagged completion (without the tag).
func (r *raw) cmd(format string, args ...any) (untagged []string, done string) {
	r.t.Helper()
	r.n++
	tag := fmt.Sprintf("T%d", r.n)
	if _, err := fmt.Fprintf(r.conn, tag+" "+format+"\r\n", args...); err != nil {
		r.t.Fatal(err)
	}
	for {
		l := r.line()
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

// ok sends a command and fails the test unless it succeeds.
func (r *raw) ok(format string, args ...any) []string {
	r.t.Helper()
	u, done := r.cmd(format, args...)
	if !strings.HasPrefix(done, "OK") {
		r.t.Fatalf("%s: %q (untagged %q)", fmt.Sprintf(format, args...), done, u)
	}
	return u
}

func (r *raw) login(user string) {
	r.t.Helper()
	r.ok("LOGIN %s %s", user, strconv.Quote(users[user]))
}

// closed reports whether the server closed the connection (after any lines
// still in flight).
func (r *raw) closed() bool {
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := r.r.ReadString('\n')
		if err != nil {
			return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")
		}
	}
}

// corpusDir is ../shared/corpus beside the module root, or "" (with the test
// skipped) when it is absent, unless CI=true asks for the full suite.
func corpusDir(t testing.TB) string {
	t.Helper()
	dir := "../../../shared/corpus/sisimai"
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mail corpus %s is missing (CI=true needs it)", dir)
		}
		t.Skipf("mail corpus %s not present", dir)
	}
	return dir
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

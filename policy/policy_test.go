package policy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/addrmap"
)

type outages struct {
	mu   sync.Mutex
	down map[string]bool
}

func (o *outages) InOutage(s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.down[s]
}

func (o *outages) set(s string, down bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down[s] = down
}

type testServer struct {
	srv     *Server
	addr    string
	out     *outages
	reg     *prometheus.Registry
	custody *errValue
}

type errValue struct {
	mu  sync.Mutex
	err error
}

func (e *errValue) get() error  { e.mu.Lock(); defer e.mu.Unlock(); return e.err }
func (e *errValue) set(x error) { e.mu.Lock(); defer e.mu.Unlock(); e.err = x }

func start(t *testing.T, tweak func(*Options)) *testServer {
	t.Helper()
	out := &outages{down: map[string]bool{}}
	res := addrmap.New(addrmap.Options{
		Servers:     []addrmap.Server{{Name: "dovecot", Domains: []string{"example.com"}}, {Name: "exchange", Domains: []string{"corp.test"}}},
		StripDetail: true,
		Aliases:     map[string][]string{"sales@example.com": {"alice@example.com"}},
	})
	known := map[string]bool{"alice@example.com": true, "sales@example.com": true}
	cv := &errValue{}
	reg := prometheus.NewRegistry()
	opts := Options{
		Resolver: res, Outage: out, RejectUnknown: true,
		Known:          func(a string) bool { return known[strings.ToLower(a)] },
		CanTakeCustody: cv.get,
		Registerer:     reg,
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), out: out, reg: reg, custody: cv}
}

func (ts *testServer) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) //nolint:errcheck // test
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// postfixRequest is what Postfix 3.x smtpd sends at RCPT TO.
func postfixRequest(rcpt string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.1\n" +
		"client_name=mail.remote.test\nreverse_client_name=mail.remote.test\nhelo_name=mail.remote.test\n" +
		"sender=s@remote.test\nrecipient=" + rcpt + "\nrecipient_count=0\nqueue_id=\ninstance=123.4.5\nsize=0\n" +
		"etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n" +
		"ccert_fingerprint=\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n" +
		"policy_context=\nserver_address=127.0.0.1\nserver_port=25\ncompatibility_level=3.6\nmail_version=3.7.11\n\n"
}

func ask(t *testing.T, c net.Conn, r *bufio.Reader, req string) string {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	blank, err := r.ReadString('\n')
	if err != nil || blank != "\n" {
		t.Fatalf("no empty line after %q: %q %v", line, blank, err)
	}
	return strings.TrimSuffix(line, "\n")
}

func counter(t *testing.T, reg *prometheus.Registry, proto, action string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lifeline_policy_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["protocol"] == proto && l["action"] == action {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestPostfixPolicy(t *testing.T) {
	ts := start(t, nil)
	c, r := ts.dial(t)
	// Several requests on one connection, as smtpd does.
	steps := []struct {
		name, rcpt, want string
		outage           bool
		custodyErr       error
	}{
		{"normal, known", "alice@example.com", "action=DUNNO", false, nil},
		{"normal, unknown", "nobody@example.com", "action=DUNNO", false, nil},
		{"outage, known", "alice@example.com", "action=DUNNO", true, nil},
		{"outage, known with detail", "Alice+x@Example.com", "action=DUNNO", true, nil},
		{"outage, alias key", "sales@example.com", "action=DUNNO", true, nil},
		{"outage, unknown", "nobody@example.com", "action=550 5.1.1 unknown mailbox", true, nil},
		{"outage, foreign domain", "x@elsewhere.test", "action=DUNNO", true, nil},
		{"outage, other server up", "x@corp.test", "action=DUNNO", true, nil},
		{"outage, journal full", "alice@example.com", "action=DEFER_IF_PERMIT 4.3.0 Lifeline cannot take custody now", true, errors.New("disk 97% full")},
		{"outage, journal full, unknown", "nobody@example.com", "action=550 5.1.1 unknown mailbox", true, errors.New("disk 97% full")},
		{"normal, journal full", "alice@example.com", "action=DUNNO", false, errors.New("disk 97% full")},
	}
	for _, s := range steps {
		ts.out.set("dovecot", s.outage)
		ts.custody.set(s.custodyErr)
		if got := ask(t, c, r, postfixRequest(s.rcpt)); got != s.want {
			t.Errorf("%s: %q, want %q", s.name, got, s.want)
		}
	}
	// No recipient (DATA, END-OF-MESSAGE): DUNNO even in an outage.
	ts.out.set("dovecot", true)
	if got := ask(t, c, r, "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nrecipient=\nsender=s@remote.test\n\n"); got != "action=DUNNO" {
		t.Errorf("end of message: %q", got)
	}
	if got := ask(t, c, r, "request=smtpd_access_policy\nprotocol_state=DATA\n\n"); got != "action=DUNNO" {
		t.Errorf("data: %q", got)
	}
	// CRLF line ends are taken too.
	if got := ask(t, c, r, "request=smtpd_access_policy\r\nrecipient=nobody@example.com\r\n\r\n"); !strings.HasPrefix(got, "action=550 ") {
		t.Errorf("crlf: %q", got)
	}
	if v := counter(t, ts.reg, "postfix", "reject"); v != 3 {
		t.Errorf("reject counter %v", v)
	}
	if v := counter(t, ts.reg, "postfix", "defer"); v != 1 {
		t.Errorf("defer counter %v", v)
	}
}

func TestRejectUnknownOff(t *testing.T) {
	ts := start(t, func(o *Options) { o.RejectUnknown = false })
	ts.out.set("dovecot", true)
	c, r := ts.dial(t)
	if got := ask(t, c, r, postfixRequest("nobody@example.com")); got != "action=DUNNO" {
		t.Errorf("%q", got)
	}
}

// expectClosed reads until EOF and fails if anything was answered.
func expectClosed(t *testing.T, r *bufio.Reader) {
	t.Helper()
	b, err := io.ReadAll(r)
	if len(b) > 0 {
		t.Errorf("answered %q", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("connection not closed")
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct{ name, req string }{
		{"no equals", "request=smtpd_access_policy\nthis is not an attribute\n\n"},
		{"empty name", "=value\n\n"},
		{"empty request", "\n"},
		{"long line", "request=smtpd_access_policy\nrecipient=" + strings.Repeat("a", 9000) + "@example.com\n\n"},
		{"too many attributes", func() string {
			var b strings.Builder
			for i := range 200 {
				b.WriteString("a" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=1\n")
			}
			return b.String() + "\n"
		}()},
		{"binary", "\x00\x01\x02\xff\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := start(t, nil)
			c, r := ts.dial(t)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, r)
			if v := counter(t, ts.reg, "postfix", "malformed"); v != 1 {
				t.Errorf("malformed counter %v", v)
			}
		})
	}
}

// 100 attributes are allowed; the limit is on distinct names.
func TestManyAttributesWithinLimit(t *testing.T) {
	ts := start(t, nil)
	c, r := ts.dial(t)
	var b strings.Builder
	for i := range 99 {
		b.WriteString("x" + strings.Repeat("y", i) + "=v\n")
	}
	b.WriteString("recipient=alice@example.com\n\n")
	if got := ask(t, c, r, b.String()); got != "action=DUNNO" {
		t.Errorf("%q", got)
	}
}

func TestTimeouts(t *testing.T) {
	ts := start(t, func(o *Options) { o.IdleTimeout = 200 * time.Millisecond; o.ReadTimeout = 200 * time.Millisecond })
	// Idle: closed without a word.
	_, r := ts.dial(t)
	begin := time.Now()
	expectClosed(t, r)
	if d := time.Since(begin); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("idle connection closed after %v", d)
	}
	// A slow client that starts a request and stalls.
	c, r := ts.dial(t)
	if _, err := io.WriteString(c, "request=smtpd_access_policy\nrecip"); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, r)
	// Idle between two requests: the first is answered, then closed.
	c, r = ts.dial(t)
	if got := ask(t, c, r, postfixRequest("alice@example.com")); got != "action=DUNNO" {
		t.Fatal(got)
	}
	expectClosed(t, r)
}

func TestEximState(t *testing.T) {
	ts := start(t, nil)
	ts.out.set("exchange", true)
	for _, tc := range []struct{ req, want string }{
		{"state alice@example.com\n", "up\n"},
		{"state example.com\n", "up\n"},
		{"state x@corp.test\n", "outage\n"},
		{"state CORP.TEST\n", "outage\n"},
		{"state elsewhere.test\n", "unknown\n"},
		{"state x@elsewhere.test\n", "unknown\n"},
		{"state \n", "unknown\n"},
		{"state corp.test", "outage\n"}, // no newline: ended by the client's half-close
		{"state corp.test\r\n", "outage\n"},
	} {
		c, r := ts.dial(t)
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(tc.req, "\n") {
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		// readsocket reads until EOF: the server must close.
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%q: %v", tc.req, err)
		}
		if string(b) != tc.want {
			t.Errorf("%q: %q, want %q", tc.req, b, tc.want)
		}
	}
	if v := counter(t, ts.reg, "exim", "outage"); v != 4 {
		t.Errorf("outage counter %v", v)
	}
}

// Shutdown closes connections waiting for a request at once.
func TestShutdownIdle(t *testing.T) {
	ts := start(t, nil)
	c, r := ts.dial(t)
	if got := ask(t, c, r, postfixRequest("alice@example.com")); got != "action=DUNNO" {
		t.Fatal(got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	expectClosed(t, r)
}

// Exim's readsocket and Postfix's unix: policy services use unix sockets.
func TestUnixSocket(t *testing.T) {
	ts := start(t, nil)
	sock := filepath.Join(t.TempDir(), "policy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ts.srv.Serve(ln) }() // ends with the Shutdown at cleanup
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() //nolint:errcheck // test
	if got := ask(t, c, bufio.NewReader(c), postfixRequest("alice@example.com")); got != "action=DUNNO" {
		t.Errorf("%q", got)
	}
}

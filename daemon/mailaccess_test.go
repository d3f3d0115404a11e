package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/e2e"
	"github.com/lifelinemail/lifeline/internal/testcert"
	"github.com/lifelinemail/lifeline/sidecar/serving"
)

// writeCert writes a self-signed certificate for localhost and 127.0.0.1 and
// its key (by rename, as certbot does) and returns the certificate's DER.
func writeCert(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	c, err := testcert.New(time.Now().Add(90*24*time.Hour), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return c.DER
}

// writeUsers writes a passwd-file by rename, hashing each user's password.
func writeUsers(t *testing.T, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, pw := range users {
		h, err := auth.Hash(auth.SchemeSHA256Crypt, pw) // the cheapest real scheme
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer collects the daemon's log for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type running struct {
	reload chan struct{}
	logs   *syncBuffer
	stop   func()
}

// startDaemon runs Run with cfg until the test ends, and checks it stops cleanly.
func startDaemon(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	r := &running{reload: make(chan struct{}), logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(r.logs, nil)), Version: "test", Ready: ready, Reload: r.reload})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v\n%s", err, r.logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("daemon not ready")
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("shutdown did not finish")
			}
		})
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.logs)
		}
	})
	return r
}

// pop3Login logs in with USER/PASS and returns the reply to PASS; on success
// the connection is left open for more commands.
func pop3Login(t *testing.T, addr, user, pass string) (reply string, cmd func(string) string, closeConn func()) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("pop3 read: %v", err)
		}
		return strings.TrimRight(l, "\r\n")
	}
	cmd = func(s string) string {
		if _, err := io.WriteString(c, s+"\r\n"); err != nil {
			t.Fatal(err)
		}
		return line()
	}
	if g := line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	if r := cmd("USER " + user); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("USER: %q", r)
	}
	return cmd("PASS " + pass), cmd, func() { c.Close() }
}

// TestPOP3AlwaysPoplib runs the daemon with POP3 on a plain and an implicit
// TLS listener, serve = "always": a message journaled through the milter is
// fetched with Python's poplib on both, and with STLS; SIGHUP's reload swaps
// the certificate for the next handshake.
func TestPOP3AlwaysPoplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	der1 := writeCert(t, certFile, keyFile)
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der1}), 0o600); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "passwd")
	writeUsers(t, users, map[string]string{"alice@example.com": "alice pw", "bob@example.com": "bob-pw"})
	milterAddr, httpAddr, pop3Addr, pop3sAddr, imapAddr := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	cfg, err := config.Parse(filepath.Join(dir, "lifeline.toml"), []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[http]
listen = %q
[mailbox_access]
serve = "always"
[pop3]
listen = %q
listen_tls = %q
[imap]
listen = %q
[tls]
cert_file = %q
key_file = %q
[auth]
passwd_file = %q
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, pop3Addr, pop3sAddr, imapAddr, certFile, keyFile, users)))
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	if act, _ := sendMilter(t, milterAddr, "m1", "alice@example.com", "bob@example.com"); act.Type != gomilter.ActionAccept {
		t.Fatalf("milter: %v", act)
	}

	host, port, _ := net.SplitHostPort(pop3Addr)
	_, sport, _ := net.SplitHostPort(pop3sAddr)
	script := `
import poplib, ssl, sys
host, port, sport, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
def fetch(p, user, pw):
    p.user(user)
    p.pass_(pw)
    count, _ = p.stat()
    assert count == 1, count
    _, lines, _ = p.retr(1)
    p.quit()
    return b'\n'.join(lines)
plain = fetch(poplib.POP3(host, port, timeout=20), 'alice@example.com', 'alice pw')
p = poplib.POP3(host, port, timeout=20)
p.stls(ctx)
stls = fetch(p, 'Bob@Example.com', 'bob-pw')
implicit = fetch(poplib.POP3_SSL('localhost', sport, context=ctx, timeout=20), 'alice@example.com', 'alice pw')
assert plain == implicit == stls, (plain, stls, implicit)
sys.stdout.buffer.write(plain)
`
	out, err := exec.Command(py, "-c", script, host, port, sport, ca).CombinedOutput()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	for _, want := range []string{"Subject: m1", "Message-ID: <m1@example.org>", "body m1"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("fetched message lacks %q:\n%s", want, out)
		}
	}

	// A wrong password is refused; the right one still works after it.
	if r, _, c := pop3Login(t, pop3Addr, "alice@example.com", "wrong"); !strings.HasPrefix(r, "-ERR [AUTH]") {
		t.Errorf("wrong password: %q", r)
	} else {
		c()
	}

	// SIGHUP: a renewed certificate is served from the next handshake on.
	der2 := writeCert(t, certFile, keyFile)
	handshake := func() []byte {
		c, err := tls.Dial("tcp", pop3sAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	if !bytes.Equal(handshake(), der1) {
		t.Fatal("certificate changed before the reload")
	}
	d.reload <- struct{}{}
	err = e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) { return bytes.Equal(handshake(), der2), nil })
	if err != nil {
		t.Fatalf("the renewed certificate is not served after the reload: %v", err)
	}

	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{
		`lifeline_logins_total{protocol="pop3",result="success"} 3`,
		`lifeline_logins_total{protocol="pop3",result="failure"} 1`,
		`lifeline_panics_total{component="pop3"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	d.stop()
}

// TestPOP3OutageMode: with the default serve = "outage", a user logs in only
// while their mailbox server is in outage; otherwise they hear why. The
// passwd-file is missing at start: serve runs anyway, logins fail with a log
// line, and the file is picked up once it exists (here by the reload).
func TestPOP3OutageMode(t *testing.T) {
	dir := t.TempDir()
	milterAddr, httpAddr, pop3Addr := freePort(t), freePort(t), freePort(t)
	cfg, err := config.Parse(filepath.Join(dir, "lifeline.toml"), []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[http]
listen = %q
admin_token = "t0ken"
[pop3]
listen = %q
[imap]
enabled = false
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, pop3Addr)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MailboxAccess.Serve != config.ServeOutage || cfg.Auth.PasswdFile != filepath.Join(dir, "users") {
		t.Fatalf("defaults: serve %q passwd_file %q", cfg.MailboxAccess.Serve, cfg.Auth.PasswdFile)
	}
	d := startDaemon(t, cfg)
	if !strings.Contains(d.logs.String(), "cannot read the passwd-file: every IMAP and POP3 login fails") {
		t.Errorf("no log line about the missing passwd-file:\n%s", d.logs)
	}
	if r, _, c := pop3Login(t, pop3Addr, "alice@example.com", "pw"); !strings.HasPrefix(r, "-ERR [AUTH]") {
		t.Fatalf("login without a passwd-file: %q", r)
	} else {
		c()
	}
	if !strings.Contains(d.logs.String(), "login refused: the passwd-file is not loaded") {
		t.Errorf("the failed login does not say why:\n%s", d.logs)
	}
	writeUsers(t, cfg.Auth.PasswdFile, map[string]string{"alice@example.com": "pw", "x@elsewhere.net": "pw"})
	d.reload <- struct{}{}

	if act, _ := sendMilter(t, milterAddr, "m1", "alice@example.com"); act.Type != gomilter.ActionAccept {
		t.Fatalf("milter: %v", act)
	}
	// The reload runs in the background: retry until the users are there.
	var r string
	err = e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) {
		var c func()
		r, _, c = pop3Login(t, pop3Addr, "alice@example.com", "pw")
		c()
		return !strings.HasPrefix(r, "-ERR [AUTH]"), nil
	})
	if err != nil || r != "-ERR [SYS/PERM] "+serving.TextServerUp {
		t.Fatalf("login while the server is up: %q (%v)", r, err)
	}
	if r, _, c := pop3Login(t, pop3Addr, "x@elsewhere.net", "pw"); r != "-ERR [SYS/PERM] "+serving.TextNoServer {
		t.Errorf("login of an address no server serves: %q", r)
	} else {
		c()
	}

	api := admin.NewClient(httpAddr, "t0ken")
	ctx := context.Background()
	if _, err := api.StartOutage(ctx, "dc", "test"); err != nil {
		t.Fatal(err)
	}
	r, cmd, c := pop3Login(t, pop3Addr, "alice@example.com", "pw")
	if !strings.HasPrefix(r, "+OK") {
		t.Fatalf("login during the outage: %q", r)
	}
	if st := cmd("STAT"); !strings.HasPrefix(st, "+OK 1 ") {
		t.Errorf("STAT = %q, want the one message", st)
	}
	cmd("QUIT")
	c()

	if _, err := api.EndOutage(ctx, "dc"); err != nil {
		t.Fatal(err)
	}
	if r, _, c := pop3Login(t, pop3Addr, "alice@example.com", "pw"); r != "-ERR [SYS/PERM] "+serving.TextServerUp {
		t.Errorf("login after the outage: %q", r)
	} else {
		c()
	}
	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{`lifeline_logins_total{protocol="pop3",result="not_serving"} 3`, `lifeline_logins_total{protocol="pop3",result="success"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMailConnectionLimitsWired: [imap] and [pop3] max_connections reach the
// servers: with 1, a second connection is refused with the protocol's answer.
func TestMailConnectionLimitsWired(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "passwd")
	writeUsers(t, users, map[string]string{"alice@example.com": "alice-pw"})
	imapAddr, pop3Addr := freePort(t), freePort(t)
	cfg, err := config.Parse(filepath.Join(dir, "lifeline.toml"), []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[http]
listen = %q
[mailbox_access]
serve = "always"
[imap]
listen = %q
max_connections = 1
[pop3]
listen = %q
max_connections = 1
[auth]
passwd_file = %q
[[server]]
name = "dovecot"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:24"
`, filepath.Join(dir, "journal"), freePort(t), freePort(t), imapAddr, pop3Addr, users)))
	if err != nil {
		t.Fatal(err)
	}
	startDaemon(t, cfg)
	for _, tc := range []struct{ addr, ok, refused string }{
		{imapAddr, "* OK", "* BYE Too many connections"},
		{pop3Addr, "+OK", "-ERR [SYS/TEMP] too many connections"},
	} {
		first := greet(t, tc.addr)
		if !strings.HasPrefix(first.line, tc.ok) {
			t.Fatalf("%s: first connection greeted %q", tc.addr, first.line)
		}
		second := greet(t, tc.addr)
		second.conn.Close()
		if !strings.HasPrefix(second.line, tc.refused) {
			t.Errorf("%s: second connection greeted %q, want %q", tc.addr, second.line, tc.refused)
		}
		first.conn.Close()
	}
}

type greeting struct {
	conn net.Conn
	line string
}

// greet dials addr and reads the server's first line.
func greet(t *testing.T, addr string) greeting {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("%s: greeting: %v", addr, err)
	}
	return greeting{c, line}
}

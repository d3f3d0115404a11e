package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

func TestCommands(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := dial(t, ts.addr)

	c.ok("CAPA")
	capa := string(c.multi())
	for _, want := range []string{"TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION"} {
		if !strings.Contains(capa, want+"\r\n") && !strings.Contains(capa, want+" ") {
			t.Errorf("CAPA lacks %s: %q", want, capa)
		}
	}
	if strings.Contains(capa, "STLS") {
		t.Errorf("STLS offered without TLSConfig")
	}
	if l := c.cmd("STAT"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("STAT before login: %q", l)
	}
	if l := c.cmd("PASS x"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("PASS without USER: %q", l)
	}
	c.ok("USER alice")
	if l := c.cmd("PASS wrong"); !strings.HasPrefix(l, "-ERR [AUTH]") {
		t.Errorf("bad password: %q", l)
	}
	c.ok("USER broken")
	if l := c.cmd("PASS x"); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Errorf("temporary failure: %q", l)
	}
	c.login("alice")

	if l := c.ok("STAT"); l != fmt.Sprintf("+OK 3 %d", len(f.msgs["alice"][0])+len(f.msgs["alice"][1])+len(f.msgs["alice"][2])) {
		t.Errorf("STAT = %q", l)
	}
	c.ok("LIST")
	if got, want := string(c.multi()), fmt.Sprintf("1 %d\r\n2 %d\r\n3 %d\r\n", len(f.msgs["alice"][0]), len(f.msgs["alice"][1]), len(f.msgs["alice"][2])); got != want {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	if l := c.ok("LIST 2"); l != fmt.Sprintf("+OK 2 %d", len(f.msgs["alice"][1])) {
		t.Errorf("LIST 2 = %q", l)
	}
	info, _ := f.j.Mailbox(context.Background(), "alice")
	c.ok("UIDL")
	if got, want := string(c.multi()), fmt.Sprintf("1 %[1]d.1\r\n2 %[1]d.2\r\n3 %[1]d.3\r\n", info.UIDValidity); got != want {
		t.Errorf("UIDL = %q, want %q", got, want)
	}
	if l := c.ok("UIDL 3"); l != fmt.Sprintf("+OK 3 %d.3", info.UIDValidity) {
		t.Errorf("UIDL 3 = %q", l)
	}
	for i, want := range f.msgs["alice"] {
		c.ok("RETR %d", i+1)
		if got := c.multi(); !bytes.Equal(got, want) {
			t.Errorf("RETR %d: got %d bytes, want %d", i+1, len(got), len(want))
		}
	}
	c.ok("TOP 1 0")
	if got := string(c.multi()); got != "From: a@example.org\r\nTo: alice@example.com\r\nSubject: one\r\nMessage-ID: <1@t>\r\n\r\n" {
		t.Errorf("TOP 1 0 = %q", got)
	}
	c.ok("TOP 1 2")
	if got := string(c.multi()); !strings.HasSuffix(got, "\r\n\r\nfirst line\r\n.dot line\r\n") {
		t.Errorf("TOP 1 2 = %q", got)
	}
	c.ok("TOP 1 100")
	if got := c.multi(); !bytes.Equal(got, f.msgs["alice"][0]) {
		t.Errorf("TOP 1 100 = %q", got)
	}
	for _, bad := range []string{"TOP 1", "TOP 1 x", "TOP 1 -1", "TOP x 1", "RETR", "RETR 0", "RETR 4", "RETR -1", "LIST 99", "UIDL x"} {
		if l := c.cmd("%s", bad); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("%s: %q", bad, l)
		}
	}
	c.ok("NOOP")
	c.ok("DELE 1")
	if l := c.cmd("DELE 1"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("DELE twice: %q", l)
	}
	if l := c.cmd("RETR 1"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("RETR of deleted: %q", l)
	}
	if l := c.ok("STAT"); !strings.HasPrefix(l, "+OK 2 ") {
		t.Errorf("STAT after DELE = %q", l)
	}
	c.ok("LIST")
	if got := string(c.multi()); strings.HasPrefix(got, "1 ") {
		t.Errorf("LIST shows deleted: %q", got)
	}
	c.ok("RSET")
	if l := c.ok("STAT"); !strings.HasPrefix(l, "+OK 3 ") {
		t.Errorf("STAT after RSET = %q", l)
	}
	if l := c.cmd("USER bob"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("USER in TRANSACTION: %q", l)
	}
	c.ok("CAPA")
	c.multi()
	// Pipelining (RFC 2449 §6.6): three commands in one write.
	fmt.Fprintf(c.conn, "NOOP\r\nSTAT\r\nLIST 1\r\n")
	for range 3 {
		if l := c.line(); !strings.HasPrefix(l, "+OK") {
			t.Errorf("pipelined: %q", l)
		}
	}
	c.ok("QUIT")
	if !c.closed() {
		t.Error("connection open after QUIT")
	}
	// Nothing was deleted: RSET undid the DELE.
	if ms, _ := f.store.Messages(context.Background(), "alice"); len(ms) != 3 {
		t.Errorf("alice has %d messages after RSET+QUIT", len(ms))
	}
	if v := counterValue(ts.metrics.commands.WithLabelValues("RETR")); v != 8 { // 3 good, 5 refused
		t.Errorf("RETR counted %v times", v)
	}
	if v := counterValue(ts.metrics.logins.WithLabelValues("pop3", promreg.LoginOK)); v != 1 {
		t.Errorf("logins ok = %v", v)
	}
	if v := counterValue(ts.metrics.bytesSent); v < 100000 {
		t.Errorf("bytes sent = %v", v)
	}
}

func TestDeleQuitHidesForThatUserOnly(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := dial(t, ts.addr)
	c.login("alice")
	c.ok("DELE 2") // the message shared with bob
	c.ok("DELE 3")
	if l := c.ok("QUIT"); l != "+OK bye (1 messages left)" {
		t.Errorf("QUIT = %q", l)
	}
	c.closed()

	c = dial(t, ts.addr)
	c.login("alice")
	c.ok("UIDL")
	if got := string(c.multi()); !strings.HasPrefix(got, "1 ") || strings.Count(got, "\r\n") != 1 || !strings.HasSuffix(got, ".1\r\n") {
		t.Errorf("alice after DELE+QUIT: %q", got)
	}
	// A DELE without QUIT deletes nothing (RFC 1939 §6).
	c.ok("DELE 1")
	c.conn.Close()

	c = dial(t, ts.addr)
	c.login("bob")
	if l := c.ok("STAT"); !strings.HasPrefix(l, "+OK 2 ") {
		t.Errorf("bob STAT = %q (alice's DELE leaked?)", l)
	}
	c.ok("RETR 1")
	if got := c.multi(); !bytes.Equal(got, f.msgs["bob"][0]) {
		t.Errorf("bob's copy of the shared message: %q", got)
	}
	c.ok("QUIT")
	// The journal keeps the copy.
	if _, err := f.j.Get(context.Background(), f.store2ID(t, "bob", 1)); err != nil {
		t.Error(err)
	}
	c = dial(t, ts.addr)
	c.login("alice")
	if l := c.ok("STAT"); !strings.HasPrefix(l, "+OK 1 ") {
		t.Errorf("alice after dropped connection: %q", l)
	}
}

func (f *fixture) store2ID(t *testing.T, mailbox string, uid uint32) (id [16]byte) {
	ms, err := f.store.Messages(context.Background(), mailbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.UID == uid {
			return m.ID
		}
	}
	t.Fatalf("no uid %d in %s", uid, mailbox)
	return
}

// TestIsolation: whatever number alice sends, she gets only her own mail.
func TestIsolation(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := dial(t, ts.addr)
	c.login("alice")
	args := []string{"0", "-1", "+1", "4", "5", "99", "4294967295", "4294967296", "18446744073709551617", "1.0", "0x1", " 4", "4 ", "bob", "00004"}
	for n := 1; n <= 3; n++ {
		args = append(args, fmt.Sprint(n))
	}
	for _, a := range args {
		for _, verb := range []string{"RETR", "TOP", "LIST", "UIDL"} {
			cmd := verb + " " + a
			if verb == "TOP" {
				cmd += " 1000"
			}
			l := c.cmd("%s", cmd)
			if strings.HasPrefix(l, "+OK") && (verb == "RETR" || verb == "TOP") {
				if got := c.multi(); bytes.Contains(got, []byte("SECRET-BOB")) {
					t.Fatalf("%s returned bob's mail", cmd)
				}
			}
			if strings.Contains(l, "SECRET-BOB") {
				t.Fatalf("%s: %q", cmd, l)
			}
		}
	}
	for _, a := range []string{"0", "4", "5", "99", "4294967295"} {
		if l := c.cmd("DELE %s", a); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("DELE %s: %q", a, l)
		}
	}
	c.ok("QUIT")
	if ms, _ := f.store.Messages(context.Background(), "bob"); len(ms) != 2 {
		t.Errorf("bob lost mail: %d messages", len(ms))
	}
}

func TestInUse(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	a := dial(t, ts.addr)
	a.login("alice")
	b := dial(t, ts.addr)
	b.ok("USER alice")
	if l := b.cmd("PASS alice-pw"); !strings.HasPrefix(l, "-ERR [IN-USE]") {
		t.Fatalf("second session: %q", l)
	}
	b.login("bob") // another mailbox is free
	a.ok("QUIT")
	a.closed()
	c := dial(t, ts.addr)
	c.login("alice") // free again after QUIT
	c.conn.Close()
	time.Sleep(100 * time.Millisecond)
	d := dial(t, ts.addr)
	d.login("alice") // and after a dropped connection
}

func TestAuthPlain(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	plain := func(authz, user, pass string) string {
		return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
	}
	c := dial(t, ts.addr)
	c.ok("AUTH")
	if got := string(c.multi()); got != "PLAIN\r\n" {
		t.Errorf("AUTH list = %q", got)
	}
	for _, bad := range []string{"AUTH CRAM-MD5", "AUTH PLAIN !!!", "AUTH PLAIN " + plain("", "alice", "wrong"),
		"AUTH PLAIN " + plain("bob", "alice", "alice-pw"), "AUTH PLAIN =", "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("alice"))} {
		if l := c.cmd("%s", bad); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("%s: %q", bad, l)
		}
	}
	if l := c.cmd("AUTH PLAIN"); l != "+ " {
		t.Fatalf("continuation = %q", l)
	}
	if l := c.cmd("*"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("cancel: %q", l)
	}
	c.cmd("AUTH PLAIN")
	c.ok("%s", plain("", "bob", users["bob"]))
	c.ok("QUIT")

	c = dial(t, ts.addr)
	c.ok("AUTH PLAIN %s", plain("alice", "alice", users["alice"]))
	if l := c.ok("STAT"); !strings.HasPrefix(l, "+OK 3 ") {
		t.Errorf("STAT = %q", l)
	}
}

func TestNotServing(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", func(o *Options) { o.Serving = servingOnly("bob") }, nil)
	c := dial(t, ts.addr)
	c.ok("USER alice")
	if l := c.cmd("PASS alice-pw"); l != "-ERR [SYS/PERM] your mailbox server is up, use it" {
		t.Errorf("not serving: %q", l)
	}
	c.login("bob")
}

type servingOnly string

func (s servingOnly) Serves(mailbox string) (bool, string) {
	return mailbox == string(s), "your mailbox server is up, use it"
}

func TestGarbage(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", func(o *Options) { o.MaxLineLength = 128 }, nil)
	c := dial(t, ts.addr)
	if l := c.cmd("%s", strings.Repeat("A", 1000)); l != "-ERR line too long" {
		t.Errorf("overlong: %q", l)
	}
	for _, junk := range []string{"NOOP\x00", "\x00\x00\x00", "\xff\xfe USER", "USER", "LIST 1", "RETR 1"} {
		if l := c.cmd("%s", junk); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("%q: %q", junk, l)
		}
	}
	c.login("alice")
	c.ok("NOOP")
}

func TestTooManyErrors(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := dial(t, ts.addr)
	for i := 0; i < maxErrors-1; i++ {
		if l := c.cmd("\x01\xff garbage %d", i); !strings.HasPrefix(l, "-ERR") {
			t.Fatalf("garbage: %q", l)
		}
	}
	c.cmd("XYZZY")
	if l := c.line(); !strings.Contains(l, "too many errors") {
		t.Errorf("after %d errors: %q", maxErrors, l)
	}
	if !c.closed() {
		t.Error("still open")
	}
}

func TestPlaintextRefusedOffLoopback(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "stls", nil, func(l net.Listener) net.Listener { return remoteListener{l} })
	c := dial(t, ts.addr)
	c.ok("CAPA")
	capa := string(c.multi())
	if strings.Contains(capa, "USER") || strings.Contains(capa, "PLAIN") || !strings.Contains(capa, "STLS") {
		t.Errorf("CAPA off loopback without TLS: %q", capa)
	}
	if l := c.cmd("USER alice"); !strings.HasPrefix(l, "-ERR [AUTH]") || !strings.Contains(l, "STLS") {
		t.Errorf("USER: %q", l)
	}
	if l := c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3"); !strings.HasPrefix(l, "-ERR [AUTH]") {
		t.Errorf("AUTH PLAIN: %q", l)
	}
	c.ok("STLS")
	tc := tls.Client(c.conn, clientTLSConfig())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.ok("CAPA")
	capa = string(c.multi())
	if !strings.Contains(capa, "USER") || strings.Contains(capa, "STLS") {
		t.Errorf("CAPA after STLS: %q", capa)
	}
	if l := c.cmd("STLS"); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("STLS twice: %q", l)
	}
	c.login("alice")
	c.ok("RETR 1")
	if got := c.multi(); !bytes.Equal(got, f.msgs["alice"][0]) {
		t.Errorf("RETR over TLS: %q", got)
	}
	c.ok("QUIT")
}

func TestSTLSInjection(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "stls", nil, nil)
	c := dial(t, ts.addr)
	fmt.Fprintf(c.conn, "STLS\r\nUSER alice\r\n")
	if !c.closed() {
		t.Error("server went on after commands pipelined behind STLS")
	}
}

func TestImplicitTLS(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "implicit", nil, func(l net.Listener) net.Listener { return remoteListener{l} })
	conn, err := tls.Dial("tcp", ts.addr, clientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatal(l)
	}
	c.login("bob")
	c.ok("TOP 2 0")
	if got := string(c.multi()); !strings.Contains(got, "SECRET-BOB") {
		t.Errorf("TOP: %q", got)
	}
	// TLS below 1.2 is refused.
	old, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Error("TLS 1.1 accepted")
	}
}

func TestShutdown(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := dial(t, ts.addr)
	c.login("alice")
	c.ok("DELE 1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l := c.line(); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Errorf("idle session at shutdown: %q", l)
	}
	if ms, _ := f.store.Messages(context.Background(), "alice"); len(ms) != 3 {
		t.Errorf("DELE applied without QUIT")
	}
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Error("listener still open")
	}
}

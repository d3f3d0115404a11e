package imap

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"testing"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"

	"github.com/lifelinemail/lifeline/internal/promreg"
)

func TestLoginAndCapabilities(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)

	c := dial(t, ts.addr, nil)
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []goimap.Cap{goimap.CapIMAP4rev1, goimap.CapIMAP4rev2, "AUTH=PLAIN"} {
		if !caps.Has(want) {
			t.Errorf("capabilities before login lack %s: %v", want, caps)
		}
	}
	if caps.Has(goimap.CapLoginDisabled) || caps.Has(goimap.CapStartTLS) {
		t.Errorf("loopback without TLS config: %v", caps)
	}
	err = c.Login("alice", "wrong").Wait()
	if statusCode(err) != goimap.ResponseCodeAuthenticationFailed {
		t.Errorf("bad password: %v", err)
	}
	err = c.Login("broken", "x").Wait()
	if statusCode(err) != goimap.ResponseCodeUnavailable {
		t.Errorf("temporary failure: %v", err)
	}
	if err := c.Login("alice", users["alice"]).Wait(); err != nil {
		t.Fatal(err)
	}
	caps, err = c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []goimap.Cap{goimap.CapIdle, goimap.CapUIDPlus, goimap.CapMove, goimap.CapSpecialUse,
		goimap.CapNamespace, goimap.CapESearch, goimap.CapSearchRes, goimap.CapBinary, goimap.CapUnselect,
		goimap.Cap("APPENDLIMIT=67108864")} {
		if !caps.Has(want) {
			t.Errorf("capabilities after login lack %s: %v", want, caps)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}

	// AUTHENTICATE PLAIN, with and without an initial response.
	c = dial(t, ts.addr, nil)
	if err := c.Authenticate(sasl.NewPlainClient("", "bob", users["bob"])); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN: %v", err)
	}
	r := dialRaw(t, ts.addr)
	r.conn.Write([]byte("A AUTHENTICATE PLAIN\r\n"))
	if l := r.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("continuation: %q", l)
	}
	r.conn.Write([]byte(base64.StdEncoding.EncodeToString([]byte("\x00carol\x00carol-pw")) + "\r\n"))
	if l := r.line(); !strings.HasPrefix(l, "A OK") {
		t.Fatalf("AUTHENTICATE: %q", l)
	}
	// Proxy authorisation is refused: a user reads only their own mailbox.
	r = dialRaw(t, ts.addr)
	_, done := r.cmd("AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("bob\x00alice\x00alice-pw")))
	if !strings.HasPrefix(done, "NO") {
		t.Errorf("AUTHENTICATE as another user: %q", done)
	}

	if got := counterValue(ts.metrics.logins.WithLabelValues("imap", promreg.LoginOK)); got != 3 {
		t.Errorf("successful logins counted: %v", got)
	}
	if got := counterValue(ts.metrics.logins.WithLabelValues("imap", promreg.LoginFailed)); got != 1 {
		t.Errorf("failed logins counted: %v", got)
	}
}

func TestTooManyLoginFailures(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	for i := 0; i < maxLoginFailures; i++ {
		if _, done := r.cmd("LOGIN alice wrong"); !strings.HasPrefix(done, "NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("attempt %d: %q", i, done)
		}
	}
	if l := r.line(); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("after %d failures: %q", maxLoginFailures, l)
	}
	if !r.closed() {
		t.Error("connection still open")
	}
}

func TestNotServing(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", func(o *Options) { o.Serving = servingOnly("bob") }, nil)
	r := dialRaw(t, ts.addr)
	_, done := r.cmd(`LOGIN alice alice-pw`)
	if done != "NO [UNAVAILABLE] your mailbox server is up, use it" {
		t.Errorf("not serving: %q", done)
	}
	r.login("bob")
	// A mailbox name that could name another user's Sent folder is refused.
	_, done = r.cmd(`LOGIN evil evil-pw`)
	if !strings.HasPrefix(done, "BAD") && !strings.HasPrefix(done, "NO") {
		t.Errorf("second LOGIN: %q", done)
	}
	r = dialRaw(t, ts.addr)
	if _, done := r.cmd(`LOGIN evil evil-pw`); !strings.HasPrefix(done, "NO [UNAVAILABLE]") {
		t.Errorf("mailbox with / in its domain: %q", done)
	}
}

type servingOnly string

func (s servingOnly) Serves(mailbox string) (bool, string) {
	return mailbox == string(s) || mailbox == "x@example.com/Sent", "your mailbox server is up, use it"
}

func TestListStatusNamespace(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	u := r.ok(`LIST "" "*"`)
	want := []string{`* LIST (\HasNoChildren) "/" INBOX`, `* LIST (\HasNoChildren \Sent) "/" "Sent"`}
	if !slices.Equal(u, want) {
		t.Errorf("LIST * = %q", u)
	}
	if u := r.ok(`LIST "" ""`); !slices.Equal(u, []string{`* LIST (\Noselect) "/" ""`}) {
		t.Errorf(`LIST "" "" = %q`, u)
	}
	if u := r.ok(`LIST "" "inbox"`); !slices.Equal(u, want[:1]) {
		t.Errorf(`LIST "" "inbox" = %q`, u)
	}
	if u := r.ok(`LIST (SPECIAL-USE) "" "*"`); !slices.Equal(u, want[1:]) {
		t.Errorf(`LIST (SPECIAL-USE) = %q`, u)
	}
	if u := r.ok(`LIST "" "%%/%%"`); len(u) != 0 {
		t.Errorf(`LIST "" "%%/%%" = %q`, u)
	}
	if u := r.ok(`LSUB "" "*"`); len(u) != 2 {
		t.Errorf(`LSUB = %q`, u)
	}
	u = r.ok(`LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))`)
	if !slices.Contains(u, `* STATUS INBOX (MESSAGES 3 UNSEEN 3)`) || !slices.Contains(u, `* STATUS "Sent" (MESSAGES 0 UNSEEN 0)`) {
		t.Errorf("LIST-STATUS = %q", u)
	}
	info, err := f.j.Mailbox(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	u = r.ok(`STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT)`)
	size := len(f.msgs["alice"][0]) + len(f.msgs["alice"][1]) + len(f.msgs["alice"][2])
	if len(u) != 1 || !strings.Contains(u[0], "MESSAGES 3 ") || !strings.Contains(u[0], "UIDNEXT 4 ") ||
		!strings.Contains(u[0], "UIDVALIDITY "+strconv.Itoa(int(info.UIDValidity))+" ") || !strings.Contains(u[0], "SIZE "+strconv.Itoa(size)) {
		t.Errorf("STATUS INBOX = %q", u)
	}
	if _, done := r.cmd(`STATUS bob (MESSAGES)`); !strings.HasPrefix(done, "NO [NONEXISTENT]") {
		t.Errorf("STATUS of another mailbox: %q", done)
	}
	if u := r.ok(`NAMESPACE`); !slices.Equal(u, []string{`* NAMESPACE (("" "/")) NIL NIL`}) {
		t.Errorf("NAMESPACE = %q", u)
	}
	for cmd, code := range map[string]string{
		`CREATE Archive`:       "NO [CANNOT]",
		`CREATE Sent`:          "NO [ALREADYEXISTS]",
		`DELETE INBOX`:         "NO [CANNOT]",
		`DELETE Archive`:       "NO [NONEXISTENT]",
		`RENAME Sent Outbox`:   "NO [CANNOT]",
		`SUBSCRIBE Sent`:       "OK",
		`UNSUBSCRIBE INBOX`:    "OK",
		`SUBSCRIBE Archive`:    "NO [NONEXISTENT]",
		`SELECT Archive`:       "NO [NONEXISTENT]",
		`SELECT "INBOX/Sent"`:  "NO [NONEXISTENT]",
		`EXAMINE "alice/Sent"`: "NO [NONEXISTENT]",
	} {
		if _, done := r.cmd("%s", cmd); !strings.HasPrefix(done, code) {
			t.Errorf("%s: %q, want %s", cmd, done, code)
		}
	}
}

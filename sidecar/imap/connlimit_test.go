package imap

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/metrictest"
	"github.com/lifelinemail/lifeline/sidecar/connlimit"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// refused returns lifeline_imap_connections_refused_total{reason}.
func refused(t testing.TB, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return metrictest.Value(t, reg, "lifeline_imap_connections_refused_total", "reason", reason)
}

// dialGreeted dials addr (through TLS with tc) and reads the server's first
// line; the connection is closed when the test ends.
func dialGreeted(t testing.TB, addr string, tc *tls.Config) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.Dial("tcp", addr, tc)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v (got %q)", err, line)
	}
	return c, r, line
}

// greeting returns the first line of a new connection to addr, and whether
// the server then closed the connection.
func greeting(t testing.TB, addr string, tc *tls.Config) (line string, closed bool) {
	t.Helper()
	c, r, line := dialGreeted(t, addr, tc)
	defer c.Close()
	_, err := r.ReadByte()
	return line, errors.Is(err, io.EOF)
}

// waitAdmitted polls until a new connection to addr is greeted with OK.
func waitAdmitted(t testing.TB, addr string, tc *tls.Config) {
	t.Helper()
	waitFor(t, "a connection to be admitted", func() bool {
		c, _, line := dialGreeted(t, addr, tc)
		defer c.Close()
		return strings.HasPrefix(line, "* OK")
	})
}

func TestConnectionLimitPerClient(t *testing.T) {
	f := newFixture(t)
	const perClient = 3
	ts := startServer(t, f, "", func(o *Options) { o.MaxConnectionsPerClient = perClient }, nil)

	// A second listener whose clients all come from 192.0.2.1: the address
	// the limit is tried on. The server's own listener is loopback, which
	// has no per-client limit (a proxy or program on this host).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remoteDone := make(chan error, 1)
	go func() { remoteDone <- ts.Serve(remoteListener{ln}) }()
	t.Cleanup(func() {
		ts.stop(t)
		if err := <-remoteDone; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve of the second listener returned %v", err)
		}
	})

	remote := ln.Addr().String()
	var open []*raw
	for range perClient {
		open = append(open, dialRaw(t, remote))
	}

	line, closed := greeting(t, remote, nil)
	if line != "* BYE Too many connections from your address, try again later\r\n" || !closed {
		t.Fatalf("connection over the per-client limit: %q, closed %v", line, closed)
	}
	if n := refused(t, ts.reg, connlimit.ReasonPerClient); n != 1 {
		t.Errorf("refused{per_client} = %v, want 1", n)
	}
	if n := refused(t, ts.reg, connlimit.ReasonTotal); n != 0 {
		t.Errorf("refused{total} = %v, want 0", n)
	}

	// Another address is not held back by this one's connections, and
	// loopback has no per-client limit.
	for range perClient + 1 {
		dialRaw(t, ts.addr)
	}

	// A connection counts until it closes: after LOGOUT a new one is let in.
	if u, done := open[0].cmd("LOGOUT"); !strings.HasPrefix(done, "OK") || !slices.ContainsFunc(u, func(l string) bool { return strings.HasPrefix(l, "* BYE") }) {
		t.Fatalf("LOGOUT: %q %q", u, done)
	}
	open[0].conn.Close()
	waitAdmitted(t, remote, nil)

	// Closing every connection gives every slot back.
	for _, r := range open[1:] {
		r.conn.Close()
	}
	waitFor(t, "all slots free", func() bool { return ts.limits.Open() == perClient+1 }) // loopback's
}

func TestConnectionLimitTotal(t *testing.T) {
	for _, mode := range []string{"", "implicit"} {
		t.Run(fmt.Sprintf("tls=%q", mode), func(t *testing.T) {
			f := newFixture(t)
			ts := startServer(t, f, mode, func(o *Options) {
				o.MaxConnections = 2
				o.MaxConnectionsPerClient = -1
			}, nil)
			var tc *tls.Config
			if mode == "implicit" {
				tc = clientTLSConfig()
			}
			var held []net.Conn
			for range 2 {
				c, _, l := dialGreeted(t, ts.addr, tc)
				if !strings.HasPrefix(l, "* OK") {
					t.Fatalf("greeting %q", l)
				}
				held = append(held, c)
			}

			// The refusal of an implicit-TLS connection is sent under TLS.
			line, closed := greeting(t, ts.addr, tc)
			if line != "* BYE Too many connections, try again later\r\n" || !closed {
				t.Fatalf("connection over the limit: %q, closed %v", line, closed)
			}
			if n := refused(t, ts.reg, connlimit.ReasonTotal); n != 1 {
				t.Errorf("refused{total} = %v, want 1", n)
			}

			held[1].Close()
			waitAdmitted(t, ts.addr, tc)
			held[0].Close()
			waitFor(t, "all slots free", func() bool { return ts.limits.Open() == 0 })
		})
	}
}

// A connection that never completes its TLS handshake is counted until the
// server gives up on it, then uncounted.
func TestConnectionLimitFailedHandshake(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "implicit", func(o *Options) { o.MaxConnections = 1 }, nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection to be counted", func() bool { return ts.limits.Open() == 1 })
	if line, closed := greeting(t, ts.addr, clientTLSConfig()); !strings.HasPrefix(line, "* BYE Too many connections") || !closed {
		t.Fatalf("connection over the limit: %q, closed %v", line, closed)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed handshake to be uncounted", func() bool { return ts.limits.Open() == 0 })
	waitAdmitted(t, ts.addr, clientTLSConfig())
}

func keywordList(prefix string, n int) []goimap.Flag {
	out := make([]goimap.Flag, n)
	for i := range out {
		out[i] = goimap.Flag(fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestStoreKeywordLimit(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")
	store := func(set goimap.SeqSet, op goimap.StoreFlagsOp, flags []goimap.Flag) error {
		return c.Store(set, &goimap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close()
	}
	stored := func(uid uint32) []string {
		fl, err := f.store.Flags(t.Context(), "alice", uid)
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}

	full := keywordList("k", userview.MaxKeywords)
	if err := store(goimap.SeqSetNum(1), goimap.StoreFlagsAdd, append(full, goimap.FlagSeen)); err != nil {
		t.Fatalf("STORE of %d keywords: %v", userview.MaxKeywords, err)
	}
	// Again, and in another case: nothing new, no error (RFC 9051 §2.3.2).
	if err := store(goimap.SeqSetNum(1), goimap.StoreFlagsAdd, keywordList("K", userview.MaxKeywords)); err != nil {
		t.Fatalf("STORE of the same keywords: %v", err)
	}
	if n := len(stored(1)); n != userview.MaxKeywords+1 {
		t.Fatalf("message 1 has %d flags, want %d", n, userview.MaxKeywords+1)
	}

	// One more on a full message: NO [LIMIT], and message 2, which has room,
	// takes it.
	err := store(goimap.SeqSetNum(1, 2), goimap.StoreFlagsAdd, []goimap.Flag{"extra"})
	if statusCode(err) != goimap.ResponseCodeLimit {
		t.Fatalf("STORE over the keyword limit: %v, want NO [LIMIT]", err)
	}
	if fl := stored(1); len(fl) != userview.MaxKeywords+1 || slices.Contains(fl, "extra") {
		t.Errorf("message 1 changed by a refused STORE: %v", fl)
	}
	if fl := stored(2); !slices.Equal(fl, []string{"extra"}) {
		t.Errorf("message 2 = %v, want [extra]", fl)
	}

	// More than the limit in one command: refused before any message changes.
	err = store(goimap.SeqSetNum(3), goimap.StoreFlagsAdd, keywordList("m", 8000))
	if statusCode(err) != goimap.ResponseCodeLimit {
		t.Fatalf("STORE of 8000 keywords: %v, want NO [LIMIT]", err)
	}
	err = store(goimap.SeqSetNum(3), goimap.StoreFlagsSet, keywordList("m", userview.MaxKeywords+1))
	if statusCode(err) != goimap.ResponseCodeLimit {
		t.Fatalf("STORE FLAGS of %d keywords: %v, want NO [LIMIT]", userview.MaxKeywords+1, err)
	}
	if fl, _ := f.store.Flags(t.Context(), "alice", 3); len(fl) != 0 {
		t.Errorf("message 3 changed by refused STOREs: %v", fl)
	}

	// A keyword too long is a limit too, not a syntax error.
	err = store(goimap.SeqSetNum(3), goimap.StoreFlagsAdd, []goimap.Flag{goimap.Flag(strings.Repeat("x", userview.MaxKeywordLength+1))})
	if statusCode(err) != goimap.ResponseCodeLimit {
		t.Fatalf("STORE of a long keyword: %v, want NO [LIMIT]", err)
	}
	if err := store(goimap.SeqSetNum(3), goimap.StoreFlagsAdd, []goimap.Flag{goimap.Flag(strings.Repeat("x", userview.MaxKeywordLength))}); err != nil {
		t.Fatalf("STORE of a keyword of the longest length: %v", err)
	}

	// Removing from a full message works, even naming thousands.
	if err := store(goimap.SeqSetNum(1), goimap.StoreFlagsDel, keywordList("K", 8000)); err != nil {
		t.Fatalf("STORE -FLAGS: %v", err)
	}
	if fl := stored(1); !slices.Equal(fl, []string{userview.FlagSeen}) {
		t.Errorf("message 1 after -FLAGS = %v, want [\\Seen]", fl)
	}
	if err := store(goimap.SeqSetNum(1), goimap.StoreFlagsAdd, []goimap.Flag{"extra"}); err != nil {
		t.Errorf("STORE after room was made: %v", err)
	}
}

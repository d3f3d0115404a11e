package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/metrictest"
	"github.com/lifelinemail/lifeline/sidecar/connlimit"
)

// refused returns lifeline_pop3_connections_refused_total{reason}.
func refused(t testing.TB, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return metrictest.Value(t, reg, "lifeline_pop3_connections_refused_total", "reason", reason)
}

func dialConn(t testing.TB, addr string, tc *tls.Config) net.Conn {
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
	return c
}

// greeting dials addr (through TLS with tc) and returns the first line, and
// whether the server then closed the connection.
func greeting(t testing.TB, addr string, tc *tls.Config) (line string, closed bool) {
	t.Helper()
	c := dialConn(t, addr, tc)
	defer c.Close()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v (got %q)", err, line)
	}
	_, err = r.ReadByte()
	return line, errors.Is(err, io.EOF)
}

// waitAdmitted polls until a new connection to addr is greeted with +OK.
func waitAdmitted(t testing.TB, addr string, tc *tls.Config) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dialConn(t, addr, tc)
		l, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatalf("greeting: %v", err)
		}
		if strings.HasPrefix(l, "+OK") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection admitted; last greeting %q", l)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitOpen(t testing.TB, ts *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ts.limits.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections counted, want %d", ts.limits.Open(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
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

	remote := ln.Addr().String()
	var open []*client
	for range perClient {
		open = append(open, dial(t, remote))
	}

	line, closed := greeting(t, remote, nil)
	if line != "-ERR [SYS/TEMP] too many connections from your address, try again later\r\n" || !closed {
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
		dial(t, ts.addr)
	}

	// A connection counts until it closes: after QUIT a new one is let in.
	open[0].ok("QUIT")
	if !open[0].closed() {
		t.Fatal("QUIT did not close the connection")
	}
	waitAdmitted(t, remote, nil)

	for _, c := range open[1:] {
		c.conn.Close()
	}
	waitOpen(t, ts, perClient+1) // loopback's

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-remoteDone; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve of the second listener returned %v", err)
	}
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
				c := dialConn(t, ts.addr, tc)
				if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
					t.Fatalf("greeting %q, %v", l, err)
				}
				held = append(held, c)
			}

			// The refusal of an implicit-TLS connection is sent under TLS.
			line, closed := greeting(t, ts.addr, tc)
			if line != "-ERR [SYS/TEMP] too many connections, try again later\r\n" || !closed {
				t.Fatalf("connection over the limit: %q, closed %v", line, closed)
			}
			if n := refused(t, ts.reg, connlimit.ReasonTotal); n != 1 {
				t.Errorf("refused{total} = %v, want 1", n)
			}

			held[1].Close()
			waitAdmitted(t, ts.addr, tc)
			held[0].Close()
			waitOpen(t, ts, 0)
		})
	}
}

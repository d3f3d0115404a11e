package connlimit

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func newLimiter(t *testing.T, max, perClient int) (*Limiter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := New(Options{Max: max, PerClient: perClient, Protocol: "test", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l, reg
}

func TestClientKey(t *testing.T) {
	for _, c := range []struct{ ip, key string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"}, // IPv4-mapped counts as the IPv4 address
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", ""}, // loopback: no per-client limit
		{"127.0.0.1", ""},
		{"::ffff:127.0.0.2", ""},
		{"unix", ""},
		{"", ""},
		{"not-an-ip", "not-an-ip"},
	} {
		if got := clientKey(c.ip); got != c.key {
			t.Errorf("clientKey(%q) = %q, want %q", c.ip, got, c.key)
		}
	}
}

func TestAcquireRelease(t *testing.T) {
	l, _ := newLimiter(t, 5, 2)
	for _, ip := range []string{"192.0.2.1", "192.0.2.1"} {
		if r := l.Acquire(ip); r != "" {
			t.Fatalf("Acquire(%s) = %q", ip, r)
		}
	}
	if r := l.Acquire("192.0.2.1"); r != ReasonPerClient {
		t.Fatalf("third from one address: %q, want %q", r, ReasonPerClient)
	}
	// The same /64 is the same client; another /64 is not.
	if r := l.Acquire("2001:db8::1"); r != "" {
		t.Fatal(r)
	}
	if r := l.Acquire("2001:db8::2"); r != "" {
		t.Fatal(r)
	}
	if r := l.Acquire("2001:db8::3"); r != ReasonPerClient {
		t.Fatalf("third from one /64: %q", r)
	}
	if r := l.Acquire("2001:db8:0:1::1"); r != "" {
		t.Fatal(r)
	}
	// Five open: the total refuses before the per-client limit is asked.
	if r := l.Acquire("unix"); r != ReasonTotal {
		t.Fatalf("sixth: %q, want %q", r, ReasonTotal)
	}
	if l.Open() != 5 {
		t.Fatalf("Open = %d", l.Open())
	}
	l.Release("192.0.2.1")
	if r := l.Acquire("192.0.2.1"); r != "" {
		t.Fatalf("after Release: %q", r)
	}
	l.Release("2001:db8::1")
	// Unix socket clients have no per-client limit.
	if r := l.Acquire("unix"); r != "" {
		t.Fatal(r)
	}
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "2001:db8::2", "2001:db8:0:1::1", "unix"} {
		l.Release(ip)
	}
	if l.Open() != 0 || len(l.byClient) != 0 {
		t.Fatalf("after releasing all: %d open, %v", l.Open(), l.byClient)
	}
}

func TestNoLimits(t *testing.T) {
	l, reg := newLimiter(t, -1, -1)
	for range 10000 {
		if r := l.Acquire("192.0.2.1"); r != "" {
			t.Fatal(r)
		}
	}
	for _, r := range Reasons {
		if n := counter(t, reg, r); n != 0 {
			t.Fatalf("%v refused (%s)", n, r)
		}
	}
}

// counter returns lifeline_test_connections_refused_total{reason}.
func counter(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	l, err := New(Options{Protocol: "test", Registerer: reg}) // shares the collector
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var m dto.Metric
	if err := l.refused.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRefuse(t *testing.T) {
	l, reg := newLimiter(t, 0, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if r := l.Acquire("127.0.0.1"); r == "" {
				t.Error("admitted over a limit of 0")
			}
			l.Refuse(c, nil, "-ERR go away\r\n")
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "-ERR go away\r\n" {
		t.Fatalf("refusal: %q, %v", line, err)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("connection still open after the refusal")
	}
	if n := counter(t, reg, ReasonTotal); n != 1 {
		t.Fatalf("refused{total} = %v", n)
	}

	// After Close, connections are closed without a word.
	l.Close()
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c2).ReadString('\n'); err == nil || strings.TrimSpace(line) != "" {
		t.Fatalf("after Close: %q, %v", line, err)
	}
}

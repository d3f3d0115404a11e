package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

func newProbe(t *testing.T, cfg ProbeConfig) Probe {
	t.Helper()
	p, err := NewProbe(cfg)
	if err != nil {
		t.Fatalf("NewProbe(%+v): %v", cfg, err)
	}
	return p
}

func check(p Probe) error {
	return p.Check(context.Background())
}

// fakeLineServer accepts connections on loopback and hands each to serve;
// it is a fault injector (silence, odd replies), not a mail server.
func fakeLineServer(t *testing.T, serve func(c *textproto.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				tc := textproto.NewConn(c)
				defer tc.Close()
				serve(tc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// scripted answers each command whose prefix matches with the reply; the
// greeting is sent first.
func scripted(greeting string, replies map[string]string) func(c *textproto.Conn) {
	return func(c *textproto.Conn) {
		if err := c.PrintfLine("%s", greeting); err != nil {
			return
		}
		for {
			line, err := c.ReadLine()
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(line, " ")
			if strings.HasPrefix(verb, "MAIL") || strings.HasPrefix(verb, "RCPT") {
				verb, _, _ = strings.Cut(line, ":")
			}
			reply, ok := replies[strings.ToUpper(verb)]
			if !ok {
				reply = "500 5.5.2 unknown command"
			}
			if err := c.PrintfLine("%s", reply); err != nil {
				return
			}
			if verb == "QUIT" {
				return
			}
		}
	}
}

func TestSMTPProbeSteps(t *testing.T) {
	good := map[string]string{
		"EHLO":      "250-fake.test\r\n250-PIPELINING\r\n250 8BITMIME",
		"LHLO":      "250-fake.test\r\n250 8BITMIME",
		"MAIL FROM": "250 2.1.0 Ok",
		"RCPT TO":   "250 2.1.5 Ok",
		"RSET":      "250 2.0.0 Ok",
		"QUIT":      "221 2.0.0 Bye",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name, typ, greeting string
		replies             map[string]string
		want                []string // nil: success
	}{
		{"smtp ok", ProbeSMTP, "220 fake.test ESMTP", good, nil},
		{"lmtp ok", ProbeLMTP, "220 fake.test LMTP", good, nil},
		{"greeting 421", ProbeSMTP, "421 4.3.2 shutting down", good, []string{"greeting", "421"}},
		{"ehlo refused", ProbeSMTP, "220 fake.test", with("EHLO", "502 5.5.1 no"), []string{"EHLO", "502"}},
		{"mail refused", ProbeLMTP, "220 fake.test", with("MAIL FROM", "451 4.3.0 disk full"), []string{"MAIL FROM:<>", "451", "4.3.0 disk full"}},
		{"rcpt tempfail", ProbeLMTP, "220 fake.test", with("RCPT TO", "451 4.3.0 userdb lookup failed"), []string{"RCPT TO:<canary@fake.test>", "451", "userdb"}},
		{"rcpt 251", ProbeSMTP, "220 fake.test", with("RCPT TO", "251 2.1.5 forwarded"), nil},
		{"rset refused", ProbeLMTP, "220 fake.test", with("RSET", "500 what"), []string{"RSET", "500"}},
		{"quit ignored", ProbeLMTP, "220 fake.test", with("QUIT", "500 no"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeLineServer(t, scripted(tc.greeting, tc.replies))
			err := check(newProbe(t, ProbeConfig{Type: tc.typ, Address: addr, Canary: "canary@fake.test", Timeout: 5 * time.Second}))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			mustErrContain(t, err, tc.want...)
		})
	}
}

func TestIMAPProbeSteps(t *testing.T) {
	imap := func(greeting string, caps string, login string) func(c *textproto.Conn) {
		return func(c *textproto.Conn) {
			if c.PrintfLine("%s", greeting) != nil {
				return
			}
			for {
				line, err := c.ReadLine()
				if err != nil {
					return
				}
				tag, rest, _ := strings.Cut(line, " ")
				cmd, _, _ := strings.Cut(rest, " ")
				switch cmd {
				case "CAPABILITY":
					_ = c.PrintfLine("* CAPABILITY %s", caps)
					_ = c.PrintfLine("%s OK done", tag)
				case "LOGIN":
					_ = c.PrintfLine("%s %s", tag, login)
				case "LOGOUT":
					_ = c.PrintfLine("* BYE")
					_ = c.PrintfLine("%s OK bye", tag)
					return
				default:
					_ = c.PrintfLine("%s BAD what", tag)
				}
			}
		}
	}
	for _, tc := range []struct {
		name, greeting, caps, login string
		want                        []string
	}{
		{"ok", "* OK ready", "IMAP4rev1 AUTH=PLAIN", "OK logged in", nil},
		{"preauth", "* PREAUTH hi", "IMAP4rev1", "BAD already", nil},
		{"bye", "* BYE overloaded", "IMAP4rev1", "OK", []string{"greeting", "BYE overloaded"}},
		{"not imap4rev1", "* OK", "IMAP2", "OK", []string{"CAPABILITY", "IMAP4rev1"}},
		{"logindisabled", "* OK", "IMAP4rev1 LOGINDISABLED", "OK", []string{"LOGIN", "LOGINDISABLED"}},
		{"login no", "* OK", "IMAP4rev1", "NO [AUTHENTICATIONFAILED] nope", []string{"LOGIN probe", "AUTHENTICATIONFAILED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeLineServer(t, imap(tc.greeting, tc.caps, tc.login))
			err := check(newProbe(t, ProbeConfig{Type: ProbeIMAP, Address: addr, User: "probe", Password: `se"cr\et`}))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			mustErrContain(t, err, tc.want...)
			if strings.Contains(err.Error(), `se"cr`) || strings.Contains(err.Error(), `se\"cr`) {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// TestProbeTimeout: a server that accepts and never answers is a failed
// probe within the timeout, not a hung loop.
func TestProbeTimeout(t *testing.T) {
	silent := fakeLineServer(t, func(c *textproto.Conn) {
		_, _ = c.ReadLine() // blocks until the probe gives up
	})
	for _, typ := range []string{ProbeLMTP, ProbeSMTP, ProbeIMAP} {
		t.Run(typ, func(t *testing.T) {
			start := time.Now()
			err := check(newProbe(t, ProbeConfig{Type: typ, Address: silent, Timeout: 200 * time.Millisecond}))
			elapsed := time.Since(start)
			mustErrContain(t, err, "greeting")
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("error %v is not a timeout", err)
			}
			if elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
				t.Fatalf("probe took %v with a 200ms timeout", elapsed)
			}
		})
	}
	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := newProbe(t, ProbeConfig{Type: ProbeLMTP, Address: silent, Timeout: time.Minute})
		done := make(chan error, 1)
		go func() { done <- p.Check(ctx) }()
		time.AfterFunc(50*time.Millisecond, cancel)
		select {
		case err := <-done:
			mustErrContain(t, err, "greeting")
		case <-time.After(10 * time.Second):
			t.Fatal("probe ignored its context")
		}
	})
	t.Run("http", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(block)
		start := time.Now()
		err := check(newProbe(t, ProbeConfig{Type: ProbeHTTP, URL: srv.URL, Timeout: 200 * time.Millisecond}))
		mustErrContain(t, err, "http probe")
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Fatalf("probe took %v with a 200ms timeout", elapsed)
		}
	})
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	p := newProbe(t, ProbeConfig{Type: ProbeTCP, Address: "tcp:" + addr})
	if err := check(p); err != nil {
		t.Fatalf("open port: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	mustErrContain(t, check(p), "tcp probe tcp:"+addr, "connect", "refused")

	// Unix sockets.
	sock := t.TempDir() + "/s"
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	for _, a := range []string{"unix:" + sock, sock} {
		if err := check(newProbe(t, ProbeConfig{Type: ProbeTCP, Address: a})); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
}

func TestHTTPProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusOK)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("userdb unreachable\n"))
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path   string
		expect int
		want   []string
	}{
		{"/ok", 0, nil},
		{"/down", 0, []string{"status 503, want 200", "userdb unreachable"}},
		{"/nocontent", 204, nil},
		{"/ok", 204, []string{"status 200, want 204"}},
		{"/redirect", 0, []string{"status 302"}},
	} {
		err := check(newProbe(t, ProbeConfig{Type: ProbeHTTP, URL: srv.URL + tc.path, ExpectStatus: tc.expect}))
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
			}
			continue
		}
		mustErrContain(t, err, tc.want...)
	}
	srv.Close()
	mustErrContain(t, check(newProbe(t, ProbeConfig{Type: ProbeHTTP, URL: srv.URL + "/ok"})), "http probe", "GET")
}

func TestNewProbeValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  ProbeConfig
		want string
	}{
		{ProbeConfig{}, "without a type"},
		{ProbeConfig{Type: "pop3", Address: "127.0.0.1:110"}, "unknown probe type"},
		{ProbeConfig{Type: ProbeLMTP}, "no address"},
		{ProbeConfig{Type: ProbeLMTP, Address: "tcp:nohostport"}, "missing port"},
		{ProbeConfig{Type: ProbeLMTP, Network: "udp", Address: "127.0.0.1:24"}, "unknown network"},
		{ProbeConfig{Type: ProbeLMTP, Address: "127.0.0.1:24", Canary: "<a@b>"}, "canary"},
		{ProbeConfig{Type: ProbeLMTP, Address: "127.0.0.1:24", Canary: "nodomain"}, "canary"},
		{ProbeConfig{Type: ProbeLMTP, Address: "127.0.0.1:24", Timeout: -1}, "negative timeout"},
		{ProbeConfig{Type: ProbeIMAP, Address: "192.0.2.1:143", User: "u", Password: "p"}, "imap probe login needs loopback"},
		{ProbeConfig{Type: ProbeIMAP, Address: "mail.example.com:143", User: "u", Password: "p"}, "imap probe login needs loopback"},
		{ProbeConfig{Type: ProbeIMAP, Address: "127.0.0.1:143", Password: "p"}, "password without user"},
		{ProbeConfig{Type: ProbeIMAP, Address: "127.0.0.1:143", User: "u", Password: "p\r\n"}, "printable ASCII"},
		{ProbeConfig{Type: ProbeHTTP, URL: "ftp://x/"}, "http://"},
		{ProbeConfig{Type: ProbeHTTP, URL: "http://x/", ExpectStatus: 42}, "not an HTTP status"},
	} {
		_, err := NewProbe(tc.cfg)
		mustErrContain(t, err, tc.want)
	}
	for _, cfg := range []ProbeConfig{
		{Type: ProbeIMAP, Address: "127.0.0.1:143", User: "u", Password: "p"},
		{Type: ProbeIMAP, Address: "[::1]:143", User: "u", Password: "p"},
		{Type: ProbeIMAP, Address: "localhost:143", User: "u", Password: "p"},
		{Type: ProbeIMAP, Address: "unix:/run/dovecot/imap", User: "u", Password: "p"},
		{Type: ProbeIMAP, Address: "192.0.2.1:143"}, // no login: no password to protect
	} {
		if _, err := NewProbe(cfg); err != nil {
			t.Errorf("NewProbe(%+v): %v", cfg, err)
		}
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct{ network, address, wantNet, wantAddr string }{
		{"", "tcp:127.0.0.1:24", "tcp", "127.0.0.1:24"},
		{"", "unix:/run/dovecot/lmtp", "unix", "/run/dovecot/lmtp"},
		{"", "/run/dovecot/lmtp", "unix", "/run/dovecot/lmtp"},
		{"", "[::1]:24", "tcp", "[::1]:24"},
		{"unix", "/x", "unix", "/x"},
	} {
		n, a, err := ParseAddress(tc.network, tc.address)
		if err != nil || n != tc.wantNet || a != tc.wantAddr {
			t.Errorf("ParseAddress(%q, %q) = %q, %q, %v", tc.network, tc.address, n, a, err)
		}
	}
}

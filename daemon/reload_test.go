package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/e2e"
)

// reloadConfig is the config of TestReloadKeepsSessions; interval, level
// and readTimeout are what the test changes.
func reloadConfig(dir, milterAddr, httpAddr, imapsAddr, probeAddr, interval, level, readTimeout string) string {
	return fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
read_timeout = %q
[http]
listen = %q
[mailbox_access]
serve = "always"
[imap]
listen = ""
listen_tls = %q
[pop3]
enabled = false
[tls]
cert_file = %q
key_file = %q
[auth]
passwd_file = %q
[log]
level = %q
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
interval = %q
fail_after = 1000
  [[server.probe]]
  type = "tcp"
  address = "tcp:%s"
`, filepath.Join(dir, "journal"), milterAddr, readTimeout, httpAddr, imapsAddr,
		filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "passwd"), level, interval, probeAddr)
}

// TestReloadKeepsSessions sends the daemon a reload (what SIGHUP sends) after
// changing the passwd-file, the certificate, the probe interval, the log
// level and a setting that needs a restart. An IMAP session logged in before
// the reload goes on (NOOP, FETCH) on its old TLS connection; a new login
// sees the new certificate and the new password, and the old password fails;
// probes run at the new interval; debug lines appear; the log names what
// needs a restart.
func TestReloadKeepsSessions(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	der1 := writeCert(t, certFile, keyFile)
	passwd := filepath.Join(dir, "passwd")
	writeUsers(t, passwd, map[string]string{"alice@example.com": "old pw"})
	probeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer probeLn.Close()
	go func() { // the probed "mailbox server": accept and close
		for {
			c, err := probeLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	milterAddr, httpAddr, imapsAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "lifeline.toml")
	write := func(interval, level, readTimeout string) {
		text := reloadConfig(dir, milterAddr, httpAddr, imapsAddr, probeLn.Addr().String(), interval, level, readTimeout)
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("1h", "info", "60s")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	level := new(slog.LevelVar)
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})), Version: "test",
			Ready: ready, Reload: reload, LogLevel: level,
			ReloadConfig: func() (*config.Config, error) { return config.Load(cfgPath) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v\n%s", err, logs)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	}()
	if act, _ := sendMilter(t, milterAddr, "m1", "alice@example.com"); act.Type != gomilter.ActionAccept {
		t.Fatalf("milter: %v", act)
	}

	dial := func() (*imapclient.Client, []byte) {
		t.Helper()
		c, err := imapclient.DialTLS(imapsAddr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatal(err)
		}
		// The certificate this connection was handshaken with.
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		return c, peerCert(t, imapsAddr)
	}
	fetchSubject := func(c *imapclient.Client) string {
		t.Helper()
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true}).Collect()
		if err != nil || len(msgs) != 1 || msgs[0].Envelope == nil {
			t.Fatalf("FETCH: %v %v", err, msgs)
		}
		return msgs[0].Envelope.Subject
	}

	old, cert := dial()
	defer old.Close()
	if !bytes.Equal(cert, der1) {
		t.Fatal("not the first certificate")
	}
	if err := old.Login("alice@example.com", "old pw").Wait(); err != nil {
		t.Fatalf("login before the reload: %v", err)
	}
	if _, err := old.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if s := fetchSubject(old); s != "m1" {
		t.Fatalf("subject %q", s)
	}
	probeRounds := func() float64 {
		v, _ := e2e.MetricSum(get(t, "http://"+httpAddr+"/metrics"), `lifeline_probe_seconds_count{server="dc",type="tcp"}`)
		return v
	}
	if err := e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) { return probeRounds() >= 1, nil }); err != nil {
		t.Fatal("no probe round at start")
	}
	if n := probeRounds(); n != 1 {
		t.Fatalf("%v probe rounds before the reload, want 1 (interval 1h)", n)
	}

	// The changes, then the reload.
	der2 := writeCert(t, certFile, keyFile)
	writeUsers(t, passwd, map[string]string{"alice@example.com": "new pw"})
	write("100ms", "debug", "30s")
	reload <- struct{}{}

	err = e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) {
		return bytes.Equal(peerCert(t, imapsAddr), der2), nil
	})
	if err != nil {
		t.Fatalf("the new certificate is not served after the reload: %v", err)
	}
	// The session from before the reload goes on.
	if err := old.Noop().Wait(); err != nil {
		t.Fatalf("NOOP on the session from before the reload: %v", err)
	}
	if s := fetchSubject(old); s != "m1" {
		t.Fatalf("FETCH on the session from before the reload: subject %q", s)
	}

	fresh, _ := dial()
	defer fresh.Close()
	if err := fresh.Login("alice@example.com", "old pw").Wait(); err == nil {
		t.Error("the old password still works after the reload")
	}
	if err := fresh.Login("alice@example.com", "new pw").Wait(); err != nil {
		t.Errorf("the new password fails after the reload: %v", err)
	}

	if err := e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) { return probeRounds() >= 4, nil }); err != nil {
		t.Errorf("the new probe interval (100ms) did not apply: %v rounds", probeRounds())
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after the reload, want debug", level.Level())
	}
	err = e2e.Poll(context.Background(), 10*time.Second, func() (bool, error) {
		return strings.Contains(logs.String(), "config reloaded"), nil
	})
	if err != nil {
		t.Fatal("no \"config reloaded\" line")
	}
	for _, want := range []string{"log level changed", "health: probe settings changed", "interval 1h0m0s → 100ms",
		"restart needed for: milter", "level=DEBUG"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if err := old.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT of the old session: %v", err)
	}
}

// peerCert is the certificate a new TLS handshake with addr presents.
func peerCert(t *testing.T, addr string) []byte {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw
}

// TestRestartNeeded: only sections other than log.level and the probe
// settings are reported.
func TestRestartNeeded(t *testing.T) {
	base := `
[journal]
path = "/tmp/j"
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:24"
`
	parse := func(extra string) *config.Config {
		t.Helper()
		c, err := config.Parse("t.toml", []byte(base+extra))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("")
	// Windows hold times with zones: a file read twice is no change.
	const window = "[[window]]\nserver = \"dc\"\nstart = 2026-12-01T20:00:00+01:00\nend = 2026-12-01T22:00:00+01:00\n"
	if got := restartNeeded(parse(window), parse(window)); len(got) != 0 {
		t.Errorf("the same windows reported: %v", got)
	}
	if got := restartNeeded(a, parse(window)); len(got) != 1 || got[0] != "window" {
		t.Errorf("a window added: %v", got)
	}
	if got := restartNeeded(a, parse("interval = \"1s\"\nfail_after = 9\n[log]\nlevel = \"debug\"\n")); len(got) != 0 {
		t.Errorf("reloadable changes reported: %v", got)
	}
	got := restartNeeded(a, parse("[http]\nlisten = \"127.0.0.1:9999\"\n[log]\nformat = \"json\"\n[imap]\nenabled = false\n"))
	if strings.Join(got, ",") != "http,log.format,imap" {
		t.Errorf("restartNeeded = %v", got)
	}
	b := parse("")
	b.Servers[0].Domains = []string{"example.org"}
	if got := restartNeeded(a, b); len(got) != 1 || !strings.HasPrefix(got[0], "server") {
		t.Errorf("domains changed: %v", got)
	}
}

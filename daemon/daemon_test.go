package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/journal"
)

// givenPorts are the ports freePort handed out in this test process: the
// kernel may offer a just-closed port again, and two listeners of one
// config must not get the same one (seen in CI: pop3.listen == milter.listen).
var (
	portsMu    sync.Mutex
	givenPorts = map[string]bool{}
)

// freePort returns a 127.0.0.1:PORT nothing listens on, never the same twice.
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if !givenPorts[addr] {
			givenPorts[addr] = true
			return addr
		}
	}
	t.Fatal("no free loopback port after 50 tries")
	return ""
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// TestServeJournalsAndShutsDown runs the wired daemon: a message sent by a
// milter client (as Postfix would) is journaled under the mailboxes the alias
// file names, metrics show it, and SIGTERM-style cancellation stops it cleanly.
func TestServeJournalsAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	aliases := filepath.Join(dir, "virtual")
	if err := os.WriteFile(aliases, []byte("sales@example.com  alice@example.com, bob@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg := milterConfig(t, dir, "tcp:"+milterAddr, httpAddr, fmt.Sprintf("[mapping]\nalias_file = %q\n", aliases))
	r := startDaemon(t, cfg)
	if got := get(t, "http://"+httpAddr+"/healthz"); strings.TrimSpace(got) != "ok" {
		t.Fatalf("healthz = %q", got)
	}

	bag := gomilter.NewMacroBag()
	sess, err := gomilter.NewClient("tcp", milterAddr).Session(bag)
	if err != nil {
		t.Fatal(err)
	}
	sendOne(t, sess, bag, "Sales+q@Example.com", "x@foreign.net")
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{`lifeline_milter_messages_total{result="journaled"} 1`, `lifeline_panics_total{component="milter"} 0`, "lifeline_journal_append_seconds_count 1", "lifeline_build_info"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	r.stop()
	if t.Failed() {
		t.FailNow()
	}

	j, err := OpenJournal(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	var entries []journal.Entry
	if err := j.Scan(context.Background(), time.Time{}, time.Time{}, func(e journal.Entry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	e := entries[0]
	if e.Envelope.QueueID != "4ABC" || e.Summary.Subject != "hello" || len(e.Envelope.Recipients) != 2 {
		t.Fatalf("entry = %+v", e)
	}
	r0, r1 := e.Envelope.Recipients[0], e.Envelope.Recipients[1]
	if strings.Join(r0.Mailboxes, ",") != "alice@example.com,bob@example.com" || r0.Server != "dovecot" || r0.State != journal.StateMTA {
		t.Errorf("alias recipient = %+v", r0)
	}
	if len(r1.Mailboxes) != 0 || r1.Server != "" {
		t.Errorf("foreign recipient = %+v", r1)
	}
	for _, mb := range []string{"alice@example.com", "bob@example.com"} {
		if info, err := j.Mailbox(context.Background(), mb); err != nil || info.Messages != 1 {
			t.Errorf("mailbox %s: %+v %v", mb, info, err)
		}
	}
	if problems, err := j.Verify(context.Background()); err != nil || len(problems) != 0 {
		t.Errorf("verify: %v %v", problems, err)
	}
}

// TestMilterUnixSocket: a unix milter socket replaces a stale one left by a
// killed process, is created 0660 (the MTA connects through Lifeline's
// group, no other local user can), and journals what an MTA sends on it.
func TestMilterUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "milter.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := stale.Close(); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	startDaemon(t, milterConfig(t, dir, "unix:"+sock, httpAddr, ""))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("milter socket mode = %v, want a socket with 0660", fi.Mode())
	}
	sess, err := gomilter.NewClient("unix", sock).Session(gomilter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sendOne(t, sess, nil, "alice@example.com")
	if metrics := get(t, "http://"+httpAddr+"/metrics"); !strings.Contains(metrics, `lifeline_milter_messages_total{result="journaled"} 1`) {
		t.Errorf("the message was not journaled")
	}
}

// sendOne sends one small message on sess the way Postfix does and fails
// unless the milter continues at every step and accepts at the end. bag, when
// not nil, gets the queue id "4ABC" at DATA.
func sendOne(t *testing.T, sess *gomilter.ClientSession, bag *gomilter.MacroBag, rcpts ...string) {
	t.Helper()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) {
			return sess.Conn("mx.example.net", gomilter.FamilyInet, 1234, "192.0.2.1")
		},
		func() (*gomilter.Action, error) { return sess.Helo("mx.example.net") },
		func() (*gomilter.Action, error) { return sess.Mail("s@example.org", "") },
	}
	for _, r := range rcpts {
		steps = append(steps, func() (*gomilter.Action, error) { return sess.Rcpt(r, "") })
	}
	steps = append(steps,
		func() (*gomilter.Action, error) {
			if bag != nil {
				bag.Set(gomilter.MacroQueueId, "4ABC")
			}
			return sess.DataStart()
		},
		func() (*gomilter.Action, error) { return sess.HeaderField("Subject", " hello", nil) },
		func() (*gomilter.Action, error) { return sess.HeaderField("Message-ID", " <m1@example.org>", nil) },
		func() (*gomilter.Action, error) { return sess.HeaderEnd() },
		func() (*gomilter.Action, error) { return sess.BodyChunk([]byte("body\r\n")) },
	)
	for i, step := range steps {
		act, err := step()
		if err != nil || act.Type != gomilter.ActionContinue {
			t.Fatalf("step %d: %v %v", i, act, err)
		}
	}
	_, act, err := sess.End()
	if err != nil || act.Type != gomilter.ActionAccept {
		t.Fatalf("end: %v %v", act, err)
	}
}

// milterConfig is a config with the journal in dir, the milter on
// milterListen, /metrics on httpAddr, no IMAP or POP3, one mailbox server for
// example.com, and extra TOML at the end.
// adminConfig is a daemon's config in dir with the milter on milterAddr and
// the admin API on httpAddr (token "t0ken"), IMAP and POP3 off, and rest
// (servers, [replay]…) after it.
func adminConfig(t *testing.T, dir, milterAddr, httpAddr, rest string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[pop3]
enabled = false
[imap]
enabled = false
[http]
listen = %q
admin_token = "t0ken"
`, filepath.Join(dir, "journal"), milterAddr, httpAddr)+rest))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func milterConfig(t *testing.T, dir, milterListen, httpAddr, extra string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = %q
[pop3]
enabled = false
[imap]
enabled = false
[http]
listen = %q
[[server]]
name = "dovecot"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:24"
%s`, filepath.Join(dir, "journal"), milterListen, httpAddr, extra)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMetricsListener: [http] metrics_listen serves /metrics and /healthz
// (for a Prometheus on another host) and not the admin API, which stays on
// the loopback listener.
func TestMetricsListener(t *testing.T) {
	dir := t.TempDir()
	httpAddr, metricsAddr := freePort(t), freePort(t)
	cfg := milterConfig(t, dir, "tcp:"+freePort(t), httpAddr, "")
	cfg.HTTP.MetricsListen = metricsAddr
	startDaemon(t, cfg)
	if m := get(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(m, "lifeline_milter_messages_total") {
		t.Errorf("/metrics on metrics_listen lacks Lifeline's metrics:\n%.500s", m)
	}
	if h := get(t, "http://"+metricsAddr+"/healthz"); strings.TrimSpace(h) != "ok" {
		t.Errorf("/healthz on metrics_listen: %q", h)
	}
	for _, path := range []string{"/v1/status", "/v1/outage"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on metrics_listen: %d, want 404 (no admin API there)", path, resp.StatusCode)
		}
	}
	if m := get(t, "http://"+httpAddr+"/metrics"); !strings.Contains(m, "lifeline_milter_messages_total") {
		t.Error("/metrics gone from the main listener")
	}
}

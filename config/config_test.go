package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/auth"
)

const minimal = `
[journal]
path = "/var/lib/lifeline/journal"
`

func TestMinimalDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Journal.Retention.D() != 90*24*time.Hour {
		t.Errorf("retention default = %v", c.Journal.Retention.D())
	}
	if c.Milter.Listen != DefaultMilterListen || c.HTTP.Listen != DefaultHTTPListen {
		t.Errorf("listen defaults = %q %q", c.Milter.Listen, c.HTTP.Listen)
	}
	if c.Milter.OnJournalError != "accept" || !*c.Mapping.StripDetail || c.Mapping.DetailDelimiter != "+" {
		t.Errorf("defaults: %+v %+v", c.Milter, c.Mapping)
	}
	if c.Milter.SpoolThreshold != 1<<20 {
		t.Errorf("spool threshold = %d", c.Milter.SpoolThreshold)
	}
}

func TestExampleFileIsValid(t *testing.T) {
	c, err := Load(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Servers) == 0 {
		t.Fatal("example declares no mailbox server")
	}
	// The example shows the defaults of the mail access keys: keep them so.
	d, err := Parse(filepath.Join("..", "contrib", "x.toml"), []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.MailboxAccess != d.MailboxAccess || c.TLS != d.TLS || c.Auth.PasswdFile != d.Auth.PasswdFile ||
		c.Auth.PerAddress.Policy() != d.Auth.PerAddress.Policy() || c.Auth.PerUser.Policy() != d.Auth.PerUser.Policy() {
		t.Errorf("example differs from the defaults:\n%+v %+v %+v\n%+v %+v %+v", c.MailboxAccess, c.TLS, c.Auth, d.MailboxAccess, d.TLS, d.Auth)
	}
	for _, l := range [][2]MailListener{{c.IMAP, d.IMAP}, {c.POP3, d.POP3}} {
		if l[0].On() != l[1].On() || l[0].PlainAddr() != l[1].PlainAddr() || l[0].ListenTLS != l[1].ListenTLS || l[0].IdleTimeout != l[1].IdleTimeout {
			t.Errorf("example listener %+v differs from the default %+v", l[0], l[1])
		}
	}
}

func TestFull(t *testing.T) {
	c, err := Parse("t.toml", []byte(`
[journal]
path = "j"
retention = "30d12h"
sweep_interval = "10m"
[milter]
listen = "unix:/run/l.sock"
on_journal_error = "tempfail"
spool_threshold = "512KiB"
read_timeout = "30s"
[http]
listen = "[::1]:9000"
[mapping]
strip_detail = false
detail_delimiter = "+-"
alias_file = "/etc/postfix/virtual"
[[server]]
name = "a"
domains = ["Example.com"]
lmtp = "tcp:127.0.0.1:24"
[[server]]
name = "b"
domains = ["other.org", "sub.other.org"]
lmtp = "unix:/var/run/dovecot/lmtp"
[log]
level = "debug"
format = "json"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Journal.Retention.D() != 30*24*time.Hour+12*time.Hour || c.Milter.SpoolThreshold != 512<<10 {
		t.Errorf("got %v %v", c.Journal.Retention.D(), c.Milter.SpoolThreshold)
	}
	if *c.Mapping.StripDetail || len(c.Servers) != 2 || c.Servers[1].Domains[1] != "sub.other.org" {
		t.Errorf("got %+v %+v", c.Mapping, c.Servers)
	}
}

// Every error in a file is reported at once, with its key and line.
func TestAllErrorsAtOnce(t *testing.T) {
	src := `[journal]
retention = "ninety days"
colour = "blue"
[milter]
listen = "127.0.0.1"
on_journal_error = "drop"
spool_threshold = 12
read_timeout = 5
[http]
listen = "nowhere"
[mapping]
detail_delimiter = "@"
[[server]]
name = "a"
domains = []
lmtp = "tcp:nohost"
[[server]]
name = "a"
domains = ["x.org"]
bogus = 1
[log]
level = "loud"
format = "xml"
[extra]
`
	_, err := Parse("t.toml", []byte(src))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	want := []struct {
		key  string
		line int
	}{
		{"journal.retention", 2},
		{"journal.colour", 3},
		{"journal.path", 1},
		{"milter.listen", 5},
		{"milter.on_journal_error", 6},
		{"milter.read_timeout", 8},
		{"http.listen", 10},
		{"mapping.detail_delimiter", 12},
		{"server.0.domains", 15},
		{"server.0.lmtp", 16},
		{"server.1.name", 18},
		{"server.1.bogus", 20},
		{"log.level", 22},
		{"log.format", 23},
		{"extra", 24},
	}
	got := map[string]int{}
	for _, e := range errs.List {
		got[e.Key] = e.Line
	}
	for _, w := range want {
		line, ok := got[w.key]
		if !ok {
			t.Errorf("no error for %s; got:\n%v", w.key, err)
			continue
		}
		if line != w.line {
			t.Errorf("%s: line %d, want %d", w.key, line, w.line)
		}
	}
	if _, ok := got["milter.spool_threshold"]; ok {
		t.Errorf("a bare integer size must be accepted: %v", err)
	}
	if !strings.Contains(err.Error(), "line 3: journal.colour: unknown key") {
		t.Errorf("message does not name key and line:\n%v", err)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := Parse("t.toml", []byte("[journal\npath = 1\n"))
	if err == nil || !strings.Contains(err.Error(), "syntax") {
		t.Fatalf("err = %v", err)
	}
}

func TestDuplicateDomain(t *testing.T) {
	_, err := Parse("t.toml", []byte(minimal+`
[[server]]
name = "a"
domains = ["x.org"]
[[server]]
name = "b"
domains = ["X.org"]
`))
	if err == nil || !strings.Contains(err.Error(), `already served by "a"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseDurationSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1d1h": 25 * time.Hour, "1.5h": 90 * time.Minute, "0s": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "x1d", "5", "1y"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"10": 10, "1KiB": 1024, "64 MiB": 64 << 20, "10MB": 10e6, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1TiB", "99999999999GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestSplitListen(t *testing.T) {
	for in, want := range map[string][2]string{
		"tcp:127.0.0.1:1": {"tcp", "127.0.0.1:1"}, "inet:[::1]:2": {"tcp", "[::1]:2"},
		"127.0.0.1:3": {"tcp", "127.0.0.1:3"}, "unix:/run/x": {"unix", "/run/x"},
	} {
		n, a, err := SplitListen(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("SplitListen(%q) = %q %q %v", in, n, a, err)
		}
	}
	for _, bad := range []string{"unix:rel", "tcp:host", ""} {
		if _, _, err := SplitListen(bad); err == nil {
			t.Errorf("SplitListen(%q) accepted", bad)
		}
	}
}

// FuzzParse: no input crashes the config parser, and an accepted file passes
// its own validation.
func FuzzParse(f *testing.F) {
	f.Add(minimal)
	f.Add("[journal]\npath = 1\n[[server]]\nname = 2\nx = 3\n")
	f.Add("[milter]\nlisten = \"unix:/x\"\n[[server]]\n[[server]]\ndomains = [1]\n")
	f.Add(minimal + "[pop3]\nlisten = \"\"\nlisten_tls = \"127.0.0.1:1\"\n[tls]\ncert_file = \"c\"\n[auth.per_user]\nfree_failures = -1\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse("f.toml", []byte(s))
		if err == nil && c.Journal.Path == "" {
			t.Fatal("accepted a config without journal.path")
		}
		if err == nil {
			_ = c.Warnings()
			for _, l := range []MailListener{c.IMAP, c.POP3} {
				if l.ListenTLS != "" && *l.Enabled && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
					t.Fatal("accepted listen_tls without a certificate")
				}
			}
		}
	})
}

// Values of the wrong TOML type are reported together, not one per run.
func TestTypeErrorsCollected(t *testing.T) {
	_, err := Parse("t.toml", []byte(`[journal]
path = 7
[mapping]
strip_detail = "yes"
[[server]]
name = "a"
domains = "x.org"
`))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	got := map[string]int{}
	for _, e := range errs.List {
		got[e.Key] = e.Line
	}
	for key, line := range map[string]int{"journal.path": 2, "mapping.strip_detail": 4, "server.0.domains": 7} {
		if got[key] != line {
			t.Errorf("%s: line %d, want %d\n%v", key, got[key], line, err)
		}
	}
}

func TestOutageKeys(t *testing.T) {
	c, err := Parse("t.toml", []byte(`
[journal]
path = "/var/lib/lifeline/journal"
[[server]]
name = "mx1"
domains = ["a.example"]
lmtp = "tcp:127.0.0.1:24"
[[server]]
name = "mx2"
domains = ["b.example"]
lmtp = "unix:/run/dovecot/lmtp"
interval = "2s"
fail_after = 5
  [[server.probe]]
  type = "imap"
  address = "tcp:127.0.0.1:143"
  user = "canary"
  password = "secret"
  [[server.probe]]
  type = "http"
  url = "http://127.0.0.1:8080/health"
[[window]]
server = "mx2"
start = 2026-12-01T02:00:00Z
end = 2026-12-01T04:00:00Z
reason = "upgrade"
[replay]
mode = "smtp"
reinject = "tcp:127.0.0.1:10026"
[notify]
postmaster = "postmaster@a.example"
submit = "tcp:127.0.0.1:10026"
`))
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := c.Servers[0], c.Servers[1]
	if s1.Interval.D() != DefaultProbeInterval || s1.FailAfter != 3 || s1.RecoverAfter != 3 {
		t.Errorf("probe defaults: %+v", s1)
	}
	if len(s1.Probes) != 1 || s1.Probes[0].Type != "lmtp" || s1.Probes[0].Address != s1.LMTP || s1.Probes[0].Timeout.D() != DefaultProbeTimeout {
		t.Errorf("default probe: %+v", s1.Probes)
	}
	if s2.FailAfter != 5 || len(s2.Probes) != 2 || s2.Probes[1].ExpectStatus != 200 {
		t.Errorf("server 2: %+v", s2)
	}
	if len(c.Windows) != 1 || c.Windows[0].End.Sub(c.Windows[0].Start) != 2*time.Hour {
		t.Errorf("windows: %+v", c.Windows)
	}
	if c.Replay.Concurrency != 10 || !*c.Replay.DSN || c.Replay.RetryMin.D() != 30*time.Second {
		t.Errorf("replay defaults: %+v", c.Replay)
	}
	if c.HTTP.AdminTokenFile != "/var/lib/lifeline/admin.token" {
		t.Errorf("admin token file default %q", c.HTTP.AdminTokenFile)
	}

	_, err = Parse("t.toml", []byte(`
[journal]
path = "j"
[http]
listen = "0.0.0.0:9894"
[[server]]
name = "mx"
domains = ["a.example"]
lmtp = "tcp:127.0.0.1:24"
fail_after = -1
  [[server.probe]]
  type = "ping"
[[window]]
server = "nope"
start = 2026-12-01T04:00:00Z
end = 2026-12-01T02:00:00Z
[replay]
mode = "smtp"
`))
	for _, want := range []string{"server.0.fail_after", "server.0.probe.0.type", "window.0.server", "window.0", "replay.reinject", "http.listen"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestMailAccessDefaults(t *testing.T) {
	c, err := Parse(filepath.Join("etc", "lifeline", "lifeline.toml"), []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.MailboxAccess.Serve != ServeOutage {
		t.Errorf("serve = %q", c.MailboxAccess.Serve)
	}
	for _, l := range []struct {
		name   string
		l      MailListener
		listen string
		idle   time.Duration
	}{{"imap", c.IMAP, "127.0.0.1:1143", 30 * time.Minute}, {"pop3", c.POP3, "127.0.0.1:1110", 10 * time.Minute}} {
		if !l.l.On() || l.l.PlainAddr() != l.listen || l.l.ListenTLS != "" || l.l.IdleTimeout.D() != l.idle {
			t.Errorf("%s defaults: on %v listen %q tls %q idle %v", l.name, l.l.On(), l.l.PlainAddr(), l.l.ListenTLS, l.l.IdleTimeout.D())
		}
	}
	if want := filepath.Join("etc", "lifeline", "users"); c.Auth.PasswdFile != want {
		t.Errorf("passwd_file default %q, want %q (beside the config file)", c.Auth.PasswdFile, want)
	}
	if c.TLS.Configured() {
		t.Error("TLS configured by default")
	}
	if got := c.Auth.PerUser.Policy(); got != auth.DefaultUserPolicy {
		t.Errorf("per_user default %+v", got)
	}
	if got := c.Auth.PerAddress.Policy(); got != auth.DefaultAddrPolicy {
		t.Errorf("per_address default %+v", got)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings for the defaults: %v", w)
	}
}

// The mail listeners (milter, ingest, policy) have no authentication: one on
// a TCP address other than loopback gets a warning; loopback and unix sockets
// none.
func TestMailListenerWarnings(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[milter]\nlisten = \"tcp:0.0.0.0:8894\"\n"+
		"[ingest]\ncustody_listen = \"tcp:10.0.0.5:2425\"\njournal_listen = \"unix:/run/lifeline/ingest.sock\"\n"+
		"[policy]\nlisten = \"tcp:127.0.0.1:10040\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"milter.listen 0.0.0.0:8894 is not loopback", "ingest.custody_listen 10.0.0.5:2425 is not loopback"} {
		if !strings.Contains(w, want) {
			t.Errorf("no warning %q in %q", want, w)
		}
	}
	for _, not := range []string{"journal_listen", "policy.listen"} {
		if strings.Contains(w, not) {
			t.Errorf("a warning for %s: %q", not, w)
		}
	}
}

func TestMailAccessKeys(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+`
[mailbox_access]
serve = "always"
[imap]
enabled = false
[pop3]
listen = ""
listen_tls = "tcp:127.0.0.1:1995"
idle_timeout = "2m"
[tls]
cert_file = "/etc/lifeline/cert.pem"
key_file = "/etc/lifeline/key.pem"
[auth]
passwd_file = "/etc/lifeline/passwd"
  [auth.per_address]
  free_failures = 0
  base_delay = "500ms"
  max_delay = "10s"
  max_failures = 50
  window = "1h"
  lockout = "30m"
  [auth.per_user]
  max_failures = 5
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MailboxAccess.Serve != ServeAlways || c.IMAP.On() || !c.POP3.On() {
		t.Errorf("serve %q imap on %v pop3 on %v", c.MailboxAccess.Serve, c.IMAP.On(), c.POP3.On())
	}
	if c.POP3.PlainAddr() != "" || c.POP3.ListenTLS != "tcp:127.0.0.1:1995" || c.POP3.IdleTimeout.D() != 2*time.Minute {
		t.Errorf("pop3 = %+v", c.POP3)
	}
	if !c.TLS.Configured() || c.Auth.PasswdFile != "/etc/lifeline/passwd" {
		t.Errorf("tls %+v auth %+v", c.TLS, c.Auth)
	}
	want := auth.LimitPolicy{FreeFailures: 0, BaseDelay: 500 * time.Millisecond, MaxDelay: 10 * time.Second,
		MaxFailures: 50, Window: time.Hour, Lockout: 30 * time.Minute}
	if got := c.Auth.PerAddress.Policy(); got != want {
		t.Errorf("per_address = %+v, want %+v", got, want)
	}
	u := auth.DefaultUserPolicy
	u.MaxFailures = 5
	if got := c.Auth.PerUser.Policy(); got != u {
		t.Errorf("per_user = %+v, want %+v", got, u)
	}
}

// Every mistake in the new sections is reported with its key and line.
func TestMailAccessErrors(t *testing.T) {
	src := `[journal]
path = "j"
[mailbox_access]
serve = "sometimes"
[imap]
listen = "unix:/run/imap.sock"
listen_tls = "127.0.0.1:1993"
idle_timeout = "1s"
[pop3]
listen = "127.0.0.1:9894"
listen_tls = "nowhere"
[tls]
cert_file = "/etc/cert.pem"
[auth]
  [auth.per_address]
  free_failures = -1
  max_failures = -1
  max_delay = "10m"
  [auth.per_user]
  base_delay = "10s"
  max_delay = "1s"
  window = "1ms"
  lockout = "1ms"
  colour = "red"
`
	_, err := Parse("t.toml", []byte(src))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	got := map[string]int{}
	for _, e := range errs.List {
		got[e.Key] = e.Line
	}
	for key, line := range map[string]int{
		"mailbox_access.serve":           4,
		"imap.listen":                    6,
		"imap.listen_tls":                7, // no key_file, so no certificate
		"imap.idle_timeout":              8,
		"pop3.listen":                    10, // the http listener's address
		"pop3.listen_tls":                11,
		"tls.key_file":                   12,
		"auth.per_address.free_failures": 16,
		"auth.per_address.max_failures":  17,
		"auth.per_address.max_delay":     18,
		"auth.per_user.max_delay":        21,
		"auth.per_user.window":           22,
		"auth.per_user.lockout":          23,
		"auth.per_user.colour":           24,
	} {
		if l, ok := got[key]; !ok {
			t.Errorf("no error for %s in:\n%v", key, err)
		} else if l != line {
			t.Errorf("%s: line %d, want %d", key, l, line)
		}
	}
	if !strings.Contains(err.Error(), "imap.listen_tls: needs a certificate (set [tls] cert_file and key_file)") {
		t.Errorf("listen_tls error does not say what to set:\n%v", err)
	}

	// Enabled without any listener, a key without its certificate, a
	// certificate without its key.
	_, err = Parse("t.toml", []byte(minimal+"[imap]\nlisten = \"\"\n[tls]\nkey_file = \"k.pem\"\n"))
	for _, want := range []string{"imap.listen: is off and so is listen_tls", "tls.cert_file: is required with key_file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	// A disabled server's listeners are not checked.
	if _, err := Parse("t.toml", []byte(minimal+"[imap]\nenabled = false\nlisten_tls = \"127.0.0.1:1993\"\n")); err != nil {
		t.Errorf("disabled imap: %v", err)
	}
}

// A non-loopback listener without TLS is allowed, with a warning: the servers
// refuse plaintext logins from other hosts.
func TestMailAccessWarnings(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[pop3]\nlisten = \"0.0.0.0:110\"\n[imap]\nlisten = \"[::1]:143\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "pop3.listen 0.0.0.0:110 is not loopback") {
		t.Errorf("warnings = %q", w)
	}
	c, err = Parse("t.toml", []byte(minimal+"[pop3]\nlisten = \"0.0.0.0:110\"\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings with TLS = %q", w)
	}
}

// A [[server]] without lmtp is allowed (a backup-only server, one whose
// mailboxes the continuity mailbox serves), but in replay mode lmtp replay
// cannot deliver to it, so Lifeline never takes custody of its recipients:
// the warning names the server and says so. In smtp mode it is silent.
func TestServerWithoutLMTPWarning(t *testing.T) {
	src := minimal + "[[server]]\nname = \"ex\"\ndomains = [\"ex.test\"]\n  [[server.probe]]\n  type = \"http\"\n  url = \"https://ex.test/owa/healthcheck.htm\"\n" +
		"[[server]]\nname = \"dc\"\ndomains = [\"dc.test\"]\nlmtp = \"tcp:127.0.0.1:24\"\n"
	c, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	if !strings.Contains(w, `server "ex" has no lmtp`) || !strings.Contains(w, "never takes custody") || strings.Contains(w, `"dc"`) {
		t.Errorf("warnings = %q", w)
	}
	c, err = Parse("t.toml", []byte(src+"[replay]\nmode = \"smtp\"\nreinject = \"tcp:127.0.0.1:10026\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings in smtp mode = %q", w)
	}
}

// [http] metrics_listen is off by default, HOST:PORT when set, and may be on
// any address (it has no admin API), unlike [http] listen.
func TestMetricsListen(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil || c.HTTP.MetricsListen != "" {
		t.Fatalf("default metrics_listen %q, %v", c.HTTP.MetricsListen, err)
	}
	if _, err := Parse("t.toml", []byte(minimal+"[http]\nmetrics_listen = \"0.0.0.0:9895\"\n")); err != nil {
		t.Errorf("metrics_listen on 0.0.0.0: %v", err)
	}
	if _, err := Parse("t.toml", []byte(minimal+"[http]\nmetrics_listen = \"nope\"\n")); err == nil || !strings.Contains(err.Error(), "http.metrics_listen") {
		t.Errorf("metrics_listen = \"nope\": %v", err)
	}
}

// max_connections and max_connections_per_client: 0 is the default, -1 no
// limit, anything below an error.
func TestMailConnectionLimits(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[imap]\nmax_connections = 5\nmax_connections_per_client = -1\n"))
	if err != nil || c.IMAP.MaxConnections != 5 || c.IMAP.MaxConnectionsPerClient != -1 {
		t.Fatalf("imap limits %d, %d: %v", c.IMAP.MaxConnections, c.IMAP.MaxConnectionsPerClient, err)
	}
	if _, err := Parse("t.toml", []byte(minimal+"[pop3]\nmax_connections_per_client = -2\n")); err == nil || !strings.Contains(err.Error(), "pop3.max_connections_per_client") {
		t.Errorf("max_connections_per_client = -2: %v", err)
	}
}

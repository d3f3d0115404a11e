package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/journal"
)

// TestServeIngestAndPolicy runs the wired daemon with [ingest] and [policy]
// on: both LMTP listeners take a message, the policy server answers Postfix
// and Exim requests, the metrics show them, and shutdown ends cleanly with an
// idle LMTP connection open.
func TestServeIngestAndPolicy(t *testing.T) {
	dir := t.TempDir()
	known := filepath.Join(dir, "known")
	if err := os.WriteFile(known, []byte("alice@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	milterAddr, httpAddr, jAddr, cAddr, pAddr := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[journal]
path = %q
min_free = "1MiB"
[milter]
listen = "tcp:%s"
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
[ingest]
journal_listen = "tcp:%s"
custody_listen = "tcp:%s"
[policy]
listen = "tcp:%s"
known_recipients_file = %q
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, jAddr, cAddr, pAddr, known)))
	if err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, cfg)

	for _, addr := range []string{jAddr, cAddr} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := smtp.NewClientLMTP(nc)
		if err := c.Hello("mta.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("s@remote.test", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("alice@example.com", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: via %s\r\nMessage-ID: <%s@remote.test>\r\n\r\nbody\r\n", addr, addr)
		if _, err := w.CloseWithLMTPResponse(); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	idle, err := net.Dial("tcp", jAddr) // left open across shutdown
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close() //nolint:errcheck // test

	// Postfix: no outage, DUNNO.
	pc, err := net.Dial("tcp", pAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(pc, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=nobody@example.com\n\n")
	if line, err := bufio.NewReader(pc).ReadString('\n'); err != nil || line != "action=DUNNO\n" {
		t.Errorf("postfix: %q %v", line, err)
	}
	pc.Close() //nolint:errcheck // test
	// Exim.
	ec, err := net.Dial("tcp", pAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(ec, "state example.com\n")
	if b, err := io.ReadAll(ec); err != nil || string(b) != "up\n" {
		t.Errorf("exim: %q %v", b, err)
	}
	ec.Close() //nolint:errcheck // test

	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{
		`lifeline_ingest_messages_total{listener="journal",result="stored"} 1`,
		`lifeline_ingest_messages_total{listener="custody",result="custody"} 1`,
		`lifeline_policy_requests_total{action="dunno",protocol="postfix"} 1`,
		`lifeline_policy_requests_total{action="up",protocol="exim"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	begin := time.Now()
	r.stop()
	if t.Failed() {
		t.FailNow()
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	j, err := OpenJournal(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close() //nolint:errcheck // test
	n := 0
	if err := j.Custody(context.Background(), 0, func(journal.CustodyItem) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d in custody, want 1", n)
	}
}

func TestKnownRecipients(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := &config.Config{}
	cfg.Auth.PasswdFile = write("users", "# comment\nAlice@Example.com:{BLF-CRYPT}$2y$05$secret:::\nbob@example.com:{PLAIN}x\n")
	cfg.Mapping.AliasFile = write("virtual", "sales@example.com alice@example.com, ext@other.test\n")
	cfg.Policy.KnownRecipientsFile = write("known", "carol@example.com\n# dave@example.com\n")
	k := newKnownRecipients(cfg, slog.New(slog.DiscardHandler))
	for addr, want := range map[string]bool{
		"alice@example.com": true, "BOB@example.com": true, "sales@example.com": true, "ext@other.test": true,
		"carol@example.com": true, "dave@example.com": false, "{BLF-CRYPT}$2y$05$secret": false, "": false,
	} {
		if got := k.Has(addr); got != want {
			t.Errorf("Has(%q) = %v, want %v", addr, got, want)
		}
	}
	// A changed list is read again; a list that disappears keeps its entries.
	write("known", "carol@example.com\ndave@example.com\n")
	k.mu.Lock()
	k.lastCheck = time.Time{}
	k.mu.Unlock()
	if !k.Has("dave@example.com") {
		t.Error("change not seen")
	}
	if err := os.Remove(cfg.Policy.KnownRecipientsFile); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	k.lastCheck = time.Time{}
	k.mu.Unlock()
	if !k.Has("dave@example.com") {
		t.Error("entries lost with the file")
	}
}

// A users file of bare names (Dovecot's auth_username_format = %n) makes
// those local parts known in every domain; with no list readable at all,
// every address is known (nothing to reject by).
func TestKnownRecipientsBareAndEmpty(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{}
	cfg.Auth.PasswdFile = filepath.Join(dir, "users")
	k := newKnownRecipients(cfg, slog.New(slog.DiscardHandler))
	if !k.Has("anyone@example.com") {
		t.Error("with no list, an address is unknown: every recipient would be rejected")
	}
	if err := os.WriteFile(cfg.Auth.PasswdFile, []byte("alice:{PLAIN}x\nBob:{PLAIN}y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	k.lastCheck = time.Time{}
	k.mu.Unlock()
	for addr, want := range map[string]bool{
		"alice@example.com": true, "bob@other.test": true, "alice": true,
		"carol@example.com": false, "@example.com": false, "example.com": false,
	} {
		if got := k.Has(addr); got != want {
			t.Errorf("Has(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCanTakeCustody(t *testing.T) {
	dir := t.TempDir()
	if err := canTakeCustody(dir, 100, 0); err != nil {
		t.Errorf("defer_above 100%%: %v", err)
	}
	if err := canTakeCustody(dir, 0.000001, 0); err == nil || !strings.Contains(err.Error(), "above policy.defer_above") {
		t.Errorf("defer_above tiny: %v", err)
	}
	if err := canTakeCustody(dir, 100, 1<<62); !errors.Is(err, journal.ErrDiskFull) {
		t.Errorf("min_free huge: %v", err)
	}
	if err := canTakeCustody(filepath.Join(dir, "missing"), 100, 0); err == nil {
		t.Error("no error for a missing directory")
	}
}

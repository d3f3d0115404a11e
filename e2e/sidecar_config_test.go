package e2e

import (
	"crypto/tls"
	"os"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/config"
)

// TestSidecarConfigParses checks that the [mailbox_access], [imap], [pop3],
// [tls] and [auth] tables the harness writes are ones Lifeline's strict
// config loader accepts, that the certificate loads, and that the
// passwd-file verifies with Lifeline's own auth package; and that without
// SidecarOptions both servers are off.
func TestSidecarConfigParses(t *testing.T) {
	dir := t.TempDir()
	l := &Lifeline{Dir: dir, JournalDir: dir + "/j", MilterAddr: "tcp:127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}
	opts := LifelineOptions{Retention: "90d", OnJournalError: "accept", LogLevel: "info", Domains: []string{"a.test"}, LMTPAddr: "127.0.0.1:24"}
	off, err := config.Parse("e2e.toml", []byte(l.config(opts)))
	if err != nil {
		t.Fatalf("config.Parse without a sidecar: %v\n%s", err, l.config(opts))
	}
	if off.IMAP.On() || off.POP3.On() {
		t.Errorf("without SidecarOptions the harness must turn IMAP (%v) and POP3 (%v) off", off.IMAP.On(), off.POP3.On())
	}

	opts.Sidecar = &SidecarOptions{Serve: ServeAlways, Users: map[string]string{"alice@a.test": "pw1", "bob@a.test": "pw2"}, TLS: true}
	l.setupSidecar(t, opts.Sidecar)
	text := l.config(opts)
	cfg, err := config.Parse("e2e.toml", []byte(text))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, text)
	}
	if cfg.MailboxAccess.Serve != ServeAlways || cfg.IMAP.PlainAddr() != l.IMAPAddr || cfg.IMAP.ListenTLS != l.IMAPTLSAddr ||
		cfg.POP3.PlainAddr() != l.POP3Addr || cfg.POP3.ListenTLS != l.POP3TLSAddr || cfg.Auth.PasswdFile != l.PasswdFile ||
		cfg.TLS.CertFile != l.CertFile || cfg.TLS.KeyFile != l.KeyFile {
		t.Errorf("config read back differs from what the harness meant:\n%s\n%+v", text, cfg)
	}
	if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
		t.Errorf("certificate: %v", err)
	}
	if _, err := l.TLSConfig(); err != nil {
		t.Errorf("client TLS config: %v", err)
	}
	f, err := auth.NewFile(l.PasswdFile, auth.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := f.Verify("alice@a.test", "pw1"); !ok || u != "alice@a.test" {
		t.Errorf("passwd-file: alice's password does not verify (%q, %v)", u, ok)
	}
	if _, ok := f.Verify("bob@a.test", "pw1"); ok {
		t.Errorf("passwd-file: bob verifies with alice's password")
	}
	b, err := os.ReadFile(l.PasswdFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "alice@a.test:{BLF-CRYPT}$2") {
		t.Errorf("passwd-file:\n%s", b)
	}

	// serve left out: Lifeline's default, "outage".
	l2 := &Lifeline{Dir: dir, JournalDir: dir + "/j", MilterAddr: "tcp:127.0.0.1:1", HTTPAddr: "127.0.0.1:2"}
	opts.Sidecar = &SidecarOptions{Users: map[string]string{"alice@a.test": "pw1"}}
	l2.setupSidecar(t, opts.Sidecar)
	cfg, err = config.Parse("e2e.toml", []byte(l2.config(opts)))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	if cfg.MailboxAccess.Serve != ServeOutage || cfg.IMAP.ListenTLS != "" || cfg.TLS.Configured() {
		t.Errorf("defaults: serve %q, imap listen_tls %q, tls %+v", cfg.MailboxAccess.Serve, cfg.IMAP.ListenTLS, cfg.TLS)
	}
}

func TestStripTUID(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"A: 1\nX-TUID: Ab+/09zZyYxX\n\nbody\nX-TUID: Ab+/09zZyYxX\n\n", "A: 1\n\nbody\nX-TUID: Ab+/09zZyYxX\n\n"},
		{"A: 1\nX-TUID: short\n\nbody\n", "A: 1\nX-TUID: short\n\nbody\n"},
		{"A: 1\nX-TUID: Ab+/09zZyYxX\nB: 2\n\nbody\n", "A: 1\nX-TUID: Ab+/09zZyYxX\nB: 2\n\nbody\n"},
		{"A: 1\n\nX-TUID: Ab+/09zZyYxX\n\n", "A: 1\n\nX-TUID: Ab+/09zZyYxX\n\n"},
	} {
		got, removed := stripTUID([]byte(c.in))
		if string(got) != c.want || removed != (c.in != c.want) {
			t.Errorf("stripTUID(%q) = %q, %v; want %q", c.in, got, removed, c.want)
		}
	}
}

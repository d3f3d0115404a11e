package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/internal/testcert"
	"golang.org/x/crypto/bcrypt"
)

// Serve modes of [mailbox_access] serve.
const (
	ServeOutage = "outage" // Lifeline's default: logins only during an outage of the user's server
	ServeAlways = "always" // the continuity mailbox is always readable
)

// SidecarOptions turns on Lifeline's continuity mailbox servers, IMAP and
// POP3 ([mailbox_access], [imap], [pop3], [tls], [auth]). Without them
// (LifelineOptions.Sidecar nil) the harness writes `enabled = false` for
// both, so that a Lifeline started by another test never binds their
// default ports.
type SidecarOptions struct {
	// Serve is [mailbox_access] serve: ServeOutage or ServeAlways; "" leaves
	// the key out (Lifeline's default, "outage").
	Serve string
	// Users maps a login (a mailbox address, which is also the mailbox it
	// reads) to its password; the harness writes them to [auth] passwd_file
	// as BLF-CRYPT hashes of the lowest cost.
	Users map[string]string
	// TLS generates a self-signed certificate for 127.0.0.1 and localhost
	// ([tls] cert_file, key_file; Lifeline.CAFile for clients) and opens the
	// implicit-TLS listeners (listen_tls) of IMAP and POP3 on free ports.
	TLS bool
}

// setupSidecar picks the listeners' ports and writes the passwd-file and the
// certificate; the config's tables follow from the fields it sets.
func (l *Lifeline) setupSidecar(tb TB, o *SidecarOptions) {
	tb.Helper()
	if o == nil {
		return
	}
	l.sidecar = o
	l.IMAPAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
	l.POP3Addr = fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
	l.PasswdFile = filepath.Join(l.Dir, "users")
	if err := WritePasswdFile(l.PasswdFile, o.Users); err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	if o.TLS {
		l.IMAPTLSAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
		l.POP3TLSAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
		l.CertFile = filepath.Join(l.Dir, "cert.pem")
		l.KeyFile = filepath.Join(l.Dir, "key.pem")
		// "127.0.0.1" as a DNS name too: mbsync (isync 1.4) matches the host
		// it connects to against the certificate's DNS names and common
		// name only, never its IP addresses.
		if err := WriteSelfSignedCert(l.CertFile, l.KeyFile, "localhost", "127.0.0.1"); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
		l.CAFile = l.CertFile
	}
}

// sidecarTOML writes the continuity mailbox tables.
func (l *Lifeline) sidecarTOML() string {
	o := l.sidecar
	if o == nil {
		return "\n[imap]\nenabled = false\n\n[pop3]\nenabled = false\n"
	}
	q := strconv.Quote
	var b strings.Builder
	if o.Serve != "" {
		fmt.Fprintf(&b, "\n[mailbox_access]\nserve = %s\n", q(o.Serve))
	}
	fmt.Fprintf(&b, "\n[imap]\nlisten = %s\n", q(l.IMAPAddr))
	if l.IMAPTLSAddr != "" {
		fmt.Fprintf(&b, "listen_tls = %s\n", q(l.IMAPTLSAddr))
	}
	fmt.Fprintf(&b, "\n[pop3]\nlisten = %s\n", q(l.POP3Addr))
	if l.POP3TLSAddr != "" {
		fmt.Fprintf(&b, "listen_tls = %s\n", q(l.POP3TLSAddr))
	}
	if l.CertFile != "" {
		fmt.Fprintf(&b, "\n[tls]\ncert_file = %s\nkey_file = %s\n", q(l.CertFile), q(l.KeyFile))
	}
	fmt.Fprintf(&b, "\n[auth]\npasswd_file = %s\n", q(l.PasswdFile))
	return b.String()
}

// waitSidecar waits until the IMAP and POP3 listeners greet (plain) or
// accept connections (TLS).
func (l *Lifeline) waitSidecar(tb TB) {
	tb.Helper()
	if l.sidecar == nil {
		return
	}
	ctx := context.Background()
	for _, g := range []struct{ addr, prefix string }{{l.IMAPAddr, "* OK"}, {l.POP3Addr, "+OK"}} {
		if err := WaitGreeting(ctx, g.addr, g.prefix, 30*time.Second); err != nil {
			tb.Fatalf("e2e: lifeline: %v\n%s", err, tail(l.LogPath, 8192))
		}
	}
	for _, addr := range []string{l.IMAPTLSAddr, l.POP3TLSAddr} {
		if addr == "" {
			continue
		}
		err := Poll(ctx, 30*time.Second, func() (bool, error) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, err
			}
			return true, c.Close()
		})
		if err != nil {
			tb.Fatalf("e2e: lifeline: TLS listener %s: %v\n%s", addr, err, tail(l.LogPath, 8192))
		}
	}
}

// TLSConfig returns a client configuration that trusts the certificate of
// SidecarOptions.TLS (and only that).
func (l *Lifeline) TLSConfig() (*tls.Config, error) {
	if l.CAFile == "" {
		return nil, fmt.Errorf("lifeline has no TLS certificate (SidecarOptions.TLS)")
	}
	b, err := os.ReadFile(l.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", l.CAFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, nil
}

// WritePasswdFile writes users (login → password) as a Dovecot-style
// passwd-file, one "user:{BLF-CRYPT}hash" line each, sorted.
func WritePasswdFile(path string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# Generated by Lifeline's e2e harness.\n")
	for _, u := range names {
		// The lowest cost: a test logs in often, and what is tested is
		// the login path, not bcrypt's strength.
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hashing %s's password: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:{BLF-CRYPT}%s\n", u, h)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// WriteSelfSignedCert writes a self-signed ECDSA certificate, valid for a
// day for 127.0.0.1, ::1 and the given DNS names, and its key, as PEM. The
// certificate is its own CA: a client trusts it by loading certFile.
func WriteSelfSignedCert(certFile, keyFile string, dnsNames ...string) error {
	c, err := testcert.New(time.Now().Add(24*time.Hour), dnsNames...)
	if err != nil {
		return err
	}
	return c.Write(certFile, keyFile)
}

// Package tlsconf holds the TLS certificate of Lifeline's IMAP and POP3
// servers: loaded from PEM files, re-read on demand (SIGHUP) without a
// restart, so that a renewed certificate (certbot, ACME clients) is served by
// the next handshake while open sessions keep theirs.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// expiryWarning is how long before its expiry a loaded certificate is logged
// as a warning: long enough for an administrator to notice a renewal that
// stopped working.
const expiryWarning = 14 * 24 * time.Hour

// Certificate is a certificate and key from PEM files. It is safe for
// concurrent use.
type Certificate struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	cur      atomic.Pointer[tls.Certificate]
	reloadMu sync.Mutex // one reload at a time
}

// Load reads the certificate chain (leaf first) and its private key. log
// receives reloads, failed reloads and expiry warnings; nil discards.
func Load(certFile, keyFile string, log *slog.Logger) (*Certificate, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Certificate{certFile: certFile, keyFile: keyFile, log: log.With("cert_file", certFile), now: time.Now}
	cert, err := c.read()
	if err != nil {
		return nil, err
	}
	c.cur.Store(cert)
	c.logLoaded("TLS certificate loaded", cert.Leaf)
	return c, nil
}

// Reload reads the files again. On error the certificate loaded before stays
// in use (a renewal half written, a key that does not match yet), and the
// error is logged and returned.
func (c *Certificate) Reload() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	cert, err := c.read()
	if err != nil {
		c.log.Error("TLS certificate reload failed; keeping the certificate loaded before", "err", err,
			"not_after", c.cur.Load().Leaf.NotAfter)
		return err
	}
	c.cur.Store(cert)
	c.logLoaded("TLS certificate reloaded", cert.Leaf)
	return nil
}

// Leaf returns the certificate in use (parsed).
func (c *Certificate) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// Config returns a server configuration that hands out the current
// certificate on every handshake, with TLS 1.2 as the minimum (RFC 8996
// deprecates 1.0 and 1.1; RFC 8314 §4.1 asks for 1.2 or later).
func (c *Certificate) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

func (c *Certificate) read() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s and %s: %w", c.certFile, c.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parsing %s: %w", c.certFile, err)
		}
	}
	return &cert, nil
}

func (c *Certificate) logLoaded(msg string, leaf *x509.Certificate) {
	attrs := []any{"subject", leaf.Subject.String(), "dns_names", leaf.DNSNames, "not_after", leaf.NotAfter}
	switch left := leaf.NotAfter.Sub(c.now()); {
	case left <= 0:
		c.log.Error(msg+", but it has expired: clients will refuse it", attrs...)
	case left < expiryWarning:
		c.log.Warn(msg+", but it expires soon", append(attrs, "expires_in", left.Round(time.Hour).String())...)
	default:
		c.log.Info(msg, attrs...)
	}
}

package tlsconf

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"github.com/lifelinemail/lifeline/internal/testcert"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a fresh self-signed certificate for name and its key as
// PEM files, replacing them by rename as certbot and install(1) do.
func writeCert(t *testing.T, dir, name string, notAfter time.Time) (certFile, keyFile string, der []byte) {
	t.Helper()
	c, err := testcert.New(notAfter, name)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := c.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, c.DER
}

// handshake connects a TLS client to a server using cfg and returns the
// certificate the server presented.
func handshake(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		srvErr <- tls.Server(c, cfg).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().PeerCertificates[0].Raw
}

// TestReload: a handshake after Reload sees the new certificate; a failed
// reload keeps the old one and says why in the log.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, der1 := writeCert(t, dir, "one.example", time.Now().Add(90*24*time.Hour))
	var logs bytes.Buffer
	c, err := Load(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", cfg.MinVersion)
	}
	if got := handshake(t, cfg); !bytes.Equal(got, der1) {
		t.Fatal("first handshake: not the loaded certificate")
	}

	_, _, der2 := writeCert(t, dir, "two.example", time.Now().Add(90*24*time.Hour))
	if got := handshake(t, cfg); !bytes.Equal(got, der1) {
		t.Fatal("certificate changed before Reload")
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := handshake(t, cfg); !bytes.Equal(got, der2) {
		t.Fatal("handshake after Reload: not the new certificate")
	}
	if c.Leaf().Subject.CommonName != "two.example" {
		t.Errorf("Leaf = %v", c.Leaf().Subject)
	}

	// A key that does not match the certificate (a renewal caught half way).
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der1}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err == nil {
		t.Fatal("Reload accepted a certificate that does not match its key")
	}
	if got := handshake(t, cfg); !bytes.Equal(got, der2) {
		t.Fatal("a failed reload replaced the certificate")
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err == nil {
		t.Fatal("Reload without a key file succeeded")
	}
	if got := handshake(t, cfg); !bytes.Equal(got, der2) {
		t.Fatal("a failed reload replaced the certificate")
	}
	if n := strings.Count(logs.String(), "reload failed; keeping the certificate loaded before"); n != 2 {
		t.Errorf("%d failed reloads logged, want 2:\n%s", n, logs.String())
	}
}

// TLS 1.0 and 1.1 clients are refused.
func TestMinVersion(t *testing.T) {
	certFile, keyFile, _ := writeCert(t, t.TempDir(), "a.example", time.Now().Add(time.Hour*24*90))
	c, err := Load(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = tls.Server(conn, c.Config()).Handshake() // fails: that is the point
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 client was accepted")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key"), nil); err == nil || !strings.Contains(err.Error(), "none.pem") {
		t.Errorf("missing files: %v", err)
	}
	certFile, keyFile, _ := writeCert(t, dir, "a.example", time.Now().Add(time.Hour))
	var logs bytes.Buffer
	if _, err := Load(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "expires soon") {
		t.Errorf("no expiry warning:\n%s", logs.String())
	}
	// Key and certificate swapped.
	if _, err := Load(keyFile, certFile, nil); err == nil {
		t.Error("swapped files accepted")
	}
}

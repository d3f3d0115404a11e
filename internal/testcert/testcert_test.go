package testcert

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	c, err := New(time.Now().Add(time.Hour), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake() // the client's side reports failures
			conn.Close()
		}
	}()
	for _, name := range []string{"localhost", "127.0.0.1"} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientConfig(name))
		if err != nil {
			t.Fatalf("trusting it for %s: %v", name, err)
		}
		conn.Close()
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := c.Write(cf, kf); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cf, kf); err != nil {
		t.Fatalf("written files: %v", err)
	}
	if fi, err := os.Stat(kf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v %v", fi.Mode(), err)
	}
}

package sidecar

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
)

type tempErr struct{}

func (tempErr) Error() string   { return "rate limited" }
func (tempErr) Temporary() bool { return true }

func TestTemporaryError(t *testing.T) {
	if !TemporaryError(fmt.Errorf("login: %w", tempErr{})) {
		t.Error("a wrapped temporary error is not temporary")
	}
	if TemporaryError(errors.New("bad password")) || TemporaryError(nil) {
		t.Error("a plain error is temporary")
	}
}

func TestPeer(t *testing.T) {
	for _, tc := range []struct {
		addr     net.Addr
		loopback bool
		ip       string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, true, "127.0.0.1"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 1}, true, "::1"},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1}, false, "192.0.2.7"},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, true, "unix"},
		{nil, false, ""},
	} {
		if l, ip := Peer(tc.addr); l != tc.loopback || ip != tc.ip {
			t.Errorf("Peer(%v) = %v %q, want %v %q", tc.addr, l, ip, tc.loopback, tc.ip)
		}
	}
}

func TestServerTLS(t *testing.T) {
	if ServerTLS(nil) != nil {
		t.Error("nil config became a config")
	}
	in := &tls.Config{MinVersion: tls.VersionTLS10}
	out := ServerTLS(in)
	if out.MinVersion != tls.VersionTLS12 || in.MinVersion != tls.VersionTLS10 {
		t.Errorf("MinVersion out %x in %x", out.MinVersion, in.MinVersion)
	}
	if got := ServerTLS(&tls.Config{MinVersion: tls.VersionTLS13}).MinVersion; got != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 minimum lowered to %x", got)
	}
}

func TestHostname(t *testing.T) {
	if Hostname("mx.example.com") != "mx.example.com" || Hostname("") == "" {
		t.Error("Hostname")
	}
}

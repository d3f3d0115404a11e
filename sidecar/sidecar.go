package sidecar

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
)

// Authenticator checks a user's credentials (package auth implements it over a
// Dovecot-style passwd-file). clientIP is the client's address without port,
// for rate limiting. It returns the continuity mailbox the user may read.
//
// An error means the login failed and the client never hears the cause. An
// error with a method Temporary() bool that returns true (a passwd-file that
// cannot be read, a rate limit) is "try again later" instead (see
// TemporaryError).
type Authenticator interface {
	Login(ctx context.Context, clientIP, user, password string) (mailbox string, err error)
}

// ServingChecker decides whether Lifeline serves a mailbox now (DESIGN.md,
// `serve = "outage"`): during an outage of the user's mailbox server only. When
// it does not, text tells the user why ("your mailbox server is up, use it").
type ServingChecker interface {
	Serves(mailbox string) (ok bool, text string)
}

// TemporaryError reports whether a login error says "try again later"
// rather than "wrong credentials".
func TemporaryError(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Peer describes a client's address: whether it is loopback, where plaintext
// passwords are allowed without TLS (DESIGN.md, Security), and its IP for
// rate limiting and logs. A unix socket counts as loopback.
func Peer(a net.Addr) (loopback bool, ip string) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback(), a.IP.String()
	case *net.UnixAddr:
		return true, "unix"
	case nil:
		return false, ""
	}
	return false, a.String()
}

// ServerTLS returns a copy of c for a mail server's listeners with TLS 1.2 at
// least (RFC 8996 deprecates 1.0 and 1.1); nil stays nil (no TLS).
func ServerTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// Hostname is name, or the machine's host name when name is "", for
// greetings; "localhost" when even that is unknown.
func Hostname(name string) string {
	if name == "" {
		name, _ = os.Hostname()
	}
	if name == "" {
		name = "localhost"
	}
	return name
}

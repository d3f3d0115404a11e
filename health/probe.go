package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Probe types accepted by NewProbe (ProbeConfig.Type, the config's
// server.probe.type).
const (
	ProbeLMTP = "lmtp"
	ProbeSMTP = "smtp"
	ProbeIMAP = "imap"
	ProbeTCP  = "tcp"
	ProbeHTTP = "http"
)

// Probe checks one aspect of a mailbox server. Check returns nil when the
// server is healthy and otherwise an error that names the step that failed
// and the server's reply. Check must return by ctx's deadline; probes from
// NewProbe also bound themselves by their configured timeout.
type Probe interface {
	Type() string
	Check(ctx context.Context) error
}

// ProbeConfig describes one probe (the config's [[server.probe]]).
type ProbeConfig struct {
	// Type is one of ProbeLMTP, ProbeSMTP, ProbeIMAP, ProbeTCP, ProbeHTTP.
	Type string

	// Network and Address say where to connect (lmtp, smtp, imap, tcp). With
	// Network empty, Address is "tcp:HOST:PORT", "unix:/path", a bare
	// "HOST:PORT" (TCP) or an absolute path (unix socket).
	Network, Address string

	// URL is what an http probe GETs; ExpectStatus is the status it must
	// answer (default 200). Redirects are not followed: the status compared is
	// the one the server sent.
	URL          string
	ExpectStatus int

	// Canary, for lmtp and smtp, is a recipient address that must be accepted
	// (2xx) at RCPT TO. It catches a server whose port is open but whose user
	// database is broken. Empty: the probe stops after LHLO/EHLO.
	Canary string

	// User and Password, for imap, make the probe LOGIN and LOGOUT. The
	// password is sent in plaintext, so it is only allowed to a loopback
	// address or a unix socket; it is never logged.
	User, Password string

	// Timeout bounds the whole check, connect to QUIT. Default DefaultTimeout.
	Timeout time.Duration
}

// NewProbe validates cfg and returns its probe.
func NewProbe(cfg ProbeConfig) (Probe, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("health: %s probe: negative timeout %v", cfg.Type, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Type == ProbeHTTP {
		return newHTTPProbe(cfg)
	}
	switch cfg.Type {
	case ProbeLMTP, ProbeSMTP, ProbeIMAP, ProbeTCP:
	case "":
		return nil, errors.New("health: probe without a type (lmtp, smtp, imap, tcp or http)")
	default:
		return nil, fmt.Errorf("health: unknown probe type %q (want lmtp, smtp, imap, tcp or http)", cfg.Type)
	}
	network, address, err := ParseAddress(cfg.Network, cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("health: %s probe: %w", cfg.Type, err)
	}
	base := dialer{typ: cfg.Type, network: network, address: address, timeout: cfg.Timeout}
	switch cfg.Type {
	case ProbeLMTP, ProbeSMTP:
		if err := checkMailbox(cfg.Canary); err != nil {
			return nil, fmt.Errorf("health: %s probe: canary: %w", cfg.Type, err)
		}
		return &smtpProbe{dialer: base, lmtp: cfg.Type == ProbeLMTP, canary: cfg.Canary, helo: heloName()}, nil
	case ProbeIMAP:
		if cfg.Password != "" && cfg.User == "" {
			return nil, errors.New("health: imap probe: password without user")
		}
		if cfg.User != "" {
			if !loopback(network, address) {
				// The probe has no TLS: a password over the network would
				// travel in clear text (RFC 3501 §6.2.3, LOGINDISABLED).
				return nil, fmt.Errorf("health: imap probe login needs loopback (address %s)", address)
			}
			for _, s := range []string{cfg.User, cfg.Password} {
				if !quotable(s) {
					return nil, errors.New("health: imap probe: user and password must be printable ASCII for an IMAP quoted string (RFC 3501 §4.3)")
				}
			}
		}
		return &imapProbe{dialer: base, user: cfg.User, password: cfg.Password}, nil
	default: // ProbeTCP
		return &tcpProbe{dialer: base}, nil
	}
}

// ParseAddress turns the config's address forms into a network and address
// for net.Dial: "tcp:HOST:PORT", "unix:/path", "HOST:PORT" or "/path". A
// non-empty network is taken as given.
func ParseAddress(network, address string) (string, string, error) {
	if address == "" {
		return "", "", errors.New("no address")
	}
	if network != "" {
		switch network {
		case "tcp", "tcp4", "tcp6", "unix":
			return network, address, nil
		}
		return "", "", fmt.Errorf("unknown network %q (want tcp or unix)", network)
	}
	switch {
	case strings.HasPrefix(address, "tcp:"):
		network, address = "tcp", strings.TrimPrefix(address, "tcp:")
	case strings.HasPrefix(address, "unix:"):
		network, address = "unix", strings.TrimPrefix(address, "unix:")
	case strings.HasPrefix(address, "/"):
		network = "unix"
	default:
		network = "tcp"
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(address); err != nil {
			return "", "", fmt.Errorf("address %q: %w", address, err)
		}
	} else if address == "" {
		return "", "", errors.New("unix address without a path")
	}
	return network, address, nil
}

// loopback reports whether a connection to address stays on this host.
func loopback(network, address string) bool {
	if network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// dialer holds what every connecting probe shares.
type dialer struct {
	typ              string
	network, address string
	timeout          time.Duration
}

func (d *dialer) Type() string { return d.typ }

// String is the probe as logs show it, "lmtp tcp:127.0.0.1:24".
func (d *dialer) String() string { return d.typ + " " + d.network + ":" + d.address }

// dial connects within the probe's timeout and returns the connection with
// its deadline set to the same instant, so that no read or write can outlive
// the probe (ctx cancelled early also ends them), and a stop function that
// the caller must call to release both.
func (d *dialer) dial(ctx context.Context) (net.Conn, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, d.network, d.address)
	if err != nil {
		cancel()
		return nil, nil, d.fail("connect", err)
	}
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		cancel()
		return nil, nil, errors.Join(d.fail("set deadline", err), conn.Close())
	}
	stopClose := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	stop := func() error {
		stopClose()
		cancel()
		return conn.Close()
	}
	return conn, stop, nil
}

// fail wraps err with the probe and the step that failed.
func (d *dialer) fail(step string, err error) error {
	return fmt.Errorf("%s probe %s:%s: %s: %w", d.typ, d.network, d.address, step, err)
}

// heloName is the name the probe gives in LHLO/EHLO. RFC 5321 §4.1.1.1
// asks for the client's fully qualified name; the host name is the best
// this process knows.
func heloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}

// checkMailbox accepts an empty canary or a plain address that can go
// between the angle brackets of RCPT TO.
func checkMailbox(addr string) error {
	if addr == "" {
		return nil
	}
	if strings.ContainsAny(addr, "<> \t\r\n") || !strings.Contains(addr, "@") {
		return fmt.Errorf("%q is not a plain address (local@domain, no angle brackets)", addr)
	}
	return nil
}

// quotable reports whether s can be sent as an IMAP quoted string without
// escaping beyond \" and \\ (RFC 3501 §9, quoted: no CR, LF or 8-bit).
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

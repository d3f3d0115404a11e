package mailview

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Relay is the SMTP server (submission, RFC 6409) that the webmail hands
// composed messages to.
type Relay struct {
	// Addr is host:port.
	Addr               string
	Username, Password string
	// TLSConfig is used for STARTTLS; nil means the system roots and the
	// host of Addr as server name.
	TLSConfig *tls.Config
	// Timeout bounds the whole transaction; 0 means one minute. A deadline
	// of ctx that comes earlier wins.
	Timeout time.Duration
	// HeloName is the name sent in EHLO after STARTTLS (go-smtp greets with
	// "localhost" before it); "" means "localhost".
	HeloName string
	// AllowPlaintext lets mail go to a relay that is not on loopback without
	// STARTTLS. By default such a relay must offer it: otherwise anyone on
	// the path who strips STARTTLS from its EHLO reply (RFC 3207 §6) reads
	// the users' mail.
	AllowPlaintext bool
}

// errNoStartTLS is go-smtp's error text when the server does not offer
// STARTTLS; go-smtp has no exported value for it.
const errNoStartTLS = "doesn't support STARTTLS"

// Send submits msg from the envelope sender to rcpts. STARTTLS is used when
// the server offers it (RFC 3207). Credentials are sent (AUTH PLAIN, RFC 4616)
// only over TLS or to a loopback relay, never in clear text over a network.
// An error from the server wraps its *smtp.SMTPError, whose Error() carries
// the reply text (e.g. "550 5.1.1 user unknown").
func (r Relay) Send(ctx context.Context, from string, rcpts []string, msg []byte) error {
	if len(rcpts) == 0 {
		return errors.New("mailview: send: no recipients")
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	host, _, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return fmt.Errorf("mailview: relay address %q: %w", r.Addr, err)
	}
	cfg := r.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}

	c, tlsOn, err := r.connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// After QUIT (or a failure already reported) the outcome is
		// decided; closing an already closed connection fails harmlessly.
		_ = c.Close()
	}()
	// Abort the transaction when ctx ends: closing the connection unblocks
	// any read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	wrap := func(step string, err error) error {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return fmt.Errorf("mailview: send: %s: %w", step, &ReplyError{SMTPError: se})
		}
		if ctx.Err() != nil {
			return fmt.Errorf("mailview: send: %s: %w (%w)", step, ctx.Err(), err)
		}
		return fmt.Errorf("mailview: send: %s: %w", step, err)
	}
	helo := r.HeloName
	if helo == "" {
		helo = "localhost"
	}
	if err := c.Hello(helo); err != nil {
		return wrap("EHLO", err)
	}
	if r.Username != "" {
		if !tlsOn && !isLoopback(host) {
			return fmt.Errorf("mailview: send: relay %s offers no STARTTLS; refusing to send credentials in clear text", r.Addr)
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("mailview: send: relay %s does not offer AUTH", r.Addr)
		}
		if err := c.Auth(sasl.NewPlainClient("", r.Username, r.Password)); err != nil {
			return wrap("AUTH", err)
		}
	}
	if err := c.Mail(from, nil); err != nil {
		return wrap("MAIL FROM", err)
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			return wrap("RCPT TO <"+rc+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return wrap("DATA", err)
	}
	if _, err := bytes.NewReader(msg).WriteTo(w); err != nil {
		// The write error is the cause; Close would only report the
		// broken connection again.
		return wrap("DATA", errors.Join(err, w.Close()))
	}
	if err := w.Close(); err != nil {
		return wrap("DATA", err)
	}
	// The message is accepted once DATA's reply came (RFC 5321 §4.1.1.4);
	// a failing QUIT does not unsend it, so its error must not make the
	// user send it twice.
	_ = c.Quit()
	return nil
}

// connect dials the relay and starts TLS when offered. go-smtp offers
// STARTTLS only as part of creating a client, so a server without it costs a
// second connection (a loopback relay, usually).
func (r Relay) connect(ctx context.Context, cfg *tls.Config) (*smtp.Client, bool, error) {
	dial := func() (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", r.Addr)
		if err != nil {
			return nil, fmt.Errorf("mailview: send: dial %s: %w", r.Addr, err)
		}
		if dl, ok := ctx.Deadline(); ok {
			if err := conn.SetDeadline(dl); err != nil {
				return nil, fmt.Errorf("mailview: send: %w", errors.Join(err, conn.Close()))
			}
		}
		return conn, nil
	}
	conn, err := dial()
	if err != nil {
		return nil, false, err
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err == nil {
		return c, true, nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) || !strings.Contains(err.Error(), errNoStartTLS) {
		return nil, false, fmt.Errorf("mailview: send: STARTTLS with %s: %w", r.Addr, err)
	}
	if host, _, _ := net.SplitHostPort(r.Addr); !r.AllowPlaintext && !isLoopback(host) {
		return nil, false, fmt.Errorf("mailview: send: %s does not offer STARTTLS, and mail goes in clear text only to a loopback relay (set [webmail] smtp_allow_plaintext to allow it)", r.Addr)
	}
	conn, err = dial()
	if err != nil {
		return nil, false, err
	}
	return smtp.NewClient(conn), false, nil
}

// ReplyError is a negative reply of the relay. Its Error() is the reply as
// the server sent it ("550 5.1.1 user unknown", RFC 5321 §4.2 and RFC 3463
// enhanced code), which go-smtp's own Error() shortens; errors.As finds both
// it and the *smtp.SMTPError it wraps.
type ReplyError struct{ SMTPError *smtp.SMTPError }

func (e *ReplyError) Error() string { return ReplyText(e.SMTPError) }

func (e *ReplyError) Unwrap() error { return e.SMTPError }

// ReplyText formats a server reply: code, enhanced status code when there
// is one, and text.
func ReplyText(se *smtp.SMTPError) string {
	s := strconv.Itoa(se.Code)
	if c := se.EnhancedCode; c != smtp.NoEnhancedCode && c != (smtp.EnhancedCode{}) {
		s += fmt.Sprintf(" %d.%d.%d", c[0], c[1], c[2])
	}
	if se.Message != "" {
		s += " " + se.Message
	}
	return s
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

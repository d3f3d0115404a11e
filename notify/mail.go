package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// SplitAddress splits "tcp:HOST:PORT", "HOST:PORT" or "unix:/path" into a
// network and an address for net.Dial.
func SplitAddress(s string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("unix socket path %q must be absolute", p)
		}
		return "unix", p, nil
	case strings.HasPrefix(s, "tcp:"), strings.HasPrefix(s, "inet:"):
		s = s[strings.IndexByte(s, ':')+1:]
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("%q is not tcp:HOST:PORT or unix:/path", s)
	}
	return "tcp", s, nil
}

// Submit sends msg (a complete RFC 5322 message with CRLF line ends) over
// SMTP to the server at network/addr, from the reverse path from ("" is the
// null sender <>, RFC 5321 §4.5.5) to the recipients to. It returns when the
// server accepted the message after DATA for every recipient, or with the
// first error: a rejected RCPT fails the whole submission, because a
// notification that reaches only some of its recipients is not worth a
// partial success.
func Submit(ctx context.Context, network, addr, from string, to []string, msg []byte) (err error) {
	if len(to) == 0 {
		return errors.New("smtp submit: no recipients")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("smtp submit: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			_ = conn.Close()
			return fmt.Errorf("smtp submit: %w", err)
		}
	}
	// Closing the connection is what interrupts a blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	if dl, ok := ctx.Deadline(); ok {
		c.CommandTimeout = time.Until(dl)
		c.SubmissionTimeout = time.Until(dl)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := c.Hello(localName()); err != nil {
		return fmt.Errorf("smtp submit: EHLO: %w", err)
	}
	var opts *smtp.MailOptions
	// RFC 6531 §3.4: SMTPUTF8 only when the envelope needs it and the server
	// offers it.
	if !isASCII(from) || !allASCII(to) {
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			opts = &smtp.MailOptions{UTF8: true}
		}
	}
	if err := c.Mail(from, opts); err != nil {
		return fmt.Errorf("smtp submit: MAIL FROM:<%s>: %w", from, err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return fmt.Errorf("smtp submit: RCPT TO:<%s>: %w", rcpt, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp submit: DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp submit: write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp submit: end of data: %w", err)
	}
	if err := c.Quit(); err != nil {
		// The message is accepted; a failed QUIT only leaks nothing.
		_ = c.Close()
	}
	return nil
}

func localName() string {
	return "localhost"
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}

// MessageID returns a new globally unique Message-ID (RFC 5322 §3.6.4)
// with the angle brackets, for mail Lifeline writes itself.
func MessageID(host string) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return "<" + hex.EncodeToString(b[:]) + "." + time.Now().UTC().Format("20060102150405") + "@" + host + ">"
}

// composeMail writes the postmaster mail for one event: plain text, one
// fact a line, so that it reads well and greps well.
func composeMail(from, to, host string, ev Event) []byte {
	var subject string
	switch ev.Kind {
	case KindOutageStart:
		subject = "outage started on " + ev.Server
	case KindOutageEnd:
		subject = "outage ended on " + ev.Server
	case KindReplayFinished:
		subject = fmt.Sprintf("replay finished on %s: %d delivered, %d failed", ev.Server, ev.Delivered, ev.Failed)
	case KindPermanentFailure:
		subject = "permanent delivery failure on " + ev.Server
	default:
		subject = ev.Kind + " " + ev.Server
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Lifeline on %s reports: %s\r\n\r\n", host, subject)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&body, "%-11s %s\r\n", k+":", oneLine(v))
		}
	}
	line("Event", ev.Kind)
	line("Server", ev.Server)
	line("Time", ev.Time.UTC().Format(time.RFC3339))
	line("Cause", ev.Cause)
	line("Reason", ev.Reason)
	if ev.Kind == KindReplayFinished {
		line("Delivered", fmt.Sprint(ev.Delivered))
		line("Failed", fmt.Sprint(ev.Failed))
		line("Duration", ev.Duration.Round(time.Second).String())
	}
	line("Recipient", ev.Recipient)
	line("Message-ID", ev.MessageID)
	line("Reply", ev.Reply)

	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Lifeline <%s>\r\n", from)
	fmt.Fprintf(&b, "To: <%s>\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", "[lifeline] "+oneLine(subject)))
	fmt.Fprintf(&b, "Date: %s\r\n", ev.Time.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\r\n", MessageID(host))
	// RFC 3834 §5: a machine-generated message, so that no auto-responder
	// answers it.
	b.WriteString("Auto-Submitted: auto-generated\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	b.WriteString("\r\n")
	b.WriteString(body.String())
	return b.Bytes()
}

// oneLine keeps header and body lines intact whatever a reply contains.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Mail is one SMTP transaction.
type Mail struct {
	From string   // MAIL FROM address, without <>; "" is the null sender
	To   []string // RCPT TO addresses
	// Data is the message. Send normalizes its line ends to CRLF (see CRLF)
	// and dot-stuffs it (RFC 5321 §4.5.2).
	Data []byte
	// UTF8 adds the SMTPUTF8 parameter (RFC 6531 §3.4): needed when an
	// address or a header holds UTF-8. It is also added when From or a
	// recipient is not ASCII.
	UTF8 bool
}

// SendResult is what the server said about an accepted message.
type SendResult struct {
	QueueID string // from Postfix's "250 2.0.0 Ok: queued as ID"
	Reply   string
}

// SMTPError is a reply the server gave where the client expected success.
type SMTPError struct {
	Stage string // MAIL, RCPT <addr>, DATA, end of data, …
	Code  int
	Msg   string
}

func (e *SMTPError) Error() string { return fmt.Sprintf("SMTP %s: %d %s", e.Stage, e.Code, e.Msg) }

// Send delivers m to the SMTP server at addr (one connection, one
// transaction). Every recipient must be accepted.
func Send(ctx context.Context, addr string, m Mail) (SendResult, error) {
	var res SendResult
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Minute)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return res, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return res, wrapSMTP("greeting", err)
	}
	ext, err := ehlo(tp, "client.lifeline.test")
	if err != nil {
		return res, err
	}
	data := CRLF(m.Data)

	mail := fmt.Sprintf("MAIL FROM:<%s>", m.From)
	if _, ok := ext["8BITMIME"]; ok && has8bit(data) {
		mail += " BODY=8BITMIME"
	}
	if _, ok := ext["SIZE"]; ok {
		mail += " SIZE=" + strconv.Itoa(len(data))
	}
	utf8 := m.UTF8 || has8bit([]byte(m.From))
	for _, r := range m.To {
		utf8 = utf8 || has8bit([]byte(r))
	}
	if utf8 {
		if _, ok := ext["SMTPUTF8"]; !ok {
			return res, errors.New("SMTP: message needs SMTPUTF8, server does not offer it")
		}
		mail += " SMTPUTF8"
	}
	if err := command(tp, "MAIL", 250, "%s", mail); err != nil {
		return res, err
	}
	for _, r := range m.To {
		if err := command(tp, "RCPT "+r, 250, "RCPT TO:<%s>", r); err != nil {
			return res, err
		}
	}
	if err := command(tp, "DATA", 354, "DATA"); err != nil {
		return res, err
	}
	if err := writeDotStuffed(tp.W, data); err != nil {
		return res, fmt.Errorf("SMTP DATA: %w", err)
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		return res, wrapSMTP("end of data", err)
	}
	res.Reply = msg
	if i := strings.LastIndex(msg, "queued as "); i >= 0 {
		res.QueueID = strings.TrimSpace(msg[i+len("queued as "):])
	}
	// The message is accepted; a failed QUIT does not change that.
	_ = command(tp, "QUIT", 221, "QUIT")
	return res, nil
}

func ehlo(tp *textproto.Conn, name string) (map[string]string, error) {
	id, err := tp.Cmd("EHLO %s", name)
	if err != nil {
		return nil, err
	}
	tp.StartResponse(id)
	defer tp.EndResponse(id)
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		return nil, wrapSMTP("EHLO", err)
	}
	ext := map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

func command(tp *textproto.Conn, stage string, want int, format string, args ...any) error {
	id, err := tp.Cmd(format, args...)
	if err != nil {
		return fmt.Errorf("SMTP %s: %w", stage, err)
	}
	tp.StartResponse(id)
	defer tp.EndResponse(id)
	if _, _, err := tp.ReadResponse(want); err != nil {
		return wrapSMTP(stage, err)
	}
	return nil
}

func wrapSMTP(stage string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) {
		return &SMTPError{Stage: stage, Code: te.Code, Msg: te.Msg}
	}
	return fmt.Errorf("SMTP %s: %w", stage, err)
}

// writeDotStuffed writes data, whose lines all end in CRLF, as SMTP DATA:
// a line that starts with "." gets another one (RFC 5321 §4.5.2), and
// ".CRLF" ends it. textproto's DotWriter is not used because it turns the
// bare CR of "CR CR LF" into an extra CR.
func writeDotStuffed(w *bufio.Writer, data []byte) error {
	for len(data) > 0 {
		if data[0] == '.' {
			if err := w.WriteByte('.'); err != nil {
				return err
			}
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			i = len(data) - 1
		}
		if _, err := w.Write(data[:i+1]); err != nil {
			return err
		}
		data = data[i+1:]
	}
	if _, err := w.WriteString(".\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// CRLF returns b with every line ending in CRLF, as SMTP requires (RFC 5321
// §2.3.8): a bare LF becomes CRLF, an existing CRLF is kept, a CR that is not
// followed by LF is left alone (Postfix keeps it as data), and a last line
// without an end gets CRLF. This is the byte stream the server receives, so
// it is what the journal and the mailbox are compared with.
func CRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n"))
	out := make([]byte, 0, len(b)+n+2)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

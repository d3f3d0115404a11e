package health

import (
	"context"
	"io"
	"net/textproto"
)

// maxReplyBytes bounds what a probe reads from a server: a misbehaving
// server cannot make the probe buffer without limit.
const maxReplyBytes = 1 << 20

// smtpProbe is the lmtp and smtp probe: greeting, LHLO or EHLO, and with a
// canary MAIL FROM:<>, RCPT TO:<canary>, RSET; then QUIT.
type smtpProbe struct {
	dialer
	lmtp   bool
	canary string
	helo   string
}

func (p *smtpProbe) Check(ctx context.Context) (err error) {
	conn, stop, err := p.dial(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stop(); cerr != nil && err == nil {
			err = p.fail("close", cerr)
		}
	}()
	tc := textproto.NewConn(limitConn(conn))

	// RFC 5321 §4.2 / RFC 2033 §4: the server speaks first, 220 when ready
	// (554 or 421 when it refuses service).
	if _, _, err := tc.ReadResponse(220); err != nil {
		return p.fail("greeting", err)
	}
	hello := "EHLO"
	if p.lmtp {
		// RFC 2033 §4.1: LMTP uses LHLO where SMTP has EHLO.
		hello = "LHLO"
	}
	if err := cmd(tc, 250, "%s %s", hello, p.helo); err != nil {
		return p.fail(hello, err)
	}
	if p.canary != "" {
		// RFC 5321 §4.5.5: the null reverse-path, as for notifications, so
		// that no sender policy or quota of a real address gets in the way.
		if err := cmd(tc, 2, "MAIL FROM:<>"); err != nil {
			return p.fail("MAIL FROM:<>", err)
		}
		// Any 2xx (250, or 251 user not local) means the server found the
		// mailbox (RFC 5321 §4.2.5); a 4xx/5xx here is the broken user
		// database the canary is for.
		if err := cmd(tc, 2, "RCPT TO:<%s>", p.canary); err != nil {
			return p.fail("RCPT TO:<"+p.canary+">", err)
		}
		// RFC 5321 §4.1.1.5: RSET aborts the transaction; no DATA is sent,
		// so nothing is ever delivered to the canary.
		if err := cmd(tc, 250, "RSET"); err != nil {
			return p.fail("RSET", err)
		}
	}
	// The checks are done; how the server answers QUIT decides nothing about
	// its health (some close without 221), so its reply is not checked.
	if _, err := tc.Cmd("QUIT"); err != nil {
		return p.fail("QUIT", err)
	}
	return nil
}

// cmd sends one command and reads its reply, which must have the expected
// code (textproto semantics: 2 = any 2xx). A textproto.Error carries the
// server's code and text, which the caller's error then shows.
func cmd(tc *textproto.Conn, expect int, format string, args ...any) error {
	id, err := tc.Cmd(format, args...)
	if err != nil {
		return err
	}
	tc.StartResponse(id)
	defer tc.EndResponse(id)
	_, _, err = tc.ReadResponse(expect)
	return err
}

// limitConn is conn with reads capped at maxReplyBytes in all.
func limitConn(conn io.ReadWriteCloser) io.ReadWriteCloser {
	return struct {
		io.Reader
		io.WriteCloser
	}{io.LimitReader(conn, maxReplyBytes), conn}
}

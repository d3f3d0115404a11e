package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Reply is a server's answer for one recipient. Code 0 means no reply at all
// (the connection failed or broke before the server answered for it); replay
// treats it like a 4xx: the message may or may not have been delivered, and
// trying again is the only safe course (RFC 5321 §4.1.1.4 on a lost reply to
// the final dot: the client must assume the message was not delivered).
type Reply struct {
	Rcpt     string // the RCPT TO address
	Code     int    // 250, 452, 550 ...; 0 = no reply
	Enhanced string // RFC 3463 enhanced status code, "2.0.0", or ""
	Text     string // the reply text without the codes, lines joined by "\n"
}

// OK reports a 2xx reply.
func (r Reply) OK() bool { return r.Code >= 200 && r.Code < 300 }

// Permanent reports a 5xx reply.
func (r Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// Temporary reports a 4xx reply or no reply, the cases to try again.
func (r Reply) Temporary() bool { return !r.OK() && !r.Permanent() }

// String is the reply as the server sent it ("250 2.0.0 Saved"), or
// "no reply: TEXT" for Code 0.
func (r Reply) String() string {
	if r.Code == 0 {
		return "no reply: " + r.Text
	}
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + strings.ReplaceAll(r.Text, "\n", " ")
	}
	return s
}

// DelivererOptions configures a Deliverer.
type DelivererOptions struct {
	// Network and Address of the server: "tcp" and "HOST:PORT", or "unix"
	// and a socket path.
	Network, Address string
	// SMTP selects SMTP (EHLO, one reply after DATA for all recipients)
	// instead of LMTP (LHLO, one reply per accepted recipient after DATA,
	// RFC 2033 §4.2).
	SMTP bool
	// LocalName is sent with LHLO/EHLO. Default "localhost".
	LocalName string
	// MaxIdle is how many idle connections are kept for reuse. Default 4.
	MaxIdle int
	// IdleTimeout drops an idle connection older than this instead of
	// reusing it, before the server's own idle timeout closes it under us.
	// Default 30s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting and the greeting. Default 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds each reply; DataTimeout the replies after the
	// final dot. Defaults 5 and 10 minutes (RFC 5321 §4.5.3.2).
	CommandTimeout, DataTimeout time.Duration
}

// Deliverer delivers messages over LMTP or SMTP to one server through a
// small pool of connections that are reused across transactions. It is safe
// for concurrent use; each Deliver uses its own connection.
type Deliverer struct {
	opts DelivererOptions

	mu     sync.Mutex
	idle   []*pooledConn
	closed bool
}

type pooledConn struct {
	c        *smtp.Client
	conn     net.Conn
	lastUsed time.Time
}

// NewDeliverer returns a Deliverer; it connects on first use.
func NewDeliverer(opts DelivererOptions) *Deliverer {
	if opts.LocalName == "" {
		opts.LocalName = "localhost"
	}
	if opts.MaxIdle <= 0 {
		opts.MaxIdle = 4
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 30 * time.Second
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 5 * time.Minute
	}
	if opts.DataTimeout <= 0 {
		opts.DataTimeout = 10 * time.Minute
	}
	return &Deliverer{opts: opts}
}

// ErrUnreachable wraps the error of a Deliver that could not connect to the
// server or was refused at the greeting or LHLO/EHLO: nothing was sent.
var ErrUnreachable = errors.New("server unreachable")

// ErrDelivererClosed is returned by Deliver after Close.
var ErrDelivererClosed = errors.New("replay: deliverer closed")

// Close closes the idle connections (with QUIT) and makes later Deliver
// calls fail. Connections in use are closed when their Deliver returns.
func (d *Deliverer) Close() error {
	d.mu.Lock()
	idle := d.idle
	d.idle = nil
	d.closed = true
	d.mu.Unlock()
	var errs []error
	for _, pc := range idle {
		errs = append(errs, pc.quit())
	}
	return errors.Join(errs...)
}

func (pc *pooledConn) quit() error {
	_ = pc.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := pc.c.Quit(); err != nil {
		// The server may have closed the idle connection already; all that
		// matters is that ours is closed too.
		_ = pc.c.Close()
	}
	return nil
}

func (d *Deliverer) get(ctx context.Context) (pc *pooledConn, pooled bool, err error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, false, ErrDelivererClosed
	}
	for len(d.idle) > 0 {
		pc = d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		if time.Since(pc.lastUsed) < d.opts.IdleTimeout {
			d.mu.Unlock()
			return pc, true, nil
		}
		_ = pc.quit() // too old: the server may be about to close it
	}
	d.mu.Unlock()
	pc, err = d.dial(ctx)
	return pc, false, err
}

func (d *Deliverer) dial(ctx context.Context) (*pooledConn, error) {
	dctx, cancel := context.WithTimeout(ctx, d.opts.DialTimeout)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(dctx, d.opts.Network, d.opts.Address)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s:%s: %w", ErrUnreachable, d.opts.Network, d.opts.Address, err)
	}
	var c *smtp.Client
	if d.opts.SMTP {
		c = smtp.NewClient(conn)
	} else {
		c = smtp.NewClientLMTP(conn)
	}
	c.CommandTimeout = d.opts.DialTimeout
	stop := context.AfterFunc(dctx, func() { _ = conn.Close() })
	err = c.Hello(d.opts.LocalName)
	if !stop() && err == nil {
		err = dctx.Err()
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: greeting/%s at %s:%s: %w", ErrUnreachable, d.helloVerb(), d.opts.Network, d.opts.Address, err)
	}
	c.CommandTimeout = d.opts.CommandTimeout
	c.SubmissionTimeout = d.opts.DataTimeout
	return &pooledConn{c: c, conn: conn, lastUsed: time.Now()}, nil
}

func (d *Deliverer) helloVerb() string {
	if d.opts.SMTP {
		return "EHLO"
	}
	return "LHLO"
}

func (d *Deliverer) put(pc *pooledConn) {
	pc.lastUsed = time.Now()
	d.mu.Lock()
	if !d.closed && len(d.idle) < d.opts.MaxIdle {
		d.idle = append(d.idle, pc)
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	_ = pc.quit()
}

// Deliver runs one mail transaction: MAIL FROM:<from>, RCPT TO for each of
// rcpts, DATA with body (the raw message with CRLF line ends, sent as is
// apart from dot-stuffing) and returns one Reply per element of rcpts, in
// order (a recipient given twice is sent once and gets the same reply twice).
//
// A recipient refused at RCPT gets that reply; when none is accepted, DATA
// is skipped and the transaction reset. Over LMTP each accepted recipient
// gets its own reply after DATA (RFC 2033 §4.2); over SMTP the one reply to
// DATA applies to all of them.
//
// The error is not nil when the transaction did not complete normally:
// connecting failed, the connection broke, ctx ended, or body could not be
// read (then the final dot is never sent, so that no truncated message is
// delivered). The recipients the server had not answered for then have Code
// 0 and the error's text. The replies are always complete and usable.
func (d *Deliverer) Deliver(ctx context.Context, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	// Unique recipients in order, and where each input went.
	uniq := make([]string, 0, len(rcpts))
	index := make(map[string]int, len(rcpts))
	for _, r := range rcpts {
		if _, ok := index[r]; !ok {
			index[r] = len(uniq)
			uniq = append(uniq, r)
		}
	}
	replies := make([]Reply, len(uniq))
	for i, r := range uniq {
		replies[i].Rcpt = r
	}
	err := d.transaction(ctx, from, uniq, body, replies)
	if err != nil {
		for i := range replies {
			if replies[i].Code == 0 && replies[i].Text == "" {
				replies[i].Text = err.Error()
			}
		}
	}
	out := make([]Reply, len(rcpts))
	for i, r := range rcpts {
		out[i] = replies[index[r]]
	}
	return out, err
}

func (d *Deliverer) transaction(ctx context.Context, from string, rcpts []string, body io.Reader, replies []Reply) error {
	if len(rcpts) == 0 {
		return errors.New("no recipients")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var opts *smtp.MailOptions
	for attempt := 0; ; attempt++ {
		pc, pooled, err := d.get(ctx)
		if err != nil {
			return err
		}
		// RFC 6531 §3.4: SMTPUTF8 only if the server offers it. Go-smtp adds
		// BODY=8BITMIME by itself when the server offers 8BITMIME (RFC 6152).
		opts = nil
		if ok, _ := pc.c.Extension("SMTPUTF8"); ok && (!isASCII(from) || !allASCII(rcpts)) {
			opts = &smtp.MailOptions{UTF8: true}
		}
		stop := context.AfterFunc(ctx, func() { _ = pc.conn.Close() })
		err = pc.c.Mail(from, opts)
		if err != nil && !isReply(err) && pooled && attempt <= d.opts.MaxIdle && ctx.Err() == nil {
			// A reused connection the server has closed in the meantime:
			// nothing was sent yet, so a fresh connection is safe.
			stop()
			_ = pc.c.Close()
			continue
		}
		keep, terr := d.rest(ctx, pc, from, rcpts, body, replies, err)
		if !stop() {
			// ctx ended during the transaction and closed the connection.
			keep = false
			if terr == nil {
				terr = ctx.Err()
			}
		}
		if keep {
			d.put(pc)
		} else {
			_ = pc.c.Close()
		}
		return terr
	}
}

// rest continues a transaction after MAIL (whose error is mailErr) and
// reports whether the connection is fit for reuse.
func (d *Deliverer) rest(ctx context.Context, pc *pooledConn, from string, rcpts []string, body io.Reader, replies []Reply, mailErr error) (keep bool, _ error) {
	c := pc.c
	if mailErr != nil {
		if r, ok := replyOf(mailErr); ok {
			// The server refused the sender: that is every recipient's answer.
			for i := range replies {
				replies[i] = r
				replies[i].Rcpt = rcpts[i]
			}
			return d.reset(c, r), nil
		}
		return false, fmt.Errorf("MAIL FROM: %w", mailErr)
	}
	var accepted []int
	for i, rcpt := range rcpts {
		err := c.Rcpt(rcpt, nil)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		r, ok := replyOf(err)
		if !ok {
			return false, fmt.Errorf("RCPT TO: %w", err)
		}
		r.Rcpt = rcpt
		replies[i] = r
		if r.Code == 421 {
			// RFC 5321 §3.8: the server is closing the channel; the rest get
			// no reply.
			return false, fmt.Errorf("RCPT TO: %w", err)
		}
	}
	if len(accepted) == 0 {
		// RFC 5321 §3.3: no DATA without a valid recipient; RSET ends the
		// transaction so that the connection can be reused.
		return d.reset(c, Reply{}), nil
	}
	w, err := c.Data()
	if err != nil {
		r, ok := replyOf(err)
		if !ok {
			return false, fmt.Errorf("DATA: %w", err)
		}
		for _, i := range accepted {
			replies[i] = r
			replies[i].Rcpt = rcpts[i]
		}
		return d.reset(c, r), nil
	}
	rr := &readErrReader{r: body, ctx: ctx}
	if _, err := io.Copy(w, rr); err != nil {
		// Never send the final dot after a short body: close the connection
		// instead, which makes the server discard the transaction
		// (RFC 5321 §4.1.1.4).
		if rr.err != nil {
			return false, fmt.Errorf("reading message: %w", rr.err)
		}
		return false, fmt.Errorf("sending message: %w", err)
	}
	if d.opts.SMTP {
		resp, err := w.CloseWithResponse()
		if err != nil {
			r, ok := replyOf(err)
			if !ok {
				return false, fmt.Errorf("end of DATA: %w", err)
			}
			for _, i := range accepted {
				replies[i] = r
				replies[i].Rcpt = rcpts[i]
			}
			return r.Code != 421, nil
		}
		for _, i := range accepted {
			replies[i] = parseOK(rcpts[i], resp.StatusText)
		}
		return true, nil
	}
	resp, err := w.CloseWithLMTPResponse()
	for _, i := range accepted {
		if dr, ok := resp[rcpts[i]]; ok && dr != nil {
			replies[i] = parseOK(rcpts[i], dr.StatusText)
		}
	}
	if err == nil {
		return true, nil
	}
	var lerr smtp.LMTPDataError
	if errors.As(err, &lerr) {
		for _, i := range accepted {
			if se, ok := lerr[rcpts[i]]; ok && se != nil {
				replies[i] = fromSMTPError(se)
				replies[i].Rcpt = rcpts[i]
			}
		}
	}
	// Only per-recipient replies (all read): the connection is fine, unless
	// one of them said the server is closing.
	var onlyReplies bool
	if le, ok := err.(smtp.LMTPDataError); ok {
		onlyReplies = true
		for _, se := range le {
			if se.Code == 421 {
				onlyReplies = false
			}
		}
	}
	if onlyReplies {
		return true, nil
	}
	return false, fmt.Errorf("replies after DATA: %w", err)
}

// reset sends RSET after a refused transaction; a failed RSET or a 421
// (RFC 5321 §3.8) means the connection is not reused.
func (d *Deliverer) reset(c *smtp.Client, r Reply) bool {
	if r.Code == 421 {
		return false
	}
	return c.Reset() == nil
}

// readErrReader remembers a read error of the body (to tell it from a
// write error) and stops at once when ctx ends.
type readErrReader struct {
	r   io.Reader
	ctx context.Context
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// isReply reports whether err is the server's answer rather than a broken
// connection.
func isReply(err error) bool {
	_, ok := replyOf(err)
	return ok
}

func replyOf(err error) (Reply, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 200 && se.Code < 600 {
		return fromSMTPError(se), true
	}
	return Reply{}, false
}

func fromSMTPError(se *smtp.SMTPError) Reply {
	r := Reply{Code: se.Code, Text: se.Message}
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return r
}

// parseOK turns the text of a 250 reply into a Reply, splitting off the
// enhanced status code (RFC 2034 §4) when there is one.
func parseOK(rcpt, text string) Reply {
	r := Reply{Rcpt: rcpt, Code: 250, Text: text}
	if code, rest, ok := strings.Cut(text, " "); ok && isEnhanced(code) {
		r.Enhanced = code
		r.Text = strings.ReplaceAll(rest, "\n"+code+" ", "\n")
	} else if isEnhanced(text) {
		r.Enhanced, r.Text = text, ""
	}
	return r
}

func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 {
			return false
		}
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
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

package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/internal/promreg"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// RFC 1939 §3: a session is in the AUTHORIZATION state until the client has
// identified itself, then in TRANSACTION; QUIT from TRANSACTION enters UPDATE.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

var (
	errLineTooLong = errors.New("line too long")
	errShutdown    = errors.New("server shutting down")
	errQuit        = errors.New("quit")
)

// maxDiscard is how much of one overlong line the server reads and drops
// before it hangs up on a client that sends no line end at all.
const maxDiscard = 1 << 20

type session struct {
	srv      *Server
	conn     net.Conn
	log      *slog.Logger
	r        *bufio.Reader
	w        *bufio.Writer
	cw       *countWriter
	tls      bool
	loopback bool
	clientIP string

	state   state
	user    string // from USER, waiting for PASS
	mailbox string // set in TRANSACTION state; the server's lock is held
	msgs    []userview.Message
	deleted []bool
	uidv    uint32
	errors  int
}

// countWriter writes to the connection with a fresh write deadline for every
// buffer (so that a large RETR to a slow client is bounded per write, not in
// total) and counts the bytes.
type countWriter struct {
	conn    net.Conn
	timeout time.Duration
	sent    prometheus.Counter
}

func (c *countWriter) Write(p []byte) (int, error) {
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	n, err := c.conn.Write(p)
	c.sent.Add(float64(n))
	return n, err
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	id := s.nextID.Add(1)
	sess := &session{
		srv:  s,
		conn: c,
		log:  s.opts.Logger.With("conn", id, "remote", c.RemoteAddr().String()),
	}
	sess.cw = &countWriter{conn: c, timeout: s.opts.IdleTimeout, sent: s.metrics.bytesSent}
	sess.r = bufio.NewReaderSize(c, s.opts.MaxLineLength)
	sess.w = bufio.NewWriterSize(sess.cw, 32<<10)
	sess.loopback, sess.clientIP = sidecar.Peer(c.RemoteAddr())
	_, sess.tls = c.(*tls.Conn)

	s.metrics.sessions.Inc()
	s.addSession(sess)
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			sess.log.Error("pop3: panic", "panic", r, "stack", string(debug.Stack()))
		}
		sess.release()
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			sess.log.Debug("pop3: close", "err", err)
		}
		s.removeSession(sess)
		s.metrics.sessions.Dec()
	}()
	sess.run()
}

// interrupt wakes a session that waits for a command; see readLine.
func (ss *session) interrupt() { _ = ss.conn.SetReadDeadline(time.Now()) }

// release gives the mailbox back without applying any DELE.
func (ss *session) release() {
	if ss.mailbox != "" {
		ss.srv.unlock(ss.mailbox)
		ss.mailbox = ""
	}
}

func (ss *session) run() {
	ss.log.Debug("pop3: connected", "tls", ss.tls)
	if tc, ok := ss.conn.(*tls.Conn); ok {
		if err := ss.handshake(tc); err != nil {
			ss.log.Info("pop3: TLS handshake", "err", err)
			return
		}
	}
	ss.reply("+OK %s Lifeline POP3 server ready", ss.srv.opts.Hostname)
	for {
		if ss.r.Buffered() == 0 {
			// PIPELINING (RFC 2449 §6.6): answer a batch of commands in one write.
			if err := ss.w.Flush(); err != nil {
				ss.log.Debug("pop3: write", "err", err)
				return
			}
		}
		line, err := ss.readLine()
		switch {
		case errors.Is(err, errLineTooLong):
			ss.fail("-ERR line too long")
		case err != nil:
			var ne net.Error
			if errors.Is(err, errShutdown) || ss.srv.closing.Load() {
				ss.reply("-ERR [SYS/TEMP] server shutting down, try again later")
			} else if errors.As(err, &ne) && ne.Timeout() {
				ss.reply("-ERR autologout: idle for too long")
			}
			_ = ss.w.Flush()
			ss.log.Debug("pop3: disconnect", "err", err)
			return
		default:
			if err := ss.command(line); errors.Is(err, errQuit) {
				_ = ss.w.Flush()
				return
			} else if err != nil {
				ss.log.Info("pop3: closing session", "err", err)
				_ = ss.w.Flush()
				return
			}
		}
		if ss.errors >= maxErrors {
			ss.reply("-ERR too many errors, closing connection")
			_ = ss.w.Flush()
			return
		}
	}
}

func (ss *session) handshake(tc *tls.Conn) error {
	if err := tc.SetDeadline(time.Now().Add(ss.srv.opts.IdleTimeout)); err != nil {
		return err
	}
	if err := tc.HandshakeContext(ss.srv.ctx); err != nil {
		return err
	}
	return tc.SetDeadline(time.Time{})
}

// readLine reads one command line without its line end (CRLF, or a bare LF
// from lenient clients).
func (ss *session) readLine() (string, error) {
	if err := ss.conn.SetReadDeadline(time.Now().Add(ss.srv.opts.IdleTimeout)); err != nil {
		return "", err
	}
	// Checked after setting the deadline: Shutdown sets closing, then moves
	// the deadline to now, so one of the two stops this read.
	if ss.srv.closing.Load() {
		return "", errShutdown
	}
	line, err := ss.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for n := len(line); errors.Is(err, bufio.ErrBufferFull); n += len(line) {
			if n > maxDiscard {
				return "", fmt.Errorf("%w: no line end in %d bytes", errLineTooLong, n)
			}
			line, err = ss.r.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		ss.errors++
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return string(line), nil
}

func (ss *session) reply(format string, args ...any) {
	fmt.Fprintf(ss.w, format, args...)
	ss.w.WriteString("\r\n")
}

// fail answers a failed command and counts it towards maxErrors.
func (ss *session) fail(format string, args ...any) {
	ss.errors++
	ss.reply(format, args...)
}

func (ss *session) command(line string) error {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	label := "unknown"
	for _, c := range commands {
		if c == verb {
			label = c
		}
	}
	ss.srv.metrics.commands.WithLabelValues(label).Inc()

	switch verb {
	case "CAPA": // RFC 2449 §5: valid in both states
		ss.capa()
		return nil
	case "QUIT":
		return ss.quit()
	}
	if ss.state == stateAuthorization {
		switch verb {
		case "USER":
			ss.cmdUser(arg)
		case "PASS":
			ss.cmdPass(arg)
		case "AUTH":
			return ss.cmdAuth(arg)
		case "STLS":
			return ss.cmdSTLS(arg)
		case "APOP":
			ss.fail("-ERR APOP not supported")
		default:
			ss.fail("-ERR unknown command or not valid before login")
		}
		return nil
	}
	switch verb {
	case "STAT":
		n, size := ss.stat()
		ss.reply("+OK %d %d", n, size)
	case "LIST":
		ss.cmdList(arg)
	case "UIDL":
		ss.cmdUIDL(arg)
	case "RETR":
		return ss.cmdRetr(arg)
	case "TOP":
		return ss.cmdTop(arg)
	case "DELE":
		if i, ok := ss.msg(arg); ok {
			ss.deleted[i] = true
			ss.reply("+OK message %d deleted", i+1)
		}
	case "NOOP":
		ss.reply("+OK")
	case "RSET":
		clear(ss.deleted)
		n, size := ss.stat()
		ss.reply("+OK maildrop has %d messages (%d octets)", n, size)
	default:
		ss.fail("-ERR unknown command or not valid after login")
	}
	return nil
}

func (ss *session) plaintextAllowed() bool { return ss.tls || ss.loopback }

// capa answers CAPA (RFC 2449 §5). USER and SASL PLAIN are offered only
// where plaintext passwords are accepted, so that clients use STLS first.
func (ss *session) capa() {
	ss.reply("+OK capability list follows")
	for _, c := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} {
		ss.reply("%s", c)
	}
	if ss.plaintextAllowed() {
		ss.reply("USER")
		ss.reply("SASL PLAIN")
	}
	if ss.state == stateAuthorization && !ss.tls && ss.srv.opts.TLSConfig != nil {
		ss.reply("STLS")
	}
	ss.reply("IMPLEMENTATION Lifeline")
	ss.reply(".")
}

func (ss *session) refusePlaintext() bool {
	if ss.plaintextAllowed() {
		return false
	}
	ss.srv.metrics.logins.WithLabelValues("pop3", promreg.LoginPlaintextRefused).Inc()
	if ss.srv.opts.TLSConfig != nil {
		ss.fail("-ERR [AUTH] plaintext authentication disallowed on non-secure connections, use STLS")
	} else {
		ss.fail("-ERR [AUTH] plaintext authentication disallowed on non-secure connections, use TLS")
	}
	return true
}

func (ss *session) cmdUser(arg string) {
	if ss.refusePlaintext() {
		return
	}
	if arg == "" {
		ss.fail("-ERR USER needs a name")
		return
	}
	ss.user = arg
	ss.reply("+OK send PASS")
}

func (ss *session) cmdPass(arg string) {
	user := ss.user
	ss.user = ""
	if user == "" {
		ss.fail("-ERR send USER first")
		return
	}
	if ss.refusePlaintext() {
		return
	}
	// RFC 1939 §7: the password is the rest of the line, spaces included.
	ss.login(user, arg)
}

// cmdAuth implements AUTH (RFC 5034) with SASL PLAIN (RFC 4616).
func (ss *session) cmdAuth(arg string) error {
	if arg == "" {
		// Not in RFC 5034, but clients (Outlook) ask so for the mechanisms.
		ss.reply("+OK")
		if ss.plaintextAllowed() {
			ss.reply("PLAIN")
		}
		ss.reply(".")
		return nil
	}
	mech, initial, hasInitial := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		ss.fail("-ERR [AUTH] unsupported SASL mechanism")
		return nil
	}
	if ss.refusePlaintext() {
		return nil
	}
	ss.user = ""
	if !hasInitial {
		ss.reply("+ ")
		if err := ss.w.Flush(); err != nil {
			return err
		}
		line, err := ss.readLine()
		if errors.Is(err, errLineTooLong) {
			ss.fail("-ERR [AUTH] line too long")
			return nil
		}
		if err != nil {
			return err
		}
		initial = line
	}
	initial = strings.TrimSpace(initial)
	switch initial {
	case "*": // RFC 5034 §4: the client cancels
		ss.fail("-ERR authentication cancelled")
		return nil
	case "=": // RFC 5034 §4: an empty initial response
		initial = ""
	}
	raw, err := base64.StdEncoding.DecodeString(initial)
	if err != nil {
		ss.fail("-ERR [AUTH] invalid base64")
		return nil
	}
	authz, rest, ok1 := strings.Cut(string(raw), "\x00")
	user, pass, ok2 := strings.Cut(rest, "\x00")
	if !ok1 || !ok2 || user == "" {
		ss.fail("-ERR [AUTH] malformed PLAIN response")
		return nil
	}
	if authz != "" && authz != user {
		// No proxy authorisation: a user reads only their own mailbox.
		ss.srv.metrics.logins.WithLabelValues("pop3", promreg.LoginFailed).Inc()
		ss.fail("-ERR [AUTH] authentication failed")
		return nil
	}
	ss.login(user, pass)
	return nil
}

func (ss *session) login(user, pass string) {
	m := ss.srv.metrics.logins
	ctx := ss.srv.ctx
	mailbox, err := ss.srv.opts.Auth.Login(ctx, ss.clientIP, user, pass)
	if err != nil {
		if sidecar.TemporaryError(err) {
			m.WithLabelValues("pop3", promreg.LoginError).Inc()
			ss.log.Warn("pop3: login error", "user", auth.LogUser(user), "err", err)
			ss.fail("-ERR [SYS/TEMP] cannot log in now, try again later")
			return
		}
		m.WithLabelValues("pop3", promreg.LoginFailed).Inc()
		ss.log.Info("pop3: login failed", "user", auth.LogUser(user), "err", err)
		ss.fail("-ERR [AUTH] authentication failed")
		return
	}
	if ss.srv.opts.Serving != nil {
		if ok, text := ss.srv.opts.Serving.Serves(mailbox); !ok {
			m.WithLabelValues("pop3", promreg.LoginNotServing).Inc()
			ss.log.Info("pop3: login while not serving", "user", auth.LogUser(user), "mailbox", mailbox)
			if text == "" {
				text = "this mailbox is not served now, use your normal mail server"
			}
			ss.reply("-ERR [SYS/PERM] %s", oneLine(text))
			return
		}
	}
	if !ss.srv.lock(mailbox) {
		m.WithLabelValues("pop3", promreg.LoginInUse).Inc()
		ss.reply("-ERR [IN-USE] mailbox is locked by another POP3 session")
		return
	}
	msgs, err := ss.srv.opts.Store.Messages(ctx, mailbox)
	var uidv uint32
	if err == nil {
		var info journal.MailboxInfo
		info, err = ss.srv.opts.Journal.Mailbox(ctx, mailbox)
		uidv = info.UIDValidity
		if errors.Is(err, journal.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		ss.srv.unlock(mailbox)
		m.WithLabelValues("pop3", promreg.LoginError).Inc()
		ss.log.Error("pop3: open maildrop", "mailbox", mailbox, "err", err)
		ss.reply("-ERR [SYS/TEMP] cannot open mailbox, try again later")
		return
	}
	m.WithLabelValues("pop3", promreg.LoginOK).Inc()
	ss.log.Info("pop3: login", "user", auth.LogUser(user), "mailbox", mailbox, "messages", len(msgs))
	ss.mailbox, ss.msgs, ss.deleted, ss.uidv = mailbox, msgs, make([]bool, len(msgs)), uidv
	ss.state = stateTransaction
	n, size := ss.stat()
	ss.reply("+OK maildrop has %d messages (%d octets)", n, size)
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// cmdSTLS upgrades the connection to TLS (RFC 2595 §4).
func (ss *session) cmdSTLS(arg string) error {
	if ss.srv.opts.TLSConfig == nil || ss.tls || arg != "" {
		ss.fail("-ERR STLS not available")
		return nil
	}
	if ss.r.Buffered() > 0 {
		// Commands pipelined behind STLS were sent in plaintext and could
		// have been injected by a man in the middle: refuse them all.
		return errors.New("data pipelined after STLS")
	}
	ss.reply("+OK begin TLS negotiation")
	if err := ss.w.Flush(); err != nil {
		return err
	}
	tc := tls.Server(ss.conn, ss.srv.opts.TLSConfig)
	if err := ss.handshake(tc); err != nil {
		return fmt.Errorf("STLS handshake: %w", err)
	}
	// Swap the connection under the session lock so that Shutdown interrupts
	// the TLS connection from now on.
	ss.srv.mu.Lock()
	ss.conn = tc
	ss.srv.mu.Unlock()
	ss.cw.conn = tc
	ss.r.Reset(tc)
	ss.tls = true
	ss.user = ""
	return nil
}

// msg parses a message number (RFC 1939 §3: from 1) and reports -ERR itself
// when it names no message of this session's maildrop, or a deleted one.
// Message numbers index only the session's own snapshot: no number reaches
// another user's mail.
func (ss *session) msg(arg string) (int, bool) {
	arg = strings.TrimSpace(arg)
	n, err := strconv.ParseUint(arg, 10, 32)
	// Not counted towards maxErrors: clients that lost track of the
	// maildrop legitimately ask for numbers that are gone.
	if err != nil || n == 0 || n > uint64(len(ss.msgs)) {
		ss.reply("-ERR no such message")
		return 0, false
	}
	i := int(n - 1)
	if ss.deleted[i] {
		ss.reply("-ERR message %d already deleted", n)
		return 0, false
	}
	return i, true
}

func (ss *session) stat() (n int, size int64) {
	for i, m := range ss.msgs {
		if !ss.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

func (ss *session) cmdList(arg string) {
	if arg != "" {
		if i, ok := ss.msg(arg); ok {
			ss.reply("+OK %d %d", i+1, ss.msgs[i].Size)
		}
		return
	}
	n, size := ss.stat()
	ss.reply("+OK %d messages (%d octets)", n, size)
	for i, m := range ss.msgs {
		if !ss.deleted[i] {
			ss.reply("%d %d", i+1, m.Size)
		}
	}
	ss.reply(".")
}

// uidl is a message's unique-id (RFC 1939 §7): the mailbox's UIDVALIDITY and
// the message's UID, which the journal never changes or reuses.
func (ss *session) uidl(i int) string { return fmt.Sprintf("%d.%d", ss.uidv, ss.msgs[i].UID) }

func (ss *session) cmdUIDL(arg string) {
	if arg != "" {
		if i, ok := ss.msg(arg); ok {
			ss.reply("+OK %d %s", i+1, ss.uidl(i))
		}
		return
	}
	ss.reply("+OK unique-id listing follows")
	for i := range ss.msgs {
		if !ss.deleted[i] {
			ss.reply("%d %s", i+1, ss.uidl(i))
		}
	}
	ss.reply(".")
}

func (ss *session) cmdRetr(arg string) error {
	i, ok := ss.msg(arg)
	if !ok {
		return nil
	}
	return ss.send(i, -1, fmt.Sprintf("+OK %d octets", ss.msgs[i].Size))
}

func (ss *session) cmdTop(arg string) error {
	f := strings.Fields(arg)
	if len(f) != 2 {
		ss.fail("-ERR usage: TOP msg lines")
		return nil
	}
	lines, err := strconv.ParseUint(f[1], 10, 31)
	if err != nil {
		ss.fail("-ERR invalid number of lines")
		return nil
	}
	i, ok := ss.msg(f[0])
	if !ok {
		return nil
	}
	return ss.send(i, int(lines), "+OK top of message follows")
}

// send streams message i. An error after the +OK line ends the session: a
// multi-line response cannot be taken back.
func (ss *session) send(i, bodyLines int, status string) error {
	rc, err := journal.OpenItem(ss.srv.ctx, ss.srv.opts.Journal, ss.msgs[i].Item())
	if err != nil {
		ss.log.Error("pop3: open message", "mailbox", ss.mailbox, "uid", ss.msgs[i].UID, "err", err)
		if errors.Is(err, journal.ErrNotFound) {
			ss.reply("-ERR message %d is no longer available", i+1)
		} else {
			ss.reply("-ERR [SYS/TEMP] cannot read message, try again later")
		}
		return nil
	}
	ss.reply("%s", status)
	err = sendMessage(ss.w, rc, bodyLines)
	if cerr := rc.Close(); err == nil && cerr != nil {
		ss.log.Warn("pop3: close message", "err", cerr)
	}
	if err != nil {
		return fmt.Errorf("sending message uid %d: %w", ss.msgs[i].UID, err)
	}
	return nil
}

// quit ends the session; from TRANSACTION it enters the UPDATE state (RFC
// 1939 §6) and hides every message marked with DELE from this user's view.
func (ss *session) quit() error {
	if ss.state != stateTransaction {
		ss.reply("+OK bye")
		return errQuit
	}
	var uids []uint32
	for i, d := range ss.deleted {
		if d {
			uids = append(uids, ss.msgs[i].UID)
		}
	}
	ctx, cancel := context.WithTimeout(ss.srv.ctx, time.Minute)
	defer cancel()
	if err := ss.srv.opts.Store.Hide(ctx, ss.mailbox, uids...); err != nil {
		ss.log.Error("pop3: UPDATE", "mailbox", ss.mailbox, "err", err)
		ss.reply("-ERR [SYS/TEMP] some deleted messages not removed")
		return errQuit
	}
	n := len(ss.msgs) - len(uids)
	ss.log.Info("pop3: logout", "mailbox", ss.mailbox, "deleted", len(uids))
	ss.reply("+OK bye (%d messages left)", n)
	return errQuit
}

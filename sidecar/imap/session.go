package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/internal/promreg"
	"github.com/lifelinemail/lifeline/sidecar"
)

// maxLoginFailures is how many failed logins a connection may make before the
// server says BYE, to slow down password guessing (the Authenticator rate
// limits per client address on top).
const maxLoginFailures = 5

// session is the backend of one IMAP connection. The library calls its
// methods from the connection's goroutine, except Idle, which runs in a
// goroutine of its own while the connection's goroutine waits for DONE; mu
// serialises them.
type session struct {
	srv  *Server
	conn *wconn
	ic   *imapserver.Conn
	log  *slog.Logger

	mu       sync.Mutex
	user     string // as given to LOGIN, for logs
	mailbox  string // the journal mailbox of INBOX; "" until logged in
	failures int
	sel      *view // the selected mailbox, nil in the authenticated state
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

// newSession is the engines' NewSession: it runs when a connection starts,
// before the greeting.
func (s *Server) newSession(ic *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	nc := ic.NetConn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	wc, ok := nc.(*wconn)
	if !ok {
		return nil, nil, fmt.Errorf("imap: connection of unexpected type %T", nc)
	}
	ss := &session{srv: s, conn: wc, ic: ic, log: wc.log}
	wc.mu.Lock()
	wc.ic = ic
	wc.mu.Unlock()
	if s.closing.Load() {
		// RFC 3501 §7.1.5: a BYE as greeting refuses the connection.
		return nil, nil, &goimap.Error{Type: goimap.StatusResponseTypeBye, Text: "server shutting down, try again later"}
	}
	return ss, nil, nil
}

// errShuttingDown refuses a command that arrives while the server closes; a
// BYE follows.
var errShuttingDown = &goimap.Error{
	Type: goimap.StatusResponseTypeNo,
	Code: goimap.ResponseCodeUnavailable,
	Text: "server shutting down, try again later",
}

// errInternal answers a command that failed for a reason the client cannot
// act on; the cause is logged.
var errInternal = &goimap.Error{
	Type: goimap.StatusResponseTypeNo,
	Code: goimap.ResponseCodeServerBug,
	Text: "internal error, command not completed",
}

// errUnavailable answers a command that failed because the journal did.
var errUnavailable = &goimap.Error{
	Type: goimap.StatusResponseTypeNo,
	Code: goimap.ResponseCodeUnavailable,
	Text: "the mail store is not available now, try again later",
}

func imapErr(typ goimap.StatusResponseType, code goimap.ResponseCode, format string, args ...any) *goimap.Error {
	return &goimap.Error{Type: typ, Code: code, Text: fmt.Sprintf(format, args...)}
}

func no(code goimap.ResponseCode, format string, args ...any) *goimap.Error {
	return imapErr(goimap.StatusResponseTypeNo, code, format, args...)
}

func bad(format string, args ...any) *goimap.Error {
	return imapErr(goimap.StatusResponseTypeBad, goimap.ResponseCodeClientBug, format, args...)
}

// run runs one backend call: it registers it for Shutdown, serialises it,
// counts it, and recovers a panic into a NO [SERVERBUG] so that a bug (or a
// message that trips one) never disconnects the client.
func (ss *session) run(command string, fn func(ctx context.Context) error) (err error) {
	if !ss.conn.begin(false) {
		return errShuttingDown
	}
	defer ss.conn.end(false)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if command != "" {
		ss.srv.metrics.commands.WithLabelValues(command).Inc()
	}
	defer func() {
		if r := recover(); r != nil {
			ss.srv.metrics.panics.Inc()
			ss.log.Error("imap: panic", "command", command, "panic", r, "stack", string(debug.Stack()))
			err = errInternal
		}
	}()
	err = fn(ss.srv.ctx)
	var ie *goimap.Error
	if err != nil && !errors.As(err, &ie) {
		ss.log.Error("imap: command failed", "command", command, "err", err)
		err = errInternal
	}
	return err
}

// Close is called by the library when the connection ends.
func (ss *session) Close() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.sel != nil {
		ss.sel.close()
		ss.sel = nil
	}
	if ss.mailbox != "" {
		ss.log.Info("imap: logout", "mailbox", ss.mailbox)
	}
	return nil
}

// Login implements LOGIN (RFC 3501 §6.2.3) and, through the library's SASL
// PLAIN server, AUTHENTICATE PLAIN (RFC 4616). The library refuses both
// without TLS on a connection that is not from loopback, and advertises
// LOGINDISABLED there (RFC 3501 §6.2.3, RFC 9051 §6.2.3).
func (ss *session) Login(username, password string) error {
	return ss.run("LOGIN", func(ctx context.Context) error {
		m := ss.srv.metrics.logins
		mailbox, err := ss.srv.opts.Auth.Login(ctx, ss.conn.clientIP, username, password)
		if err != nil {
			// Temporary failures count toward the hang-up too: the daemon reports a
			// rate-limited login as one, and a client that keeps trying while locked out
			// should not keep the connection.
			if ss.failures++; ss.failures >= maxLoginFailures {
				ss.conn.hangUp("too many failed logins")
			}
			if sidecar.TemporaryError(err) {
				m.WithLabelValues("imap", promreg.LoginError).Inc()
				ss.log.Warn("imap: login error", "user", auth.LogUser(username), "err", err)
				return no(goimap.ResponseCodeUnavailable, "cannot log in now, try again later")
			}
			m.WithLabelValues("imap", promreg.LoginFailed).Inc()
			ss.log.Info("imap: login failed", "user", auth.LogUser(username), "err", err)
			return no(goimap.ResponseCodeAuthenticationFailed, "authentication failed")
		}
		if !validMailbox(mailbox) {
			// The Sent folder is "<mailbox>/Sent": a mailbox name whose
			// domain has a "/" could name another user's Sent folder.
			m.WithLabelValues("imap", promreg.LoginError).Inc()
			ss.log.Error("imap: authenticator returned an unusable mailbox name", "user", auth.LogUser(username), "mailbox", mailbox)
			return no(goimap.ResponseCodeUnavailable, "this mailbox cannot be served, contact your administrator")
		}
		if ss.srv.opts.Serving != nil {
			if ok, text := ss.srv.opts.Serving.Serves(mailbox); !ok {
				m.WithLabelValues("imap", promreg.LoginNotServing).Inc()
				ss.log.Info("imap: login while not serving", "user", auth.LogUser(username), "mailbox", mailbox)
				if text == "" {
					text = "this mailbox is not served now, use your normal mail server"
				}
				return no(goimap.ResponseCodeUnavailable, "%s", oneLine(text))
			}
		}
		m.WithLabelValues("imap", promreg.LoginOK).Inc()
		ss.user, ss.mailbox = username, mailbox
		ss.log.Info("imap: login", "user", auth.LogUser(username), "mailbox", mailbox)
		return nil
	})
}

// validMailbox rejects names from which "<name>/Sent" could be another
// mailbox's name: a "/" after the last "@" (a domain never has one), or in a
// name without "@".
func validMailbox(name string) bool {
	if name == "" || strings.ContainsAny(name, "\x00\r\n") {
		return false
	}
	domain := name[strings.LastIndexByte(name, '@')+1:]
	return !strings.Contains(domain, "/")
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// AppendLimit implements imapserver.SessionAppendLimit (RFC 7889).
func (ss *session) AppendLimit() uint32 { return uint32(ss.srv.opts.MaxAppendSize) }

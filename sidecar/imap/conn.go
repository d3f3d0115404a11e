package imap

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

// wconn is a client connection as the server accepted it, under TLS when there
// is TLS. It counts bytes sent, enforces Options.IdleTimeout on reads, turns
// the library's whole-literal write timeouts into per-write ones, and knows
// whether a command is running, so that Shutdown can say BYE between commands.
type wconn struct {
	net.Conn
	srv      *Server
	id       uint64
	log      *slog.Logger
	loopback bool
	clientIP string

	// writeTimeout is the timeout the library last set, applied again before
	// every write: the library sets 5 minutes for a whole literal, which a
	// 50 MB FETCH to a slow client would exceed while making progress.
	writeTimeout atomic.Int64
	// readTimeout likewise for long reads: an APPEND literal (5 minutes in
	// the library) from a slow client. Short timeouts (a command line) stay
	// absolute, so that a client cannot dribble a command forever.
	readTimeout atomic.Int64

	mu      sync.Mutex
	ic      *imapserver.Conn // set by newSession
	busy    int              // backend calls running
	hangup  string           // when not "", say BYE with this text at the next read
	byeSent bool

	closeOnce sync.Once

	// wmu guards the write buffer. While a FETCH runs (cork to uncork), the
	// library's writes, which it flushes at the end of every message's
	// response, are gathered in wbuf and sent when it is full: one system
	// call for many small messages instead of two or three each. werr is the
	// first failed write of buffered bytes, which every later write returns:
	// after it the byte stream has a hole.
	wmu    sync.Mutex
	wbuf   []byte
	corked bool
	werr   error
	// deadlineSet: the connection has a write deadline (see write).
	deadlineSet bool
}

// corkSize is the write buffer of a FETCH in progress: large enough to carry
// a dozen typical messages per system call, small enough to keep per
// connection.
const corkSize = 64 << 10

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkSize); return &b }}

// cork makes writes gather in a buffer until uncork.
func (c *wconn) cork() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corked {
		return
	}
	c.corked = true
	c.wbuf = (*corkBufs.Get().(*[]byte))[:0]
}

// uncork sends what was gathered and makes writes direct again.
func (c *wconn) uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.corked {
		return nil
	}
	err := c.flushLocked()
	c.corked = false
	b := c.wbuf[:0]
	c.wbuf = nil
	corkBufs.Put(&b)
	return err
}

// flushLocked sends wbuf; c.wmu is held.
func (c *wconn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.werr = err
	}
	return err
}

func newWConn(s *Server, c net.Conn, id uint64, loopback bool, ip string) *wconn {
	return &wconn{
		Conn: c, srv: s, id: id, loopback: loopback, clientIP: ip,
		log: s.log.With("conn", id, "remote", c.RemoteAddr().String()),
	}
}

// Read is where the library waits for the next command: between commands is
// the time to say BYE when the server is closing or the session must end.
func (c *wconn) Read(p []byte) (int, error) {
	c.byeIfIdle()
	if d := c.readTimeout.Load(); d > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(time.Duration(d))); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *wconn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if !c.corked {
		return c.write(p)
	}
	if len(c.wbuf)+len(p) > cap(c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= cap(c.wbuf) {
		return c.write(p)
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// write writes p to the connection, with the write timeout renewed, or the
// deadline cleared when there is no timeout; c.wmu is held.
func (c *wconn) write(p []byte) (int, error) {
	if d := c.writeTimeout.Load(); d > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(time.Duration(d))); err != nil {
			return 0, err
		}
		c.deadlineSet = true
	} else if c.deadlineSet {
		if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
			return 0, err
		}
		c.deadlineSet = false
	}
	n, err := c.Conn.Write(p)
	c.srv.metrics.bytesSent.Add(float64(n))
	return n, err
}

// SetReadDeadline caps every read at Options.IdleTimeout (RFC 3501 §5.4); the
// library asks for 35 minutes once a client is logged in.
func (c *wconn) SetReadDeadline(t time.Time) error {
	now := time.Now()
	if limit := now.Add(c.srv.opts.IdleTimeout); t.IsZero() || t.After(limit) {
		t = limit
	}
	if d := t.Sub(now); d > slidingReadAfter {
		c.readTimeout.Store(int64(d))
	} else {
		c.readTimeout.Store(0)
	}
	return c.Conn.SetReadDeadline(t)
}

// slidingReadAfter: read timeouts longer than this are applied per read (see
// wconn.readTimeout).
const slidingReadAfter = time.Minute

// SetWriteDeadline only records the timeout: write applies it before every
// write to the connection. The library sets one four times per FETCH
// response (response, literal, end of literal, end), and each deadline set
// on the connection costs a timer update.
func (c *wconn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.writeTimeout.Store(0)
	} else {
		c.writeTimeout.Store(int64(max(time.Until(t), time.Millisecond)))
	}
	return nil
}

func (c *wconn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *wconn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.log.Debug("imap: disconnected")
		c.srv.forget(c)
	})
	return err
}

// begin registers a backend call; false when the server is closing (the
// command is then refused: a BYE follows).
func (c *wconn) begin(idle bool) bool {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if !idle {
		// IDLE waits for the client like a read: it does not hold up the
		// BYE of a shutdown.
		c.mu.Lock()
		c.busy++
		c.mu.Unlock()
	}
	s.wg.Add(1)
	return true
}

func (c *wconn) end(idle bool) {
	if !idle {
		c.mu.Lock()
		c.busy--
		c.mu.Unlock()
	}
	c.srv.wg.Done()
}

// hangUp ends the session after the current command's response.
func (c *wconn) hangUp(text string) {
	c.mu.Lock()
	c.hangup = text
	c.mu.Unlock()
}

// byeIfIdle says BYE (RFC 3501 §7.1.5) and closes the connection when the
// server is closing or the session must end, unless a backend call is running:
// that one finishes and its response is sent first; the next read comes here
// again.
func (c *wconn) byeIfIdle() {
	c.mu.Lock()
	text := c.hangup
	if text == "" && c.srv.closing.Load() {
		text = c.srv.opts.Hostname + " Lifeline IMAP server shutting down, try again later"
	}
	if text == "" || c.busy > 0 || c.byeSent {
		c.mu.Unlock()
		return
	}
	c.byeSent = true
	ic := c.ic
	c.mu.Unlock()
	// In another goroutine: Bye takes the library's write lock, which the
	// reading goroutine may hold (AUTHENTICATE reads its continuation under
	// it), and closes the connection, which ends the read that called us.
	go func() {
		if ic != nil {
			if err := ic.Bye(text); err != nil && !errors.Is(err, net.ErrClosed) {
				c.log.Debug("imap: bye", "err", err)
			}
			return
		}
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("imap: close", "err", err)
		}
	}()
}

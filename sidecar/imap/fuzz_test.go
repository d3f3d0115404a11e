package imap

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzSession feeds a client's bytes into a session over an in-memory
// connection that reports a loopback address, through the same dispatch as
// accepted connections. A panic anywhere (recovered by the backend or by the
// library, and counted) fails the fuzzer, as does a session that does not end
// when the client hangs up.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"a CAPABILITY\r\nb LOGIN alice alice-pw\r\nc LIST \"\" *\r\nd SELECT INBOX\r\ne FETCH 1:* (FLAGS UID ENVELOPE BODYSTRUCTURE BODY.PEEK[] RFC822.SIZE INTERNALDATE)\r\n" +
			"f UID SEARCH OR BODY hello SUBJECT one\r\ng STORE 1 +FLAGS (\\Seen $kw)\r\nh EXPUNGE\r\ni LOGOUT\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXB3\r\nb EXAMINE inbox\r\nc FETCH 3 (BODY.PEEK[3.1] BODY.PEEK[1.MIME] BINARY.PEEK[2] BINARY.SIZE[1] BODY[HEADER.FIELDS (Subject)]<2.5>)\r\nd CLOSE\r\n",
		"a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nc IDLE\r\nDONE\r\nd SEARCH RETURN (MIN MAX COUNT SAVE) TEXT x\r\ne FETCH $ (UID)\r\nf UID EXPUNGE 1:*\r\n",
		"a LOGIN alice alice-pw\r\nb APPEND Sent (\\Seen) {20}\r\nSubject: x\r\n\r\nbody!\r\nc SELECT Sent\r\nd UID FETCH 1:* (BODY[])\r\ne MOVE 1 INBOX\r\nf COPY 1 Trash\r\n",
		"a LOGIN alice alice-pw\r\nb STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT APPENDLIMIT)\r\nc NAMESPACE\r\nd LIST (SPECIAL-USE) \"\" * RETURN (STATUS (MESSAGES))\r\ne CREATE x\r\nf DELETE Sent\r\ng RENAME INBOX y\r\n",
		"a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nc FETCH 4294967295 (UID)\r\nd UID FETCH 0:* (BODY.PEEK[99.99.MIME])\r\ne SEARCH 1:* NOT UID 2 LARGER 10 SMALLER 99999 SINCE 1-Jan-2000 SENTBEFORE 1-Jan-2030\r\n",
		"a LOGIN alice wrong\r\nb LOGIN alice wrong\r\nc STARTTLS\r\nd ENABLE IMAP4rev2\r\n\x00\xff\r\n\n\n",
		"a LOGIN {5}\r\nalice {8}\r\nalice-pw\r\nb SELECT {5}\r\nINBOX\r\nc UID STORE 1:* FLAGS.SILENT (\\Deleted \\Recent)\r\nd UNSELECT\r\n",
	} {
		f.Add([]byte(seed))
	}
	fx := newFixture(f)
	// A short idle timeout ends sessions that the input leaves waiting (in a
	// literal, in IDLE) after the client stopped writing.
	srv := startServer(f, fx, "", func(o *Options) { o.IdleTimeout = 50 * time.Millisecond }, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		defer client.Close()
		if !srv.dispatch(loopbackConn{server}, false) {
			t.Fatal("server closed")
		}
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, client)
			close(drained)
		}()
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in)
		client.Write([]byte("\r\nZ LOGOUT\r\n"))
		select {
		case <-drained: // the server hung up: after LOGOUT, an error, or its idle timeout
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			srv.mu.Lock()
			n := len(srv.conns)
			srv.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("connection not released after the session ended")
			}
			time.Sleep(time.Millisecond)
		}
		if n := counterValue(srv.panics); n != 0 {
			t.Fatalf("%v panics", n)
		}
	})
}

type loopbackConn struct{ net.Conn }

func (loopbackConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestFuzzSeedsRun checks that the fuzzer's harness runs whole sessions: the
// seeds' commands reach the backend.
func TestFuzzSeedsRun(t *testing.T) {
	fx := newFixture(t)
	srv := startServer(t, fx, "", func(o *Options) { o.IdleTimeout = 200 * time.Millisecond }, nil)
	server, client := net.Pipe()
	defer client.Close()
	srv.dispatch(loopbackConn{server}, false)
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, client); close(drained) }()
	client.Write([]byte("a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nc FETCH 1:* (BODY.PEEK[])\r\nd SEARCH BODY x\r\ne LOGOUT\r\n"))
	<-drained
	for _, c := range []string{"LOGIN", "SELECT", "FETCH", "SEARCH"} {
		if n := counterValue(srv.metrics.commands.WithLabelValues(c)); n != 1 {
			t.Errorf("%s ran %v times", c, n)
		}
	}
}

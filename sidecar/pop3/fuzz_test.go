package pop3

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzSession feeds a client's bytes into a session over an in-memory
// connection that reports a loopback address. A panic anywhere is recovered by
// the server and counted; the fuzzer fails when the count moves.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"CAPA\r\nUSER alice\r\nPASS alice-pw\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n",
		"AUTH PLAIN AGFsaWNlAGFsaWNlLXB3\r\nLIST 3\r\nUIDL 2\r\nTOP 3 5\r\nNOOP\r\nQUIT\r\n",
		"AUTH PLAIN\r\nAGJvYgBib2IgcHcgd2l0aCBzcGFjZXM=\r\nRETR 2\r\nDELE 9\r\nQUIT\r\n",
		"AUTH\r\nAUTH PLAIN\r\n*\r\nSTLS\r\nUSER\r\nPASS\r\nAPOP a b\r\n\x00\xff\r\n\n\n",
		"USER alice\nPASS alice-pw\nRETR 4294967295\nTOP 1 -1\nLIST 0\nQUIT\n",
	} {
		f.Add([]byte(seed))
	}
	fx := newFixture(f)
	srv := startServer(f, fx, "stls", nil, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		srv.wg.Add(1)
		go srv.handle(loopbackConn{server})
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in)
		client.Write([]byte("\r\nQUIT\r\n"))
		client.Close()
		if n := counterValue(srv.panics); n != 0 {
			t.Fatalf("%v panics", n)
		}
	})
}

type loopbackConn struct{ net.Conn }

func (loopbackConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

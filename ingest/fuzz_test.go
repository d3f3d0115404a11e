package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pipeListener hands out one connection, then reports closed.
type pipeListener struct {
	mu     sync.Mutex
	conn   net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// FuzzIngestSession feeds arbitrary bytes to an LMTP server over net.Pipe:
// it must neither panic nor hang, and the journal must stay consistent
// (Verify finds nothing). The first byte picks the listener's mode.
func FuzzIngestSession(f *testing.F) {
	for _, s := range []string{
		"LHLO mta\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n",
		"LHLO mta\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<Alice@example.com>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n..dot\r\n.\r\nRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@example.com>\r\nDATA\r\npartial",
		"HELO x\r\nEHLO x\r\nMAIL FROM:<a@b> SIZE=99999999\r\nDATA\r\nBDAT 5 LAST\r\nhello\r\nNOOP\r\nVRFY x\r\n",
		"LHLO mta\r\nMAIL FROM:<a@b>\r\nRCPT TO:<\"quoted local\"@example.com>\r\nRCPT TO:<@route:a@example.com>\r\nDATA\r\n\r\n.\r\n",
		"LHLO mta\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.com>\r\nBDAT 10\r\n0123456789BDAT 0 LAST\r\n",
	} {
		f.Add(byte(0), []byte(s))
		f.Add(byte(1), []byte(s))
	}
	j := openJournal(f)
	res := testResolver()
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		srv, err := New(Options{
			Mode: Mode(mode % 2), Journal: j, Resolver: res, Registerer: prometheus.NewRegistry(),
			Logger: slog.New(slog.DiscardHandler), MaxMessageSize: 1 << 16, MaxRecipients: 100,
			ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, SpoolThreshold: 512, SpoolDir: t.TempDir(),
		})
		if err != nil {
			t.Fatal(err)
		}
		// A hang becomes a crash with every goroutine's stack, which the
		// fuzzer reports with its input.
		wd := time.AfterFunc(30*time.Second, func() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic("FuzzIngestSession hung:\n" + string(buf[:n]))
		})
		defer wd.Stop()
		client, server := net.Pipe()
		ln := &pipeListener{conn: server, closed: make(chan struct{})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		drained := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, client); close(drained) }()
		_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = client.Write(data) // the server may close first (500 too long line)
		_ = client.Close()
		<-drained
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
		probs, err := j.Verify(context.Background())
		if err != nil || len(probs) > 0 {
			t.Fatalf("journal inconsistent: %v %v", probs, err)
		}
	})
}

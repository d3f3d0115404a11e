package ingest

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// BenchmarkIngest sends 4 KiB messages over one LMTP connection: each
// operation is one transaction, every append fsync'd.
func BenchmarkIngest(b *testing.B) {
	for _, bc := range []struct {
		mode  Mode
		rcpts int
	}{{Journal, 1}, {Journal, 5}, {Custody, 1}, {Custody, 5}} {
		b.Run(fmt.Sprintf("%s/rcpts=%d", bc.mode, bc.rcpts), func(b *testing.B) {
			ts := start(b, Options{Mode: bc.mode})
			nc, err := net.Dial("tcp", ts.addr)
			if err != nil {
				b.Fatal(err)
			}
			c := smtp.NewClientLMTP(nc)
			defer c.Close() //nolint:errcheck // bench
			if err := c.Hello("bench"); err != nil {
				b.Fatal(err)
			}
			body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 64)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := c.Mail("s@remote.test", nil); err != nil {
					b.Fatal(err)
				}
				for r := range bc.rcpts {
					if err := c.Rcpt(fmt.Sprintf("user%d@example.com", r), nil); err != nil {
						b.Fatal(err)
					}
				}
				w, err := c.Data()
				if err != nil {
					b.Fatal(err)
				}
				fmt.Fprintf(w, "Message-ID: <%d@bench>\r\nSubject: bench\r\n\r\n", i)
				if _, err := io.WriteString(w, body); err != nil {
					b.Fatal(err)
				}
				if _, err := w.CloseWithLMTPResponse(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package replay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkReplay measures the scheduler, journal and LMTP client against
// the in-process LMTP server: b.N custody messages of 4 KiB, one recipient
// each. The comparison with Postfix against a real Dovecot is the e2e
// benchmark's.
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	j := openJournal(b, dir)
	defer func() { _ = j.Close() }()
	f := newFakeLMTP(b, true)
	pad := strings.Repeat("x", 76) + "\r\n"
	body := strings.Repeat(pad, 4096/len(pad))
	ctx := context.Background()
	for i := range b.N {
		msg := fmt.Sprintf("Message-ID: <bench-%d@example.org>\r\nSubject: bench\r\n\r\n%s", i, body)
		env := journal.Envelope{MailFrom: "s@example.org", Received: time.Now(),
			Recipients: []journal.Recipient{custody(fmt.Sprintf("u%d@example.com", i%50))}}
		if _, err := j.Append(ctx, env, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	r, err := New(Options{Journal: j, Servers: lmtpServer(f), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- r.Serve(ctx) }()
	for {
		p := r.Progress()[0]
		if p.Delivered == int64(b.N) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if err := r.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

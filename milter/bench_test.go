package milter

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
)

// BenchmarkMessage measures what one 4 KiB message costs Lifeline through the
// milter, the way Postfix drives it with smtp-source: 20 concurrent SMTP
// sessions of one message each, every one a new milter connection, against
// a real Badger journal; and beside it the journal alone appending the same
// messages at the same concurrency (the baseline: what is left is the milter
// protocol, the connection and the rebuild). CPU is the whole process's
// (getrusage), so the tcp and unix rows include go-milter's client as well.
//
//	go test -run '^$' -bench '^BenchmarkMessage$' -benchtime 5000x ./milter
func BenchmarkMessage(b *testing.B) {
	const sessions = 20
	body := strings.Repeat(strings.Repeat("X", 78)+"\r\n", 4096/80)
	message := func(i int64) []byte {
		return fmt.Appendf(nil, "From: bench@example.net\r\nTo: bench001@example.test\r\nSubject: %d\r\nMessage-ID: <%d@bench.lifeline.test>\r\n\r\n%s", i, i, body)
	}
	env := envelope{from: "bench@example.net", rcpts: []rcpt{{"bench001@example.test", "lmtp", "127.0.0.1"}}, queueID: "4ZYx1k2Q3zz9"}
	cpu := map[string]float64{}
	run := func(b *testing.B, name string, one func(i int64)) {
		var next atomic.Int64
		var wg sync.WaitGroup
		u0 := rusageCPU(b)
		start := time.Now()
		for range sessions {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					one(i)
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		perMsg := float64(rusageCPU(b)-u0) / float64(time.Microsecond) / float64(b.N)
		b.ReportMetric(float64(b.N)/took.Seconds(), "msgs/s")
		b.ReportMetric(perMsg, "cpu-µs/msg")
		cpu[name] = perMsg
	}
	b.Run("journal", func(b *testing.B) {
		j := newTestJournal(b)
		run(b, "journal", func(i int64) {
			e := journalEnvelope(env)
			if _, err := j.Append(b.Context(), e, bytes.NewReader(message(i))); err != nil {
				b.Error(err)
			}
		})
	})
	for _, network := range []string{"tcp", "unix"} {
		b.Run(network, func(b *testing.B) {
			j := newTestJournal(b)
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(b.TempDir(), "milter.sock")
			}
			ts := startServerOn(b, network, addr, Options{Journal: j, Logger: discardLogger()})
			run(b, network, func(i int64) {
				m := dialOn(b, network, ts.addr)
				m.send(env, message(i), gomilter.ActionAccept)
				if err := m.sess.Close(); err != nil {
					b.Error(err)
				}
			})
		})
	}
	if cpu["journal"] > 0 {
		b.Logf("CPU per message: journal alone %.0f µs, through the milter on tcp %.0f µs (%.2fx), on unix %.0f µs (%.2fx)",
			cpu["journal"], cpu["tcp"], cpu["tcp"]/cpu["journal"], cpu["unix"], cpu["unix"]/cpu["journal"])
	}
}

// journalEnvelope is what the milter makes of env.
func journalEnvelope(env envelope) journal.Envelope {
	e := journal.Envelope{MailFrom: env.from, QueueID: env.queueID, AuthUser: env.auth, Source: "milter"}
	for _, r := range env.rcpts {
		e.Recipients = append(e.Recipients, journal.Recipient{Address: r.addr, Mailer: r.mailer, Host: r.host, State: journal.StateMTA})
	}
	return e
}

// discardLogger logs at Lifeline's default level (info: a line per message)
// into nothing.
func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// rusageCPU is the process's user and system CPU time so far.
func rusageCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package badgerjournal

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// BenchmarkAppend measures durable appends of 4 KiB messages at several
// concurrencies, each beside the disk's own rate of 4 KiB write+fsync measured
// in the same directory just before (x_fsync is the ratio: above 1 means
// appends share syncs). Run with: go test -run XXX -bench Append ./journal/badgerjournal/
func BenchmarkAppend(b *testing.B) {
	b.Run("raw-fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := f.Close(); err != nil {
				b.Error(err)
			}
		}()
		buf := make([]byte, 4096)
		start := time.Now()
		for b.Loop() {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "fsyncs/s")
	})
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			dir := b.TempDir()
			raw := rawFsyncRate(b, dir)
			j, err := Open(filepath.Join(dir, "journal"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := j.Close(); err != nil {
					b.Error(err)
				}
			}()
			body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?\r\n", 70)
			var next atomic.Int64
			var failed atomic.Value
			c0, g0 := j.commits.Load(), j.grouped.Load()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range conc {
				wg.Go(func() {
					buf := make([]byte, 0, 4200)
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						// 4 KiB, unique per append so that none is a duplicate.
						buf = fmt.Appendf(buf[:0], "From: bench@example.org\r\nSubject: %d/%d\r\nMessage-ID: <%d.%d@bench>\r\n\r\n", w, i, w, i)
						buf = append(buf, body[:4096-len(buf)]...)
						if _, err := j.Append(b.Context(), testEnv("rcpt@example.com"), bytes.NewReader(buf)); err != nil {
							failed.Store(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err, ok := failed.Load().(error); ok {
				b.Fatal(err)
			}
			rate := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "msgs/s")
			b.ReportMetric(raw, "fsyncs/s")
			b.ReportMetric(rate/raw, "x_fsync")
			if c := j.commits.Load() - c0; c > 0 {
				b.ReportMetric(float64(j.grouped.Load()-g0)/float64(c), "ops/commit")
			}
		})
	}
}

// rawFsyncRate measures 4 KiB write+fsync per second in dir, for half a second.
func rawFsyncRate(b *testing.B, dir string) float64 {
	b.Helper()
	f, err := os.Create(filepath.Join(dir, "raw"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(f.Name()); err != nil {
		b.Fatal(err)
	}
	return rate
}

// BenchmarkOpen measures Open and a full read of 4 KiB text messages, one
// after the other, from a journal of 10,000 of them: what an IMAP FETCH of a
// mailbox costs in the journal. It runs twice in one run: s2, messages stored
// as the journal stores them (S2, chunk.go), and zstd, the same messages
// stored as zstd frames (as format 2 did), each reporting the CPU time per
// message besides the wall time (cpu-ns/op: what other work on the machine
// disturbs least); the ratio is logged. Run with:
// go test -run XXX -bench Open ./journal/badgerjournal/
func BenchmarkOpen(b *testing.B) {
	cpu := map[string]float64{}
	for _, codec := range []string{"zstd", "s2"} {
		b.Run(codec, func(b *testing.B) {
			j, ids := fillOpenBench(b, codec)
			b.ResetTimer()
			var ru0, ru1 syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				rc, err := j.Open(b.Context(), ids[i%len(ids)])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				if err := rc.Close(); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
				b.Fatal(err)
			}
			used := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			cpu[codec] = float64(used) / float64(b.N)
			b.ReportMetric(cpu[codec], "cpu-ns/op")
		})
	}
	if cpu["zstd"] > 0 && cpu["s2"] > 0 {
		b.Logf("CPU per message: s2 %.1f µs, zstd %.1f µs: ratio zstd/s2 %.2f", cpu["s2"]/1e3, cpu["zstd"]/1e3, cpu["zstd"]/cpu["s2"])
	}
}

// fillOpenBench journals 10,000 text messages of 4 KiB, their small chunks
// stored as S2 (codec "s2") or as zstd frames ("zstd").
func fillOpenBench(b *testing.B, codec string) (*Journal, []journal.ID) {
	const n = 10000
	j, err := Open(filepath.Join(b.TempDir(), "journal"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := j.Close(); err != nil {
			b.Error(err)
		}
	})
	if codec == "zstd" {
		j.smallChunk = 0
	}
	words := strings.Fields("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will")
	ids := make([]journal.ID, n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			var buf bytes.Buffer
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				buf.Reset()
				fmt.Fprintf(&buf, "From: bench@example.org\r\nSubject: %d\r\nMessage-ID: <%d@bench>\r\n\r\n", i, i)
				for k := 0; buf.Len() < 4096; k++ {
					buf.WriteString(words[(i*31+k*k*7)%len(words)])
					buf.WriteString(map[bool]string{true: "\r\n", false: " "}[k%11 == 10])
				}
				res, err := j.Append(b.Context(), testEnv("rcpt@example.com"), &buf)
				if err != nil {
					failed.Store(err)
					return
				}
				ids[i] = res.ID
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return j, ids
}

// BenchmarkReadItems measures what an IMAP FETCH of a whole mailbox asks of
// the journal: every message of a mailbox of 10,000 4 KiB messages read whole,
// in UID order, through ReadItems in batches of 32 ("batch": one snapshot and
// one iterator per batch, which steps from body to body) beside the same
// calls with one item each ("each": one snapshot and one lookup per message),
// and logs the CPU ratio each/batch.
//
//	go test -run XXX -bench ReadItems -benchtime 20x ./journal/badgerjournal/
func BenchmarkReadItems(b *testing.B) {
	j, _ := fillOpenBench(b, "s2")
	var items []journal.MailboxItem
	if err := j.List(b.Context(), "rcpt@example.com", 0, func(it journal.MailboxItem) error {
		items = append(items, it)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	cpu := map[string]float64{}
	for _, batch := range []int{1, 32} {
		name := map[int]string{1: "each", 32: "batch"}[batch]
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 8192)
			var ru0, ru1 syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				read := 0
				for k := 0; k < len(items); k += batch {
					err := j.ReadItems(b.Context(), items[k:min(k+batch, len(items))], func(int) []byte { return buf }, func(_ int, msg []byte) {
						buf = msg
						read++
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				if read != len(items) {
					b.Fatalf("read %d of %d messages", read, len(items))
				}
			}
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
				b.Fatal(err)
			}
			used := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			cpu[name] = float64(used) / float64(b.N*len(items))
			b.ReportMetric(cpu[name], "cpu-ns/msg")
		})
	}
	if cpu["each"] > 0 && cpu["batch"] > 0 {
		b.Logf("CPU per message: batch %.2f µs, each %.2f µs: ratio each/batch %.2f", cpu["batch"]/1e3, cpu["each"]/1e3, cpu["each"]/cpu["batch"])
	}
}

// BenchmarkRestart measures what a restart of `lifeline serve` costs the
// journal with LIFELINE_BENCH_MESSAGES journaled messages (default
// 1,000,000; 2 KiB each, 1,000 mailboxes): Open, then the Stats and the
// retention Sweep that serve runs at start. The fill is not timed; its rate
// is reported as fill-msgs/s. Run with:
// go test -run XXX -bench Restart -benchtime 3x -timeout 60m ./journal/badgerjournal/
func BenchmarkRestart(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("LIFELINE_BENCH_MESSAGES"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil {
			b.Fatalf("LIFELINE_BENCH_MESSAGES: %v", err)
		}
	}
	dir := filepath.Join(b.TempDir(), "journal")
	j, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	received := time.Now().Add(-24 * time.Hour)
	for range 64 {
		wg.Go(func() {
			var buf bytes.Buffer
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				buf.Reset()
				fmt.Fprintf(&buf, "From: bench@example.org\r\nTo: u%d@example.com\r\nSubject: message %d\r\nMessage-ID: <%d@bench>\r\n\r\n", i%1000, i, i)
				for buf.Len() < 2048 {
					fmt.Fprintf(&buf, "line %d of message %d, to fill it up\r\n", buf.Len(), i)
				}
				rcpt := fmt.Sprintf("u%d@example.com", i%1000)
				env := journal.Envelope{MailFrom: "bench@example.org", Received: received,
					Recipients: []journal.Recipient{{Address: rcpt, Mailboxes: []string{rcpt}, State: journal.StateMTA}}}
				if _, err := j.Append(b.Context(), env, &buf); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	fillRate := float64(n) / time.Since(start).Seconds()
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
	var open, ready time.Duration
	for b.Loop() {
		t0 := time.Now()
		j, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		open += time.Since(t0)
		st, err := j.Stats(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if st.Messages != int64(n) {
			b.Fatalf("%d messages after reopening, want %d", st.Messages, n)
		}
		if _, err := j.Sweep(b.Context(), time.Now().Add(-90*24*time.Hour)); err != nil {
			b.Fatal(err)
		}
		ready += time.Since(t0)
		b.StopTimer()
		if err := j.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(fillRate, "fill-msgs/s")
	b.ReportMetric(open.Seconds()/float64(b.N), "open-s")
	b.ReportMetric(ready.Seconds()/float64(b.N), "open+stats+sweep-s")
}

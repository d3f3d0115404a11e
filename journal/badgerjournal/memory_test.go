//go:build linux

package badgerjournal

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/journaltest"
)

// memBudget is what journaling one 50 MB message may add to the milter's
// resident memory.
const memBudget = 64 << 20

// TestAppendMemory journals a 50 MB message and checks how much resident memory
// that adds. Badger writes the compressed body into its mmap'ed value log; those
// pages are clean page cache once synced and the kernel reclaims them under
// pressure, but they count in RSS, so the budget applies to all of it.
func TestAppendMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB append skipped in -short mode")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use")
	}
	m, r := measureAppendRead(t, 50<<20)
	for _, x := range []struct {
		what string
		m    memUse
	}{{"append", m}, {"read", r}} {
		t.Logf("50 MB %s: peak RSS +%.1f MB (anonymous +%.1f MB, file-backed +%.1f MB), Go heap peak %.1f MB",
			x.what, mb(x.m.hwm), mb(x.m.anon), mb(x.m.file), mb(x.m.heap))
		if x.m.hwm > memBudget {
			t.Errorf("%s: peak RSS grew by %.1f MB, budget %d MB", x.what, mb(x.m.hwm), memBudget>>20)
		}
	}
}

// BenchmarkAppend50MB reports the memory a 50 MB append adds (MB above the idle
// journal) beside its time.
func BenchmarkAppend50MB(b *testing.B) {
	var m memUse
	for b.Loop() {
		m = measureAppend(b, 50<<20)
	}
	b.ReportMetric(mb(m.hwm), "peakRSS-MB")
	b.ReportMetric(mb(m.anon), "anonRSS-MB")
	b.ReportMetric(mb(m.file), "fileRSS-MB")
	b.ReportMetric(mb(m.heap), "heap-MB")
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// memUse is what an append added, in bytes, over the idle journal.
type memUse struct {
	hwm        int64 // VmHWM after the append, over VmRSS before
	anon, file int64 // sampled peaks of RssAnon and RssFile over their idle values
	heap       int64 // sampled peak of Go heap objects (live and not yet swept)
}

func measureAppend(tb testing.TB, size int64) memUse {
	up, _ := measureAppendRead(tb, size)
	return up
}

// measureAppendRead appends a generated message of size bytes to a fresh
// journal, then reads it back, and returns what each step added.
func measureAppendRead(tb testing.TB, size int64) (appending, reading memUse) {
	tb.Helper()
	j, err := Open(filepath.Join(tb.TempDir(), "journal"), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			tb.Error(err)
		}
	}()
	// Warm up: the first append allocates the pools and the encoders.
	if _, err := j.Append(tb.Context(), testEnv("warm@example.com"), bytes.NewReader([]byte("Subject: warm\r\n\r\nx\r\n"))); err != nil {
		tb.Fatal(err)
	}
	var id journal.ID
	appending = measure(tb, func() {
		res, err := j.Append(tb.Context(), testEnv("big@example.com"), journaltest.Generated(size, 50))
		if err != nil {
			tb.Fatal(err)
		}
		id = res.ID
	})
	reading = measure(tb, func() {
		rc, err := j.Open(tb.Context(), id)
		if err != nil {
			tb.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		if err != nil || n != size {
			tb.Fatalf("read %d bytes: %v", n, err)
		}
		if err := rc.Close(); err != nil {
			tb.Fatal(err)
		}
	})
	return appending, reading
}

// measure runs fn and returns the memory it added over the state before.
func measure(tb testing.TB, fn func()) memUse {
	tb.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	idle, err := procStatus()
	if err != nil {
		tb.Skipf("cannot read the process's memory use: %v", err)
	}
	// Reset VmHWM to the current RSS (proc(5), clear_refs).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Skipf("cannot reset the peak RSS: %v", err)
	}
	var peak memUse
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			s, err := procStatus()
			if err != nil {
				return // the final VmHWM still tells the peak
			}
			peak.anon = max(peak.anon, s["RssAnon"]-idle["RssAnon"])
			peak.file = max(peak.file, s["RssFile"]-idle["RssFile"])
			metrics.Read(sample)
			peak.heap = max(peak.heap, int64(sample[0].Value.Uint64()))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(stop)
	<-done
	after, err := procStatus()
	if err != nil {
		tb.Fatal(err)
	}
	peak.hwm = after["VmHWM"] - idle["VmRSS"]
	return peak
}

// procStatus reads the memory lines of /proc/self/status, in bytes.
func procStatus() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(rest, " kB") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(rest, " kB")), 10, 64)
		if err == nil {
			out[name] = n << 10
		}
	}
	return out, sc.Err()
}

package webmail

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	benchOnce sync.Once
	benchEnv  *env
	benchCk   *http.Cookie
)

// benchMailbox is a 10,000-message mailbox, built once per process: the
// journal is in a temporary directory removed at exit.
func benchMailbox(b *testing.B) (*env, *http.Cookie) {
	benchOnce.Do(func() {
		f := newFixture(noCleanupTB{b})
		base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		// Concurrent appends share the journal's fsyncs. UIDs follow
		// append order, so the list is not in Date order; it need not be.
		var wg sync.WaitGroup
		next := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range next {
					body := fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: alice@example.com\r\nSubject: message number %05d about topic %d\r\n"+
						"Date: %s\r\nMessage-ID: <%d@bench>\r\n\r\nhello %d\r\n", i%97, i%97, i, i%13, base.Add(time.Duration(i)*time.Minute).Format(time.RFC1123Z), i, i)
					f.add(b, base.Add(time.Duration(i)*time.Minute), body, "alice@example.com")
				}
			})
		}
		for i := range 10000 {
			next <- i
		}
		close(next)
		wg.Wait()
		benchEnv = start(noCleanupTB{b}, f, false, nil)
		c := benchEnv.client(b)
		c.login("alice@example.com", "alice-pw")
		u := benchEnv.ts.URL
		req, _ := http.NewRequest("GET", u, nil)
		for _, ck := range c.http.Jar.Cookies(req.URL) {
			if ck.Name == "lifeline" {
				benchCk = ck
			}
		}
	})
	return benchEnv, benchCk
}

// noCleanupTB keeps the shared benchmark mailbox alive across benchmarks.
type noCleanupTB struct{ testing.TB }

func (noCleanupTB) Cleanup(func()) {}
func (noCleanupTB) TempDir() string {
	d, err := os.MkdirTemp("", "webmail-bench-")
	if err != nil {
		panic(err)
	}
	benchDirs = append(benchDirs, d)
	return d
}

var benchDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchEnv != nil {
		benchEnv.ts.Close()
		benchEnv.j.Close()
	}
	for _, d := range benchDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func benchPage(b *testing.B, path, want string) {
	e, ck := benchMailbox(b)
	h := e.srv.Handler()
	var times []time.Duration
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:5555"
		req.AddCookie(ck)
		w := httptest.NewRecorder()
		t0 := time.Now()
		h.ServeHTTP(w, req)
		times = append(times, time.Since(t0))
		if w.Code != 200 || !strings.Contains(w.Body.String(), want) {
			b.Fatalf("%s: %d", path, w.Code)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}

// BenchmarkListPage renders page 2 (50 messages) of the 10,000.
func BenchmarkListPage(b *testing.B) { benchPage(b, "/mail/inbox?page=2", "10000 messages") }

// BenchmarkSearchPage searches all 10,000 by sender and subject (the header
// summary; no message bodies are read).
func BenchmarkSearchPage(b *testing.B) {
	benchPage(b, "/mail/inbox?from=sender+5&subject=topic+3", `class="count"`)
}

// BenchmarkSearchPageCold is the first search after a restart: the summary
// cache is empty, so every message's stored structure is read.
func BenchmarkSearchPageCold(b *testing.B) {
	e, _ := benchMailbox(b)
	for b.Loop() {
		b.StopTimer()
		srv, err := New(Options{Store: e.store, Journal: e.j, Auth: newAuth()})
		if err != nil {
			b.Fatal(err)
		}
		id, sess := srv.sessions.create("alice@example.com", "alice@example.com")
		_ = sess
		req := httptest.NewRequest("GET", "/mail/inbox?from=sender+5&subject=topic+3", nil)
		req.RemoteAddr = "127.0.0.1:5555"
		req.AddCookie(&http.Cookie{Name: "lifeline", Value: id})
		w := httptest.NewRecorder()
		b.StartTimer()
		srv.Handler().ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkSearchTextPage searches the text of all 10,000 messages: every
// body is read and decoded.
func BenchmarkSearchTextPage(b *testing.B) {
	benchPage(b, "/mail/inbox?text=hello+9999", "message number 09999")
}

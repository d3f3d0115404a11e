package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a Clock for tests.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// Cheap hashes for file tests: SHA-crypt at 1000 rounds.
func cheapHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := hashSHACrypt(sha512Crypt, []byte(pw), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return "{SHA512-CRYPT}" + h
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line       string
		ok         bool
		err        bool
		user, hash string
	}{
		{line: "", ok: false},
		{line: "   \t", ok: false},
		{line: "# comment:{PLAIN}x", ok: false},
		{line: "  # indented comment", ok: false},
		{line: "alice:{PLAIN}pw", ok: true, user: "alice", hash: "{PLAIN}pw"},
		{line: "alice@example.org:{PLAIN}pw:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G", ok: true, user: "alice@example.org", hash: "{PLAIN}pw"},
		{line: "bob:$6$salt$xyz:::", ok: true, user: "bob", hash: "$6$salt$xyz"},
		{line: "carol:{PLAIN}pw\r", ok: true, user: "carol", hash: "{PLAIN}pw"},
		{line: "dave:", ok: true, user: "dave", hash: ""},
		{line: "nocolon", err: true},
		{line: ":{PLAIN}pw", err: true},
		{line: "with space:{PLAIN}pw", err: true},
	} {
		e, ok, err := parseLine(c.line)
		if (err != nil) != c.err || ok != c.ok || e.user != c.user || e.hash != c.hash {
			t.Errorf("parseLine(%q) = %+v, %v, %v", c.line, e, ok, err)
		}
	}
}

func TestFileVerify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	log, logs := testLogger()
	writeFile(t, path, strings.Join([]string{
		"# Lifeline users",
		"",
		"Alice@Example.org:" + cheapHash(t, "alice pw") + ":1000:1000::/home/alice::",
		"bob:{SHA256-CRYPT}$5$NaCl1234$E0/9u8GBianuQ54rBOBpElhIBSjX3B7fY176HPqe3PB",
		"carol:{PLAIN}carol pw",
		"dave:*",
		"erin:!" + cheapHash(t, "erin pw"),
		"frank:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
	}, "\n")+"\n")
	f, err := NewFile(path, FileOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if f.Users() != 6 {
		t.Errorf("Users() = %d, want 6", f.Users())
	}
	for _, c := range []struct {
		user, pw, want string
		ok             bool
	}{
		{"alice@example.org", "alice pw", "alice@example.org", true},
		{"ALICE@EXAMPLE.ORG", "alice pw", "alice@example.org", true},
		{"alice@example.org", "Alice pw", "", false},
		{"bob", "open sesame", "bob", true},
		{"carol", "carol pw", "carol", true},
		{"carol", "", "", false},
		{"dave", "", "", false},
		{"dave", "*", "", false},
		{"erin", "erin pw", "", false},
		{"frank", "U*U", "frank", true},
		{"nobody", "alice pw", "", false},
		{"", "", "", false},
	} {
		got, ok := f.Verify(c.user, c.pw)
		if got != c.want || ok != c.ok {
			t.Errorf("Verify(%q, %q) = %q, %v; want %q, %v", c.user, c.pw, got, ok, c.want, c.ok)
		}
	}
	if !strings.Contains(logs.String(), "cleartext password") || !strings.Contains(logs.String(), "user=carol") {
		t.Errorf("no warning for carol's {PLAIN} password in the log:\n%s", logs)
	}
	if strings.Contains(logs.String(), "carol pw") {
		t.Errorf("log shows a password:\n%s", logs)
	}
}

func TestFileLoadErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	const secret = "c2VjcmV0aGFzaHZhbHVl"
	writeFile(t, path, strings.Join([]string{
		"alice:{PLAIN}ok",
		"bob:{SSHA}" + secret,             // 2: unknown scheme
		"carol:$1$salt$" + secret,         // 3: crypt kind not supported
		"nocolon",                         // 4
		"Alice:{PLAIN}again",              // 5: duplicate (case-insensitive)
		"dave:",                           // 6: empty password
		"erin:{SHA512-CRYPT}$6$" + secret, // 7: malformed
	}, "\n"))
	_, err := NewFile(path, FileOptions{})
	if err == nil {
		t.Fatal("NewFile succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		path + ":2: user \"bob\": unknown password scheme \"SSHA\"",
		path + ":3:", path + ":4:", path + ":5:", "already on line 1", path + ":6:", path + ":7:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, secret) {
		t.Errorf("error shows a hash:\n%s", msg)
	}
	if !errors.Is(err, ErrUnknownScheme) || !errors.Is(err, ErrLine) {
		t.Errorf("errors.Is(ErrUnknownScheme, ErrLine) fail for %v", err)
	}
	if _, err := NewFile(filepath.Join(t.TempDir(), "missing"), FileOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestFileReload changes the file under a running File: the new password must work within
// the poll interval, and a broken rewrite must leave the old users in place.
func TestFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:"+cheapHash(t, "old")+"\n")
	clock := newFakeClock()
	log, logs := testLogger()
	f, err := NewFile(path, FileOptions{Logger: log, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Verify("alice", "old"); !ok {
		t.Fatal("old password refused")
	}

	// Same size on purpose: only mtime/inode tell the change.
	writeFile(t, path, "alice:"+cheapHash(t, "new")+"\n")
	if _, ok := f.Verify("alice", "new"); ok {
		t.Error("the file was checked again before the interval passed")
	}
	clock.Advance(DefaultCheckInterval)
	if _, ok := f.Verify("alice", "new"); !ok {
		t.Fatal("new password refused after the interval")
	}
	if _, ok := f.Verify("alice", "old"); ok {
		t.Error("old password still accepted")
	}

	// A broken file keeps the table; the error is logged once.
	writeFile(t, path, "alice:{BOGUS}x\nbob:{PLAIN}b\n")
	for range 3 {
		clock.Advance(DefaultCheckInterval)
		if _, ok := f.Verify("alice", "new"); !ok {
			t.Fatal("broken rewrite dropped the loaded users")
		}
	}
	if n := strings.Count(logs.String(), "reload failed"); n != 1 {
		t.Errorf("reload failure logged %d times, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), ":1: user") {
		t.Errorf("log does not name the bad line:\n%s", logs)
	}

	// Replaced by rename (a new inode), as editors and config management do.
	tmp := path + ".tmp"
	writeFile(t, tmp, "alice:"+cheapHash(t, "third")+"\n")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultCheckInterval)
	if _, ok := f.Verify("alice", "third"); !ok {
		t.Error("file replaced by rename not reloaded")
	}

	// Removed: keep the users; back again: reload.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultCheckInterval)
	if _, ok := f.Verify("alice", "third"); !ok {
		t.Error("removed file dropped the users")
	}
	writeFile(t, path, "alice:"+cheapHash(t, "fourth")+"\n")
	clock.Advance(DefaultCheckInterval)
	if _, ok := f.Verify("alice", "fourth"); !ok {
		t.Error("file written again not reloaded")
	}

	// Reload forces a read.
	writeFile(t, path, "alice:"+cheapHash(t, "fifth")+"\n")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Verify("alice", "fifth"); !ok {
		t.Error("Reload did not take the new file")
	}
}

// TestFileReloadRealClock is the same with the real clock and a poll deadline, as a server
// sees it.
func TestFileReloadRealClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:"+cheapHash(t, "old")+"\n")
	f, err := NewFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "alice:"+cheapHash(t, "new")+"\nbob:"+cheapHash(t, "bob")+"\n")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := f.Verify("bob", "bob"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new file not picked up within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, ok := f.Verify("alice", "new"); !ok {
		t.Error("alice's new password refused")
	}
}

func TestFileConcurrentVerifyAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "alice:{PLAIN}a\n")
	clock := newFakeClock()
	f, err := NewFile(path, FileOptions{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				clock.Advance(100 * time.Millisecond)
				if i == 0 && j%20 == 0 {
					// By rename, as the package documents.
					writeFile(t, path+".new", "alice:{PLAIN}a\n"+strings.Repeat("#\n", j))
					if err := os.Rename(path+".new", path); err != nil {
						t.Error(err)
						return
					}
				}
				if _, ok := f.Verify("alice", "a"); !ok {
					t.Error("alice refused during reloads")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestUnknownUserCostsTheSame checks the defence against user enumeration by timing: the
// dummy an unknown user is checked against has the cost parameters most users have, and
// checking it takes about as long as checking a known user.
func TestUnknownUserCostsTheSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	var lines []string
	for _, u := range []string{"a", "b", "c"} {
		h, err := hashBcrypt([]byte(u), 6)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":{BLF-CRYPT}"+h)
	}
	lines = append(lines, "d:"+cheapHash(t, "d"), "e:{PLAIN}e", "off:*")
	writeFile(t, path, strings.Join(lines, "\n"))
	f, err := NewFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.table.Load().dummy.costKey(); got != "BLF-CRYPT/6" {
		t.Fatalf("dummy cost = %s, want BLF-CRYPT/6 (the majority)", got)
	}
	measure := func(user string) time.Duration {
		best := time.Duration(1 << 62)
		for range 5 {
			start := time.Now()
			f.Verify(user, "wrong")
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("a"), measure("nobody")
	t.Logf("known user %v, unknown user %v", known, unknown)
	if unknown < known/2 || unknown > known*2 {
		t.Errorf("unknown user took %v, known user %v: timing tells them apart", unknown, known)
	}
	// A disabled user costs the same too.
	if d := measure("off"); d < known/2 {
		t.Errorf("disabled user took %v, known %v", d, known)
	}
}

func TestChooseDummyEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeFile(t, path, "# nobody yet\n")
	f, err := NewFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.table.Load().dummy.costKey(); got != "BLF-CRYPT/10" {
		t.Errorf("dummy for an empty file = %s", got)
	}
	if _, ok := f.Verify("x", "y"); ok {
		t.Error("empty file let someone in")
	}
}

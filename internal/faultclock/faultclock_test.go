package faultclock

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeBase is a real clock the test moves by hand: a fixed wall time plus a
// settable advance, with a monotonic reading so that StatEvery is measured as
// the package measures it.
type fakeBase struct {
	mu    sync.Mutex
	start time.Time
	adv   time.Duration
}

func (f *fakeBase) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.start.Add(f.adv)
}

func (f *fakeBase) advance(d time.Duration) {
	f.mu.Lock()
	f.adv += d
	f.mu.Unlock()
}

func TestClockFollowsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	base := &fakeBase{start: time.Now()}
	c, err := newClock(path, nil, base.now)
	if err != nil {
		t.Fatal(err)
	}
	wall := func() time.Time { return base.now().Round(0) }
	if got := c.Now(); !got.Equal(wall()) {
		t.Fatalf("no file: Now = %v, want the base %v", got, wall())
	}
	if err := Write(path, 2400*time.Hour); err != nil {
		t.Fatal(err)
	}
	// Within StatEvery of the last look the file is not read again.
	if got := c.Offset(); got != 0 {
		t.Fatalf("offset %v before StatEvery passed, want 0 (cached)", got)
	}
	base.advance(StatEvery)
	if got, want := c.Now(), wall().Add(2400*time.Hour); !got.Equal(want) {
		t.Fatalf("after the jump forward: Now = %v, want %v", got, want)
	}
	if err := Write(path, -24*time.Hour); err != nil {
		t.Fatal(err)
	}
	base.advance(StatEvery)
	if got := c.Offset(); got != -24*time.Hour {
		t.Fatalf("after the jump back: offset %v, want -24h", got)
	}
	// A file being rewritten (here: garbage) keeps the last offset.
	if err := os.WriteFile(path, []byte("yesterday\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base.advance(StatEvery)
	if got := c.Offset(); got != -24*time.Hour {
		t.Fatalf("unreadable file: offset %v, want the last one, -24h", got)
	}
	// Removed: offset 0.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	base.advance(StatEvery)
	if got := c.Offset(); got != 0 {
		t.Fatalf("file removed: offset %v, want 0", got)
	}
}

// TestNowHasNoMonotonicReading: two readings across a jump differ by the
// jump, as two wall-clock readings across a real step do.
func TestNowHasNoMonotonicReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	c, err := New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Now()
	if err := Write(path, -24*time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * StatEvery)
	for c.Offset() != -24*time.Hour {
		if time.Now().After(deadline) {
			t.Fatalf("the offset file was not read within %v", 10*StatEvery)
		}
		time.Sleep(StatEvery / 4) // waits for the cache to expire, not for a goroutine
	}
	if d := c.Now().Sub(before); d > -23*time.Hour {
		t.Fatalf("Now moved by %v across a jump of -24h; want about -24h", d)
	}
	if before != before.Round(0) {
		t.Fatal("Now carries a monotonic reading")
	}
}

func TestNewRejectsMalformedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	if err := os.WriteFile(path, []byte("100 days"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(path, nil); err == nil {
		t.Fatal("New accepted an offset file that is not a duration")
	}
	if err := os.WriteFile(path, []byte(" \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(path, nil)
	if err != nil {
		t.Fatalf("blank file: %v", err)
	}
	if c.Offset() != 0 {
		t.Fatalf("blank file: offset %v, want 0", c.Offset())
	}
}

func TestConcurrentNow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	c, err := New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for k := range 200 {
				if i == 0 && k%50 == 0 {
					if err := Write(path, time.Duration(k)*time.Hour); err != nil {
						t.Error(err)
					}
				}
				_ = c.Now()
			}
		})
	}
	wg.Wait()
}

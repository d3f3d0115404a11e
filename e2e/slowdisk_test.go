package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

// mountSlowFS mounts a SlowFS over a fresh directory, skipping the test
// when FUSE cannot be mounted here (a missing kernel feature is not a
// failure of Lifeline).
func mountSlowFS(t *testing.T) *SlowFS {
	t.Helper()
	root := t.TempDir()
	backing, mnt := filepath.Join(root, "backing"), filepath.Join(root, "mnt")
	mkdirs(t, backing, mnt)
	t.Cleanup(func() {
		// Runs after the unmount (registered before it): nothing left.
		if m, err := isMounted(mnt); err != nil || m {
			t.Errorf("%s still mounted (%v) after the cleanup", mnt, err)
		}
	})
	s, err := MountSlowFS(t, backing, mnt)
	if err != nil {
		t.Skipf("FUSE cannot be mounted here: %v", err)
	}
	if m, err := isMounted(mnt); err != nil || !m {
		t.Fatalf("%s is not a mount point after MountSlowFS (%v)", mnt, err)
	}
	return s
}

// TestSlowFSDelaysSyncs: the fsync and fdatasync of a file, the msync of a
// shared mapping (what Badger's SyncWrites come to; done by a child process)
// and the fsync of a directory each wait the delay on the mount; writes do
// not; a delay shortened while an fsync waits releases it at once; the data
// lands in the backing directory.
func TestSlowFSDelaysSyncs(t *testing.T) {
	s := mountSlowFS(t)
	const d = 150 * time.Millisecond
	path := filepath.Join(s.Mountpoint, "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	timed := func(what string, fn func() error) time.Duration {
		t.Helper()
		start := time.Now()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return time.Since(start)
	}

	if took := timed("fsync, no delay", f.Sync); took >= d {
		t.Errorf("fsync with no delay took %v", took)
	}
	s.SetDelay(d)
	if took := timed("write", func() error { _, err := f.Write([]byte("hello")); return err }); took >= d {
		t.Errorf("a write took %v: only syncs are to be slow", took)
	}
	before := s.Delayed()
	if took := timed("fsync", f.Sync); took < d {
		t.Errorf("fsync took %v, want ≥ %v", took, d)
	}
	if took := timed("fdatasync", func() error { return syscall.Fdatasync(int(f.Fd())) }); took < d {
		t.Errorf("fdatasync took %v, want ≥ %v", took, d)
	}

	// A shared writable mapping, synced with msync(MS_SYNC): in a child
	// process (see runSlowFSChild).
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	runSlowFSChild(t, "msync", path, d)

	dir, err := os.Open(s.Mountpoint)
	if err != nil {
		t.Fatal(err)
	}
	if took := timed("directory fsync", dir.Sync); took < d {
		t.Errorf("directory fsync took %v, want ≥ %v", took, d)
	}
	if err := dir.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.Delayed() - before; got < 4 {
		t.Errorf("%d delayed syncs counted, want ≥ 4 (fsync, fdatasync, msync, directory)", got)
	}

	// A long delay cut short: the waiting fsync goes on when it is.
	s.SetDelay(time.Hour)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f.Sync() }()
	if err := Poll(context.Background(), 10*time.Second, func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("fsync returned during an hour's delay: %v", err)
		default:
		}
		return time.Since(start) > 100*time.Millisecond, nil
	}); err != nil {
		t.Fatal(err)
	}
	s.SetDelay(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fsync still waiting 10 s after the delay was set to 0")
	}
	if s.Longest() < 100*time.Millisecond {
		t.Errorf("longest fsync %v", s.Longest())
	}

	b, err := os.ReadFile(filepath.Join(s.Backing, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("hello")) || !bytes.Contains(b, []byte("mapped by the child")) {
		t.Errorf("backing file holds %q", b[:min(len(b), 120)])
	}
	t.Log(s)
}

// TestSlowFSBadger: the journal (Badger with SyncWrites, memory-mapped
// write-ahead and value logs) works on the mount, its appends wait the
// delay, and what it wrote reads back after a reopen. Badger runs in a child
// process, as lifeline serve does in the fault scenario.
func TestSlowFSBadger(t *testing.T) {
	s := mountSlowFS(t)
	const d = 100 * time.Millisecond
	s.SetDelay(d)
	runSlowFSChild(t, "badger", filepath.Join(s.Mountpoint, "journal"), d)
	if s.Delayed() < 2 {
		t.Errorf("%d delayed syncs for two appends: %s", s.Delayed(), s)
	}
	t.Log(s)
}

// runSlowFSChild runs slowFSChild's work in a child process (this test
// binary again) and fails the test if the child fails. Touching a memory
// mapping of a file on the SlowFS from the process serving it can deadlock:
// the touching goroutine sits in a page fault the FUSE server has to
// answer, where the Go runtime cannot preempt it, and the next
// stop-the-world (a GC) then waits for it while the server's goroutines are
// stopped. Seen here with Badger in-process; go-fuse documents the
// limitation. So whatever maps files on the mount runs in another process.
func runSlowFSChild(t *testing.T, work, path string, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSlowFSChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "LIFELINE_SLOWFS_CHILD="+work, "LIFELINE_SLOWFS_PATH="+path, "LIFELINE_SLOWFS_DELAY="+delay.String())
	out, err := cmd.CombinedOutput()
	t.Logf("child %s:\n%s", work, out)
	if err != nil {
		t.Fatalf("child %s: %v", work, err)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestSlowFSChild")) {
		t.Fatalf("child %s did not run its work", work)
	}
}

// TestSlowFSChild is the child process of runSlowFSChild; on its own it
// does nothing.
func TestSlowFSChild(t *testing.T) {
	work, path := os.Getenv("LIFELINE_SLOWFS_CHILD"), os.Getenv("LIFELINE_SLOWFS_PATH")
	if work == "" {
		t.Skip("the child process of TestSlowFSDelaysSyncs and TestSlowFSBadger")
	}
	d, err := time.ParseDuration(os.Getenv("LIFELINE_SLOWFS_DELAY"))
	if err != nil {
		t.Fatal(err)
	}
	switch work {
	case "msync":
		childMsync(t, path, d)
	case "badger":
		childBadger(t, path, d)
	default:
		t.Fatalf("unknown child work %q", work)
	}
}

// childMsync writes through a shared writable mapping of path and times its
// msync(MS_SYNC), what Badger's SyncWrites come to.
func childMsync(t *testing.T, path string, d time.Duration) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("shared writable mmap on the FUSE mount: %v", err)
	}
	copy(m[100:], "mapped by the child")
	start := time.Now()
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Errorf("msync took %v, want ≥ %v", took, d)
	}
	if err := syscall.Munmap(m); err != nil {
		t.Fatal(err)
	}
}

// childBadger appends a small message and one over Badger's value
// threshold (value log) to a journal in dir, timing each, then reopens the
// journal and reads them back.
func childBadger(t *testing.T, dir string, d time.Duration) {
	ctx := context.Background()
	j, err := badgerjournal.Open(dir, badgerjournal.Options{})
	if err != nil {
		t.Fatalf("badger on the FUSE mount: %v", err)
	}
	env := func(i int) journal.Envelope {
		return journal.Envelope{MailFrom: "sender@example.net", QueueID: fmt.Sprintf("Q%d", i), Received: time.Now(), Source: "milter",
			Recipients: []journal.Recipient{{Address: "alice@example.test", Mailboxes: []string{"alice@example.test"}, Server: "dovecot", State: journal.StateMTA}}}
	}
	bodies := [][]byte{
		[]byte("Message-ID: <small@e2e>\r\nSubject: small\r\n\r\nsmall body\r\n"),
		append([]byte("Message-ID: <large@e2e>\r\nSubject: large\r\n\r\n"), bytes.Repeat([]byte(strings.Repeat("large body line ", 4)+"\r\n"), 20000)...),
	}
	var ids []journal.ID
	for i, b := range bodies {
		start := time.Now()
		res, err := j.Append(ctx, env(i), bytes.NewReader(b))
		if err != nil {
			j.Close()
			t.Fatalf("append %d: %v", i, err)
		}
		took := time.Since(start)
		if took < d {
			t.Errorf("append %d took %v with a %v fsync delay: not synced through the mount?", i, took, d)
		}
		t.Logf("append %d (%d bytes): %v", i, len(b), took.Round(time.Millisecond))
		ids = append(ids, res.ID)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = badgerjournal.Open(dir, badgerjournal.Options{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	for i, id := range ids {
		r, err := j.Open(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bodies[i]) {
			t.Errorf("message %d: read back %d bytes, wrote %d", i, len(got), len(bodies[i]))
		}
	}
}

// TestSlowFSUnmountBusy: a mount still in use (a file open on it, as a
// lifeline that did not stop would hold) is detached, and the unmount
// completes once the file is closed; nothing stays mounted.
func TestSlowFSUnmountBusy(t *testing.T) {
	s := mountSlowFS(t)
	f, err := os.Create(filepath.Join(s.Mountpoint, "held"))
	if err != nil {
		t.Fatal(err)
	}
	s.SetDelay(time.Hour) // Unmount must also end the delay
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	unmounted := make(chan error, 1)
	go func() { unmounted <- s.Unmount() }()
	if err := Poll(context.Background(), 30*time.Second, func() (bool, error) {
		m, err := isMounted(s.Mountpoint)
		return !m, err
	}); err != nil {
		t.Fatalf("busy mount not detached: %v", err)
	}
	select {
	case err := <-synced:
		if err != nil {
			t.Errorf("fsync waiting at the unmount: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an fsync waiting an hour's delay still waits after Unmount")
	}
	select {
	case err := <-unmounted:
		t.Fatalf("Unmount returned while a file on the detached mount is open: %v", err)
	default:
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-unmounted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Unmount did not return after the last file was closed")
	}
}

package badgerjournal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// mountTmpfs mounts a tmpfs of size bytes at a fresh directory, or skips the
// test where that is not allowed (not root, no mount).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestDiskFull fills a small filesystem with incompressible mail. Without the
// reserve, Badger's writes through its memory maps kill the process with
// SIGBUS when the filesystem is full; with it, Append fails cleanly with
// ErrDiskFull, what was stored stays readable and consistent, and state
// updates (replay outcomes) still work.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 28<<20)
	j, err := Open(dir, Options{MinFree: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	raw := make([]byte, 150<<10)
	var stored []journal.ID
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		rand.Read(raw)
		env := journal.Envelope{MailFrom: "s@example.org", Received: time.Now(),
			Recipients: []journal.Recipient{{Address: "a@example.com", Mailboxes: []string{"a@example.com"}, Server: "mx", State: journal.StateCustody}}}
		msg := fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, base64.StdEncoding.EncodeToString(raw))
		res, err := j.Append(ctx, env, strings.NewReader(msg))
		if err != nil {
			full = err
			break
		}
		stored = append(stored, res.ID)
	}
	if !errors.Is(full, journal.ErrDiskFull) {
		t.Fatalf("filling the disk ended with %v, want ErrDiskFull", full)
	}
	if len(stored) < 10 {
		t.Fatalf("only %d messages fit before the reserve", len(stored))
	}
	t.Logf("%d messages stored before: %v", len(stored), full)
	for _, id := range stored[len(stored)-3:] {
		rc, err := j.Open(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Update(ctx, stored[0], journal.Change{Rcpt: 0, To: journal.StateDelivered, Reply: "250 ok"}); err != nil {
		t.Errorf("Update on a full disk: %v", err)
	}
	if problems, err := j.Verify(ctx); err != nil || len(problems) != 0 {
		t.Errorf("Verify: %v %v", problems, err)
	}
}

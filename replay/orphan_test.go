package replay

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// lockedBuffer is a log destination safe for the Replayer's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Custody of a server the Replayer has no queue for (renamed or removed
// from the config) is never replayed: Serve says so at start, with the
// count, and leaves it alone.
func TestOrphanCustodyWarned(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	gone := func(addr string) journal.Recipient {
		r := custody(addr)
		r.Server = "gone"
		return r
	}
	o1 := appendMsg(t, j, "s@example.org", "o1", time.Now(), gone("a@old.example"), gone("b@old.example"))
	appendMsg(t, j, "s@example.org", "o2", time.Now(), gone("c@old.example"))
	id := appendMsg(t, j, "s@example.org", "k", time.Now(), custody("k@example.com"))
	var logs lockedBuffer
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	waitState(t, j, id, 0, journal.StateDelivered)
	eventually(t, "the warning", func() bool {
		return strings.Contains(logs.String(), "server=gone recipients=3")
	})
	if strings.Contains(logs.String(), "server=mbx") {
		t.Errorf("warned about a server with a queue:\n%s", logs.String())
	}
	if st := getEntry(t, j, o1).Envelope.Recipients[0].State; st != journal.StateCustody {
		t.Errorf("orphan custody is %v, want left in custody", st)
	}
}

package milter

import (
	"testing"

	gomilter "github.com/d--j/go-milter"
)

// TestSpoolFailureFailsMessage: when the spool file cannot be created the
// message is not journaled (its bytes are incomplete) and the configured
// answer is given.
func TestSpoolFailureFailsMessage(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j, SpoolThreshold: 100, OnJournalError: TempFail, SpoolDir: t.TempDir() + "/missing"})
	ts.spoolDir = t.TempDir() // nothing can be left in a directory that does not exist
	m := dial(t, ts.addr)
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionTempFail)
	if got := len(storedMessages(t, j)); got != 0 {
		t.Errorf("journal holds %d messages, want 0", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_tempfail"); got != 1 {
		t.Errorf("journal_error_tempfail = %v, want 1", got)
	}
}

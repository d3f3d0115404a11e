package badgerjournal

import (
	"log/slog"
	"testing"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/journaltest"
)

// testLogger sends the journal's and Badger's warnings and errors to the test
// log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Logf("%s", p)
	return len(p), nil
}

func openTest(t *testing.T, dir string, opts Options) *Journal {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

func TestContract(t *testing.T) {
	journaltest.Run(t, func(t *testing.T, dir string) journal.Journal {
		return openTest(t, dir, Options{})
	})
}

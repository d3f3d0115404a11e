// Package faultclock is a fault-injection hook, not an operator feature: a
// wall clock that runs at an offset from the system's, the offset read from a
// file that a test rewrites while `lifeline serve` runs. The fault suite
// (e2e TestFaultClockJump) makes Lifeline's wall clock jump by days, forward
// and back, without changing the machine's clock: other test suites run beside
// it, and Dovecot ends itself when time moves backwards.
//
// `lifeline serve` uses it when the environment variable EnvVar names a file
// (and logs a warning at start); the file holds a Go duration ("2400h",
// "-24h", "0s"). A missing or empty file is offset 0.
package faultclock

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// EnvVar names the offset file for `lifeline serve`.
const EnvVar = "LIFELINE_FAULT_CLOCK_FILE"

// StatEvery is how often Now looks at the file at most: a jump takes effect
// within that long of the file's change, and a busy Lifeline stats it at most
// ten times a second.
const StatEvery = 100 * time.Millisecond

// Clock is the system's wall clock plus the file's offset. It is safe for
// concurrent use.
type Clock struct {
	path string
	log  *slog.Logger
	// base is the real clock (time.Now; a test's fake).
	base func() time.Time

	mu       sync.Mutex
	checked  time.Time // base() at the last stat, with its monotonic reading
	ident    fileIdent // the file as of the last read
	offset   time.Duration
	lastFail string // the last read error logged, to log each once
}

// fileIdent tells a changed file: its modification time and size, and
// whether it is another file (a file replaced by rename is, even within one
// tick of the modification time).
type fileIdent struct {
	fi os.FileInfo // nil: no file
}

func (a fileIdent) same(b fileIdent) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil
	}
	return os.SameFile(a.fi, b.fi) && a.fi.ModTime().Equal(b.fi.ModTime()) && a.fi.Size() == b.fi.Size()
}

// New reads the offset file at path once; a file that exists but does not
// hold a duration is an error, so that a mistyped test fails at start. log
// may be nil.
func New(path string, log *slog.Logger) (*Clock, error) {
	return newClock(path, log, time.Now)
}

func newClock(path string, log *slog.Logger, base func() time.Time) (*Clock, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Clock{path: path, log: log, base: base}
	id, off, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("faultclock: %w", err)
	}
	c.ident, c.offset, c.checked = id, off, base()
	return c, nil
}

// Now is the system's wall time plus the offset. It carries no monotonic
// reading (Round(0)), as a time read back from the journal does not: a
// t2.Sub(t1) between two readings sees the jump, as it would between two
// wall-clock readings across a real step of the clock. Code that measures a
// duration must use time.Now and time.Since, whose monotonic reading no jump
// moves.
func (c *Clock) Now() time.Time {
	return c.base().Round(0).Add(c.Offset())
}

// Offset is the current offset, re-read from the file when StatEvery has
// passed since the last look and the file changed.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.base()
	// The interval is measured on the monotonic clock (time.Now's reading).
	if now.Sub(c.checked) < StatEvery && now.Sub(c.checked) >= 0 {
		return c.offset
	}
	c.checked = now
	id, err := stat(c.path)
	if err == nil && id.same(c.ident) {
		return c.offset
	}
	if err == nil {
		var off time.Duration
		id, off, err = read(c.path)
		if err == nil {
			if off != c.offset {
				c.log.Warn("fault injection: the wall clock jumps", "offset", off.String(), "was", c.offset.String(), "file", c.path)
			}
			c.ident, c.offset, c.lastFail = id, off, ""
			return c.offset
		}
	}
	// A file being written may be read half-way; keep the offset and look
	// again at the next stat.
	if msg := err.Error(); msg != c.lastFail {
		c.lastFail = msg
		c.log.Warn("fault injection: cannot read the clock offset; keeping the last one", "offset", c.offset.String(), "err", err)
	}
	return c.offset
}

func stat(path string) (fileIdent, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileIdent{}, nil
	}
	if err != nil {
		return fileIdent{}, err
	}
	return fileIdent{fi: fi}, nil
}

// read returns the file's identity and offset; a missing or blank file is 0.
func read(path string) (fileIdent, time.Duration, error) {
	id, err := stat(path)
	if err != nil || id.fi == nil {
		return id, 0, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fileIdent{}, 0, nil
		}
		return id, 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return id, 0, nil
	}
	off, err := time.ParseDuration(s)
	if err != nil {
		return id, 0, fmt.Errorf("%s: %w", path, err)
	}
	return id, off, nil
}

// Write sets the offset file at path atomically (a temporary file renamed
// over it), as a test does to make the clock jump.
func Write(path string, offset time.Duration) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(offset.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("faultclock: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("faultclock: %w", err), os.Remove(tmp))
	}
	return nil
}

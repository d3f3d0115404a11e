package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Main is a TB for programs (the benchmark): Logf writes to Out, Errorf marks
// the run failed, Fatalf and Skipf end it, and Cleanup functions run when Run
// returns, last first, as in testing.
type Main struct {
	Out io.Writer // default os.Stderr

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	root     string
	n        int
}

// errStop unwinds Run after Fatalf or Skipf.
var errStop = errors.New("e2e: stop")

// Run calls f, then the cleanups, and returns an error if f failed.
func (m *Main) Run(f func(tb TB)) (err error) {
	defer func() {
		m.runCleanups()
		if r := recover(); r != nil && r != errStop {
			panic(r)
		}
		if m.Failed() {
			err = errors.New("failed")
		}
	}()
	f(m)
	return nil
}

func (m *Main) runCleanups() {
	for {
		m.mu.Lock()
		if len(m.cleanups) == 0 {
			m.mu.Unlock()
			return
		}
		c := m.cleanups[len(m.cleanups)-1]
		m.cleanups = m.cleanups[:len(m.cleanups)-1]
		m.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil && r != errStop {
					m.Errorf("cleanup panicked: %v", r)
				}
			}()
			c()
		}()
	}
}

func (m *Main) out() io.Writer {
	if m.Out == nil {
		return os.Stderr
	}
	return m.Out
}

func (m *Main) Helper() {}

func (m *Main) Logf(format string, args ...any) {
	fmt.Fprintf(m.out(), format+"\n", args...)
}

func (m *Main) Errorf(format string, args ...any) {
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
	m.Logf("ERROR: "+format, args...)
}

func (m *Main) Fatalf(format string, args ...any) {
	m.Errorf(format, args...)
	panic(errStop)
}

// Skipf ends the run as failed: a program has nobody to report a skip to.
func (m *Main) Skipf(format string, args ...any) {
	m.Fatalf("cannot run: "+format, args...)
}

func (m *Main) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

func (m *Main) Failed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

// TempDir returns a new directory, removed when Run returns. Like testing's,
// each lives under one per-run directory.
func (m *Main) TempDir() string {
	m.mu.Lock()
	if m.root == "" {
		root, err := os.MkdirTemp("", "lifeline-e2e")
		if err != nil {
			m.mu.Unlock()
			m.Fatalf("TempDir: %v", err)
		}
		m.root = root
		m.cleanups = append([]func(){func() { os.RemoveAll(root) }}, m.cleanups...)
	}
	m.n++
	dir := filepath.Join(m.root, fmt.Sprintf("%03d", m.n))
	m.mu.Unlock()
	if err := os.Mkdir(dir, 0o700); err != nil {
		m.Fatalf("TempDir: %v", err)
	}
	return dir
}

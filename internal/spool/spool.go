// Package spool holds one message's bytes while a server receives it: in
// memory up to a threshold, then in an unlinked temporary file, so that a
// 50 MB message never sits in memory (DESIGN.md, "The journal"). The milter
// and the LMTP ingest listeners use it.
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Spool holds the bytes of one message. Up to threshold bytes stay in
// memory; the first write that would exceed it moves everything into a
// temporary file. A negative threshold puts every message on disk.
//
// The file is created with mode 0600 (os.CreateTemp) and unlinked at once
// where the OS allows it (Unix): the open descriptor keeps it readable, and the
// data vanishes even if the process is killed. Where unlinking an open file
// fails (Windows) it is removed by Close.
//
// A spool is used by one goroutine at a time. Errors are sticky: after a
// failed write every later Write returns the same error.
type Spool struct {
	dir       string
	prefix    string
	threshold int64

	mem  bytes.Buffer
	f    *os.File
	path string // non-empty while the file still has a name to remove
	size int64
	err  error
	// Created, if set, is called with the file's path right after it is
	// created (a test hook: the file is unlinked at once).
	Created func(path string)
}

// New returns an empty spool whose file, if it needs one, is created in dir
// (the system temporary directory when empty) and named after who (the
// component: "milter", "ingest"), which also prefixes its errors.
func New(dir, who string, threshold int64) *Spool {
	return &Spool{dir: dir, prefix: who, threshold: threshold}
}

// Write appends p to the spool.
func (s *Spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && s.size+int64(len(p)) > s.threshold {
		if err := s.spill(); err != nil {
			s.err = err
			return 0, err
		}
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	if err != nil {
		s.err = fmt.Errorf("%s: spool write: %w", s.prefix, err)
		return n, s.err
	}
	return n, nil
}

// WriteString appends str; it lets io.WriteString avoid a conversion.
func (s *Spool) WriteString(str string) (int, error) {
	if s.f == nil && s.size+int64(len(str)) <= s.threshold && s.err == nil {
		n, _ := s.mem.WriteString(str) // bytes.Buffer never fails
		s.size += int64(n)
		return n, nil
	}
	return s.Write([]byte(str))
}

// spill moves the in-memory bytes into a new temporary file.
func (s *Spool) spill() error {
	f, err := os.CreateTemp(s.dir, "lifeline-"+s.prefix+"-*.eml")
	if err != nil {
		return fmt.Errorf("%s: spool: %w", s.prefix, err)
	}
	s.f = f
	s.path = f.Name()
	if s.Created != nil {
		s.Created(s.path)
	}
	if os.Remove(s.path) == nil {
		s.path = "" // unlinked: nothing left to remove by name
	}
	if _, err := s.mem.WriteTo(f); err != nil {
		return fmt.Errorf("%s: spool: %w", s.prefix, err)
	}
	s.mem = bytes.Buffer{} // release the memory
	return nil
}

// Size is the number of bytes written.
func (s *Spool) Size() int64 { return s.size }

// OnDisk reports whether the message spilled into a file.
func (s *Spool) OnDisk() bool { return s.f != nil }

// Reader returns a reader over everything written so far. It reads the file
// through the descriptor without moving its offset, so no second copy of the
// message is made in memory.
func (s *Spool) Reader() (io.Reader, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.size), nil
	}
	return bytes.NewReader(s.mem.Bytes()), nil
}

// Close releases the memory and closes and removes the file. It is safe to
// call more than once.
func (s *Spool) Close() error {
	var errs []error
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: spool close: %w", s.prefix, err))
		}
		s.f = nil
	}
	if s.path != "" {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s: spool remove: %w", s.prefix, err))
		}
		s.path = ""
	}
	s.mem = bytes.Buffer{}
	s.size = 0
	if s.err == nil {
		s.err = fmt.Errorf("%s: %w", s.prefix, ErrClosed)
	}
	return errors.Join(errs...)
}

// ErrClosed is what a closed spool returns.
var ErrClosed = errors.New("spool closed")

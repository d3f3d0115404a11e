// Package export writes journaled mail out as files an administrator or a mail
// program can use: one .eml file per message, or an mbox.
package export

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// Filter selects messages of one mailbox received in [Since, Until).
type Filter struct {
	Mailbox string
	Since   time.Time // zero: from the beginning
	Until   time.Time // zero: no upper bound
}

func (f Filter) match(e journal.Entry) bool {
	t := e.Envelope.Received
	return (f.Since.IsZero() || !t.Before(f.Since)) && (f.Until.IsZero() || t.Before(f.Until))
}

// Each calls fn for every entry of the filter's mailbox in UID order; an
// unknown mailbox is journal.ErrNotFound (from List).
func Each(ctx context.Context, j journal.Journal, f Filter, fn func(journal.Entry) error) error {
	return j.List(ctx, f.Mailbox, 1, func(it journal.MailboxItem) error {
		e, err := j.Get(ctx, it.ID)
		if err != nil {
			return fmt.Errorf("message %s: %w", it.ID, err)
		}
		if !f.match(e) {
			return nil
		}
		return fn(e)
	})
}

// EML writes each selected message, byte for byte as journaled, to
// DIR/<journal id>.eml and returns how many it wrote.
func EML(ctx context.Context, j journal.Journal, f Filter, dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	n := 0
	err := Each(ctx, j, f, func(e journal.Entry) error {
		if err := writeEML(ctx, j, e.ID, filepath.Join(dir, e.ID.String()+".eml")); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

func writeEML(ctx context.Context, j journal.Journal, id journal.ID, path string) (err error) {
	r, err := j.Open(ctx, id)
	if err != nil {
		return fmt.Errorf("open %s: %w", id, err)
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		return errors.Join(fmt.Errorf("export %s: %w", id, err), f.Close(), os.Remove(tmp))
	}
	if err := f.Close(); err != nil {
		return errors.Join(fmt.Errorf("export %s: %w", id, err), os.Remove(tmp))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// Mbox writes the selected messages to w in mboxrd format: a "From " separator
// line with the envelope sender and arrival time, LF line ends, and every body
// line that matches ^>*From  quoted with one more '>' so that it can be undone
// exactly. It returns how many messages it wrote.
func Mbox(ctx context.Context, j journal.Journal, f Filter, w io.Writer) (int, error) {
	bw := bufio.NewWriter(w)
	n := 0
	err := Each(ctx, j, f, func(e journal.Entry) error {
		if err := writeMboxMessage(ctx, j, e, bw); err != nil {
			return err
		}
		n++
		return nil
	})
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("export: %w", ferr)
	}
	return n, err
}

func writeMboxMessage(ctx context.Context, j journal.Journal, e journal.Entry, w *bufio.Writer) (err error) {
	from := e.Envelope.MailFrom
	if from == "" {
		from = "MAILER-DAEMON"
	}
	// The separator's date is in asctime format (see mbox(5)).
	fmt.Fprintf(w, "From %s %s\n", from, e.Envelope.Received.UTC().Format("Mon Jan _2 15:04:05 2006"))
	r, err := j.Open(ctx, e.ID)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.ID, err)
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	br := bufio.NewReaderSize(r, 64*1024)
	atLineStart := true
	for {
		line, rerr := br.ReadSlice('\n')
		if len(line) > 0 {
			if atLineStart && isFromLine(line) {
				w.WriteByte('>')
			}
			complete := line[len(line)-1] == '\n'
			if complete {
				line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
			}
			w.Write(line)
			if complete {
				w.WriteByte('\n')
			}
			atLineStart = complete
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read %s: %w", e.ID, rerr)
		}
	}
	if !atLineStart {
		w.WriteByte('\n')
	}
	// A blank line separates messages.
	if _, err := w.WriteString("\n"); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func isFromLine(line []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From "))
}

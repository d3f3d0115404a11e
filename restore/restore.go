// Package restore gives journaled mail of one mailbox and time range back to
// the mailbox server over LMTP, whatever its delivery state: how lost or
// deleted mail comes back from the 90-day journal (DESIGN.md, step 7).
//
// With a folder, each message goes to user+folder@domain, which Dovecot files
// into that folder when lmtp_save_to_detail_mailbox = yes, so restored mail
// does not flood the inbox.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// Deliverer sends one message to one recipient and returns the server's reply
// code and text for it (RFC 2033 §4.2: LMTP replies per recipient).
type Deliverer interface {
	DeliverOne(ctx context.Context, from, rcpt string, body io.Reader) (code int, text string, err error)
}

// Request selects what to restore.
type Request struct {
	Mailbox string
	Since   time.Time
	Until   time.Time // zero: no upper bound
	Folder  string    // "" = the inbox
	DryRun  bool
}

// Progress is reported after each message.
type Progress struct {
	Total, Done, Delivered, Failed int
	Bytes                          int64
	Last                           string
}

// Target is the address a restored message is delivered to: the mailbox, or
// its folder address user+folder@domain.
func Target(mailbox, folder, delimiter string) (string, error) {
	if folder == "" {
		return mailbox, nil
	}
	if strings.ContainsAny(folder, "@<>\" \t\r\n") {
		return "", fmt.Errorf("restore: folder %q: use a plain folder name", folder)
	}
	at := strings.LastIndexByte(mailbox, '@')
	if at <= 0 {
		return "", fmt.Errorf("restore: mailbox %q is not an address", mailbox)
	}
	if delimiter == "" {
		delimiter = "+"
	}
	return mailbox[:at] + delimiter[:1] + folder + mailbox[at:], nil
}

// Run restores the selected messages in arrival order. A message the server
// refuses is counted as failed and the restore goes on; a broken connection or
// a cancelled ctx stops it, with the tally so far.
func Run(ctx context.Context, j journal.Journal, d Deliverer, req Request, delimiter string, progress func(Progress)) (Progress, error) {
	var p Progress
	if _, err := j.Mailbox(ctx, req.Mailbox); err != nil {
		return p, fmt.Errorf("restore: mailbox %q: %w", req.Mailbox, err)
	}
	rcpt, err := Target(req.Mailbox, req.Folder, delimiter)
	if err != nil {
		return p, err
	}
	// Select first, so that the progress has a total and mail arriving during
	// the restore is not restored too.
	var items []journal.MailboxItem
	err = j.List(ctx, req.Mailbox, 1, func(it journal.MailboxItem) error {
		if it.Received.Before(req.Since) || (!req.Until.IsZero() && !it.Received.Before(req.Until)) {
			return nil
		}
		items = append(items, it)
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("restore: listing %q: %w", req.Mailbox, err)
	}
	p.Total = len(items)
	if progress != nil {
		progress(p)
	}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		e, err := j.Get(ctx, it.ID)
		if errors.Is(err, journal.ErrNotFound) {
			continue // swept since it was listed
		}
		if err != nil {
			return p, fmt.Errorf("restore: message %s: %w", it.ID, err)
		}
		p.Last = e.Summary.Subject
		if !req.DryRun {
			code, text, err := deliver(ctx, j, d, e, rcpt)
			if err != nil {
				return p, fmt.Errorf("restore: message %s: %w", it.ID, err)
			}
			if code/100 == 2 {
				p.Delivered++
			} else {
				p.Failed++
				p.Last = fmt.Sprintf("%s: %d %s", e.Summary.MessageID, code, text)
			}
		}
		p.Done++
		p.Bytes += e.Size
		if progress != nil {
			progress(p)
		}
	}
	return p, nil
}

func deliver(ctx context.Context, j journal.Journal, d Deliverer, e journal.Entry, rcpt string) (int, string, error) {
	body, err := j.Open(ctx, e.ID)
	if err != nil {
		return 0, "", err
	}
	defer body.Close()
	return d.DeliverOne(ctx, e.Envelope.MailFrom, rcpt, body)
}

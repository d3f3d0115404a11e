package imap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goimap "github.com/emersion/go-imap/v2"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// appendSource is journal.Envelope.Source of messages stored by APPEND.
const appendSource = "imap"

// Append implements APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315 §3).
//
// Only Sent takes messages: a client saves there what it sent through
// Lifeline. The message is journaled with the user as sender and the Sent
// folder ("user@example.com/Sent") as the one recipient, in state mta ("not
// Lifeline's to deliver"), so replay never delivers it anywhere. INBOX is
// what the MTA delivered; APPEND to it is refused with NO [CANNOT].
//
// The journal stores a message once per identity (sender, recipients,
// content; see journal.Identity): appending the same bytes again answers the
// UID of the copy already in Sent. If that copy was expunged, it cannot come
// back under its old UID (UIDs only grow, RFC 3501 §2.3.1.1) and APPEND fails
// with NO [ALREADYEXISTS].
func (ss *session) Append(mailbox string, r goimap.LiteralReader, options *goimap.AppendOptions) (*goimap.AppendData, error) {
	var data *goimap.AppendData
	err := ss.run("APPEND", func(ctx context.Context) error {
		if ss.mailbox == "" {
			return bad("not logged in")
		}
		f, err := ss.folder(mailbox)
		if err != nil {
			return err
		}
		if !f.sent {
			return no(goimap.ResponseCodeCannot, "INBOX holds the mail your mail server delivered; messages can be appended to Sent only")
		}
		var flags []string
		for _, fl := range options.Flags {
			if strings.EqualFold(string(fl), `\Recent`) {
				continue
			}
			if !validFlag(string(fl)) {
				return bad("invalid flag %q", printable(string(fl)))
			}
			flags = append(flags, string(fl))
		}
		env := journal.Envelope{
			MailFrom: ss.mailbox,
			Recipients: []journal.Recipient{{
				// The Sent folder's own name, not the user's address: the
				// journal's identity covers the recipients, so a message the
				// user sent to themselves (journaled for INBOX by the MTA)
				// and its Sent copy stay two messages.
				Address:   f.box,
				Mailboxes: []string{f.box},
				State:     journal.StateMTA, // never replayed (journal/state.go)
			}},
			Received: options.Time, // INTERNALDATE; zero means now
			AuthUser: ss.user,
			Source:   appendSource,
		}
		res, err := ss.srv.opts.Journal.Append(ctx, env, r)
		switch {
		case errors.Is(err, journal.ErrTooLarge):
			return no(goimap.ResponseCodeTooBig, "message too large")
		case errors.Is(err, journal.ErrDiskFull):
			ss.log.Error("imap: append", "mailbox", f.box, "err", err)
			return no(goimap.ResponseCodeUnavailable, "the mail store is full, try again later")
		case err != nil:
			ss.log.Error("imap: append", "mailbox", f.box, "err", err)
			return errUnavailable
		}
		uid, err := ss.srv.findUID(ctx, f.box, res.ID)
		if err != nil {
			return err
		}
		if uid == 0 {
			ss.log.Info("imap: append of a message journaled for INBOX", "mailbox", f.box, "id", res.ID)
			return no(goimap.ResponseCodeAlreadyExists, "an identical message is already stored in INBOX; it cannot be stored in Sent too")
		}
		if res.Duplicate {
			if _, err := ss.srv.opts.Store.Flags(ctx, f.box, uid); errors.Is(err, userview.ErrNoMessage) {
				return no(goimap.ResponseCodeAlreadyExists, "an identical message was expunged from Sent; it cannot be appended again")
			} else if err != nil {
				ss.log.Error("imap: append", "mailbox", f.box, "err", err)
				return errUnavailable
			}
		}
		if len(flags) > 0 {
			// The message is stored: a failure here only loses its flags,
			// and failing the APPEND would make the client store it again.
			if _, err := ss.srv.opts.Store.AddFlags(ctx, f.box, uid, flags); err != nil {
				ss.log.Warn("imap: append flags", "mailbox", f.box, "uid", uid, "err", err)
			}
		}
		info, err := ss.srv.mailboxInfo(ctx, f.box)
		if err != nil {
			ss.log.Error("imap: append", "mailbox", f.box, "err", err)
			return errUnavailable
		}
		ss.srv.watches.touch(f.box)
		ss.log.Info("imap: append", "mailbox", f.box, "uid", uid, "duplicate", res.Duplicate)
		data = &goimap.AppendData{UID: goimap.UID(uid), UIDValidity: uidValidity(info)}
		return nil
	})
	return data, err
}

var errStop = errors.New("stop")

// findUID returns the UID of message id in a journal mailbox, 0 if it is not
// there. A message just appended is normally the last, so the end of the
// mailbox is looked at first.
func (s *Server) findUID(ctx context.Context, box string, id journal.ID) (uint32, error) {
	info, err := s.mailboxInfo(ctx, box)
	if err != nil {
		return 0, err
	}
	starts := []uint32{1}
	if info.UIDNext > 64 {
		starts = []uint32{info.UIDNext - 64, 1}
	}
	for _, from := range starts {
		var uid uint32
		err := s.opts.Journal.List(ctx, box, from, func(it journal.MailboxItem) error {
			if it.ID == id {
				uid = it.UID
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) && !errors.Is(err, journal.ErrNotFound) {
			return 0, fmt.Errorf("finding %s in %q: %w", id, box, err)
		}
		if uid != 0 {
			return uid, nil
		}
	}
	return 0, nil
}

// touch wakes the sessions idling on box after an APPEND.
func (ws *watches) touch(box string) {
	ws.mu.Lock()
	w := ws.m[box]
	ws.mu.Unlock()
	if w != nil {
		w.notify()
	}
}

// validFlag accepts a system flag or a keyword (RFC 3501 §9: flag-keyword is
// an atom), as package userview does, so that APPEND refuses a bad flag before
// it stores the message.
func validFlag(f string) bool {
	if strings.HasPrefix(f, `\`) {
		for _, s := range systemFlags {
			if strings.EqualFold(f, string(s)) {
				return true
			}
		}
		return false
	}
	if f == "" || len(f) > 100 {
		return false
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

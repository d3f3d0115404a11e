package imap

import (
	"context"
	"errors"
	"slices"
	"strings"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/sidecar/userview"
)

func (ss *session) selected() (*view, error) {
	if ss.sel == nil {
		return nil, bad("no mailbox selected")
	}
	return ss.sel, nil
}

func errTooManyKeywords() error {
	return no(goimap.ResponseCodeLimit, "a message may carry at most %d keywords", userview.MaxKeywords)
}

// distinctKeywords counts the keywords in flags, which compare
// case-insensitively (RFC 9051 §2.3.2).
func distinctKeywords(flags []string) int {
	seen := make(map[string]bool, len(flags))
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) {
			seen[strings.ToLower(f)] = true
		}
	}
	return len(seen)
}

func errReadOnly() error {
	return no(goimap.ResponseCodeCannot, "mailbox is read-only (EXAMINE), SELECT it to change it")
}

// Store implements STORE and UID STORE (RFC 3501 §6.4.6). Flags persist per
// user in the journal's control store (package userview): another session,
// and the same user tomorrow, see them. \Recent cannot be stored and is
// ignored. A message carries at most userview.MaxKeywords keywords of at most
// userview.MaxKeywordLength bytes: a STORE beyond fails with NO [LIMIT]
// (RFC 9051 §7.1, RFC 5530 §3) for the messages it would overfill, and
// changes the others.
func (ss *session) Store(w *imapserver.FetchWriter, set goimap.NumSet, flags *goimap.StoreFlags, _ *goimap.StoreOptions) error {
	return ss.run("STORE", func(ctx context.Context) error {
		v, err := ss.selected()
		if err != nil {
			return err
		}
		if v.readOnly {
			return errReadOnly()
		}
		idx, err := v.resolve(set)
		if err != nil {
			return err
		}
		var fl []string
		for _, f := range flags.Flags {
			if f == goimap.FlagWildcard {
				return bad(`\* is not a flag`)
			}
			if !strings.EqualFold(string(f), `\Recent`) {
				fl = append(fl, string(f))
			}
		}
		if flags.Op != goimap.StoreFlagsDel && distinctKeywords(fl) > userview.MaxKeywords {
			// No message could take them all: refuse before touching any.
			return errTooManyKeywords()
		}
		store := ss.srv.opts.Store
		var done []int
		var failed error
		for _, i := range idx {
			m := v.msgs[i]
			if m.gone {
				continue
			}
			var next []string
			switch flags.Op {
			case goimap.StoreFlagsSet:
				next, err = store.SetFlags(ctx, v.f.box, m.uid, fl)
			case goimap.StoreFlagsAdd:
				next, err = store.AddFlags(ctx, v.f.box, m.uid, fl)
			case goimap.StoreFlagsDel:
				next, err = store.RemoveFlags(ctx, v.f.box, m.uid, fl)
			}
			if errors.Is(err, userview.ErrBadFlag) {
				return bad("invalid flag in %v", flags.Flags)
			}
			if errors.Is(err, userview.ErrKeywordTooLong) {
				// The flags are checked before any message changes.
				return no(goimap.ResponseCodeLimit, "a keyword may be at most %d bytes long", userview.MaxKeywordLength)
			}
			if errors.Is(err, userview.ErrTooManyKeywords) {
				// This message is full; others may still take the flags.
				failed = errTooManyKeywords()
				continue
			}
			if errors.Is(err, userview.ErrNoMessage) {
				// Expunged by another session meanwhile: its EXPUNGE
				// follows (RFC 2180 §4.2.1).
				v.markGone(m)
				continue
			}
			if err != nil {
				ss.log.Error("imap: store flags", "mailbox", v.f.box, "uid", m.uid, "err", err)
				failed = errUnavailable
				break
			}
			m.flags = next
			v.noteKeywords(next)
			done = append(done, i)
		}
		if len(done) > 0 {
			v.changedBy()
		}
		if !flags.Silent {
			_, byUID := set.(goimap.UIDSet)
			for _, i := range done {
				rw := w.CreateMessage(uint32(i + 1))
				if byUID {
					rw.WriteUID(goimap.UID(v.msgs[i].uid))
				}
				rw.WriteFlags(toFlags(v.msgs[i].flags))
				if err := rw.Close(); err != nil {
					return err
				}
			}
		}
		return failed
	})
}

// Expunge implements EXPUNGE, UID EXPUNGE (RFC 4315 §2.1) and the expunge of
// CLOSE. An expunged message is hidden from this user's view only (package
// userview): the journal keeps its copy until retention, the other recipients
// still see it, and custody mail is still replayed to the mailbox server.
func (ss *session) Expunge(w *imapserver.ExpungeWriter, uids *goimap.UIDSet) error {
	// CLOSE calls Expunge with a writer that sends nothing (RFC 3501 §6.4.2).
	silent := w == nil || *w == (imapserver.ExpungeWriter{})
	command := "EXPUNGE"
	if silent {
		command = ""
	}
	return ss.run(command, func(ctx context.Context) error {
		v, err := ss.selected()
		if err != nil {
			return err
		}
		if v.readOnly {
			if silent {
				// RFC 3501 §6.4.2: CLOSE of an EXAMINEd mailbox removes
				// nothing and is no error.
				return nil
			}
			return errReadOnly()
		}
		// UID EXPUNGE names UIDs, with "*" and "$" resolved like any set.
		named := make([]bool, len(v.msgs))
		if uids == nil {
			for i := range named {
				named[i] = true
			}
		} else {
			idx, err := v.resolve(*uids)
			if err != nil {
				return err
			}
			for _, i := range idx {
				named[i] = true
			}
		}
		var hide []uint32
		for i, m := range v.msgs {
			if named[i] && !m.gone && hasFlag(m.flags, userview.FlagDeleted) {
				hide = append(hide, m.uid)
			}
		}
		if len(hide) > 0 {
			if err := ss.srv.opts.Store.Hide(ctx, v.f.box, hide...); err != nil {
				ss.log.Error("imap: expunge", "mailbox", v.f.box, "err", err)
				// Some may be hidden: the next refresh finds out which.
				v.w.changed()
				return errUnavailable
			}
			for _, m := range v.msgs {
				if slices.Contains(hide, m.uid) {
					v.markGone(m)
				}
			}
			v.changedBy()
			ss.log.Info("imap: expunge", "mailbox", v.f.box, "messages", len(hide))
		}
		// Every message gone from the view is expunged now, also those
		// another session removed (RFC 3501 §7.4.1 allows EXPUNGE here).
		for i := len(v.msgs) - 1; i >= 0; i-- {
			if !v.msgs[i].gone {
				continue
			}
			if err := w.WriteExpunge(uint32(i + 1)); err != nil {
				return err
			}
			v.msgs = slices.Delete(v.msgs, i, i+1)
		}
		return nil
	})
}

// errNoCopy explains why COPY and MOVE are refused: the continuity mailbox
// mirrors what the MTA delivered (INBOX) and what the user sent through
// Lifeline (Sent); a copy between them would be mail that neither happened.
// To remove a message, clients mark it \Deleted and EXPUNGE it.
func errNoCopy(dest string) error {
	return no(goimap.ResponseCodeCannot,
		"messages cannot be copied or moved to %s: the continuity mailbox keeps INBOX and Sent as delivered and sent; mark messages \\Deleted and EXPUNGE to remove them",
		printable(dest))
}

// Copy implements COPY and UID COPY (RFC 3501 §6.4.7) by refusing them, after
// checking the message set and the destination.
func (ss *session) Copy(set goimap.NumSet, dest string) (*goimap.CopyData, error) {
	err := ss.run("COPY", func(context.Context) error { return ss.refuseCopy(set, dest) })
	return nil, err
}

// Move implements MOVE and UID MOVE (RFC 6851) by refusing them like COPY.
// MOVE is advertised because IMAP4rev2 includes it (RFC 9051 §6.4.8); a client
// set up to move deleted mail to a Trash folder hears NO [CANNOT] with the
// hint to use \Deleted and EXPUNGE instead.
func (ss *session) Move(_ *imapserver.MoveWriter, set goimap.NumSet, dest string) error {
	return ss.run("MOVE", func(context.Context) error { return ss.refuseCopy(set, dest) })
}

func (ss *session) refuseCopy(set goimap.NumSet, dest string) error {
	v, err := ss.selected()
	if err != nil {
		return err
	}
	if _, err := v.resolve(set); err != nil {
		return err
	}
	f, err := ss.folder(dest)
	if err != nil {
		return err
	}
	if f.box == v.f.box {
		return no(goimap.ResponseCodeCannot, "source and destination are the same mailbox")
	}
	return errNoCopy(f.name)
}

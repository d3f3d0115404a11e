package imap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// The folder set is fixed: INBOX is what the MTA delivered to the user (the
// journal mailbox named by the Authenticator), Sent what the user sent through
// Lifeline (the journal mailbox "<mailbox>/Sent"; a domain cannot contain "/",
// so no address ever names it).
const (
	inboxName  = "INBOX"
	sentName   = "Sent"
	sentSuffix = "/Sent"
	// delim is the hierarchy delimiter announced by LIST and NAMESPACE; no
	// folder has children.
	delim = '/'
)

// folder is one of a user's two folders.
type folder struct {
	name string // the IMAP name
	box  string // the journal mailbox
	sent bool
}

// folders lists the user's folders in LIST order.
func (ss *session) folders() []folder {
	return []folder{
		{name: inboxName, box: ss.mailbox},
		{name: sentName, box: ss.mailbox + sentSuffix, sent: true},
	}
}

// folder resolves a mailbox name of a command. INBOX is case-insensitive (RFC
// 3501 §5.1); so is Sent here, as there is no other folder it could mean.
// Every other name is refused: no command reaches a journal mailbox but the
// user's own two.
func (ss *session) folder(name string) (folder, error) {
	for _, f := range ss.folders() {
		if strings.EqualFold(name, f.name) {
			return f, nil
		}
	}
	return folder{}, no(goimap.ResponseCodeNonExistent, "no mailbox %q: only INBOX and Sent exist", printable(name))
}

// printable shortens a client-supplied name for a response text.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return oneLine(s)
}

// mailboxInfo reads a journal mailbox's UIDVALIDITY and counts; a mailbox the
// journal does not know yet (no mail so far) is empty, with the zero info.
func (s *Server) mailboxInfo(ctx context.Context, box string) (journal.MailboxInfo, error) {
	info, err := s.opts.Journal.Mailbox(ctx, box)
	if errors.Is(err, journal.ErrNotFound) {
		// A folder shown before its first message (Sent, or the INBOX of a
		// user with no mail yet) gets its UIDVALIDITY now: one that changed
		// when the first message arrived would make clients such as mbsync
		// refuse to sync it (RFC 3501 §2.3.1.1). Only a logged-in user's own
		// two folders reach here.
		info, err = s.opts.Journal.CreateMailbox(ctx, box)
	}
	if err != nil {
		return info, fmt.Errorf("mailbox %q: %w", box, err)
	}
	return info, nil
}

// uidValidity is the UIDVALIDITY announced for a mailbox. mailboxInfo
// creates unknown mailboxes, so 0 only stands for a journal that could not;
// 1 stands in then.
func uidValidity(info journal.MailboxInfo) uint32 {
	if info.UIDValidity == 0 {
		return 1
	}
	return info.UIDValidity
}

// Namespace implements NAMESPACE (RFC 2342): one personal namespace, no
// shared or other users' namespaces.
func (ss *session) Namespace() (*goimap.NamespaceData, error) {
	var data *goimap.NamespaceData
	err := ss.run("NAMESPACE", func(context.Context) error {
		data = &goimap.NamespaceData{Personal: []goimap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}
		return nil
	})
	return data, err
}

// List implements LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with LIST-EXTENDED
// (RFC 5258), LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154): Sent is
// \Sent. Both folders are always subscribed.
func (ss *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *goimap.ListOptions) error {
	return ss.run("LIST", func(ctx context.Context) error {
		if len(patterns) == 0 {
			// RFC 3501 §6.3.8: an empty pattern asks for the delimiter.
			return w.WriteList(&goimap.ListData{Attrs: []goimap.MailboxAttr{goimap.MailboxAttrNoSelect}, Delim: delim})
		}
		for _, f := range ss.folders() {
			match := false
			for _, p := range patterns {
				// INBOX matches case-insensitively (RFC 3501 §6.3.8).
				name := f.name
				if !f.sent && strings.EqualFold(p, inboxName) {
					p = inboxName
				}
				if imapserver.MatchList(name, delim, ref, p) {
					match = true
					break
				}
			}
			if !match || options.SelectSpecialUse && !f.sent {
				continue
			}
			data := &goimap.ListData{Mailbox: f.name, Delim: delim, Attrs: []goimap.MailboxAttr{goimap.MailboxAttrHasNoChildren}}
			if f.sent {
				data.Attrs = append(data.Attrs, goimap.MailboxAttrSent)
			}
			if options.SelectSubscribed || options.ReturnSubscribed {
				data.Attrs = append(data.Attrs, goimap.MailboxAttrSubscribed)
			}
			if options.ReturnStatus != nil {
				st, err := ss.status(ctx, f, options.ReturnStatus)
				if err != nil {
					return err
				}
				data.Status = st
			}
			if err := w.WriteList(data); err != nil {
				return err
			}
		}
		return nil
	})
}

// Status implements STATUS (RFC 3501 §6.3.10, RFC 9051 §6.3.11).
func (ss *session) Status(name string, options *goimap.StatusOptions) (*goimap.StatusData, error) {
	var data *goimap.StatusData
	err := ss.run("STATUS", func(ctx context.Context) error {
		f, err := ss.folder(name)
		if err != nil {
			return err
		}
		data, err = ss.status(ctx, f, options)
		return err
	})
	return data, err
}

func (ss *session) status(ctx context.Context, f folder, options *goimap.StatusOptions) (*goimap.StatusData, error) {
	info, err := ss.srv.mailboxInfo(ctx, f.box)
	if err != nil {
		ss.log.Error("imap: status", "mailbox", f.box, "err", err)
		return nil, errUnavailable
	}
	msgs, err := ss.srv.opts.Store.Messages(ctx, f.box)
	if err != nil {
		ss.log.Error("imap: status", "mailbox", f.box, "err", err)
		return nil, errUnavailable
	}
	var unseen, deleted, zero uint32
	var size int64
	for _, m := range msgs {
		if !hasFlag(m.Flags, userview.FlagSeen) {
			unseen++
		}
		if hasFlag(m.Flags, userview.FlagDeleted) {
			deleted++
		}
		size += m.Size
	}
	n := uint32(len(msgs))
	data := &goimap.StatusData{
		Mailbox:     f.name,
		NumMessages: &n,
		UIDNext:     goimap.UID(max(info.UIDNext, 1)),
		UIDValidity: uidValidity(info),
		NumUnseen:   &unseen,
		NumDeleted:  &deleted,
		Size:        &size,
		NumRecent:   &zero, // \Recent is not kept (RFC 9051 removed it)
	}
	if options.DeletedStorage {
		var ds int64
		data.DeletedStorage = &ds
	}
	if options.AppendLimit {
		limit := uint32(ss.srv.opts.MaxAppendSize)
		if !f.sent {
			limit = 0 // APPEND to INBOX is refused (RFC 7889 §3)
		}
		data.AppendLimit = &limit
	}
	return data, nil
}

func hasFlag(flags []string, flag string) bool {
	for _, f := range flags {
		if strings.EqualFold(f, flag) {
			return true
		}
	}
	return false
}

// Create refuses: the folder set is fixed.
func (ss *session) Create(name string, _ *goimap.CreateOptions) error {
	return ss.run("CREATE", func(context.Context) error {
		if _, err := ss.folder(name); err == nil {
			return no(goimap.ResponseCodeAlreadyExists, "%s already exists", printable(name))
		}
		return no(goimap.ResponseCodeCannot, "the continuity mailbox has only INBOX and Sent; folders cannot be created")
	})
}

// Delete refuses: the folder set is fixed.
func (ss *session) Delete(name string) error {
	return ss.run("DELETE", func(context.Context) error {
		if _, err := ss.folder(name); err != nil {
			return err
		}
		return no(goimap.ResponseCodeCannot, "the continuity mailbox has only INBOX and Sent; they cannot be deleted")
	})
}

// Rename refuses: the folder set is fixed.
func (ss *session) Rename(oldName, _ string, _ *goimap.RenameOptions) error {
	return ss.run("RENAME", func(context.Context) error {
		if _, err := ss.folder(oldName); err != nil {
			return err
		}
		return no(goimap.ResponseCodeCannot, "the continuity mailbox has only INBOX and Sent; they cannot be renamed")
	})
}

// Subscribe accepts the two folders, which are always subscribed.
func (ss *session) Subscribe(name string) error {
	return ss.run("SUBSCRIBE", func(context.Context) error {
		_, err := ss.folder(name)
		return err
	})
}

// Unsubscribe succeeds without effect: both folders stay subscribed, so that
// clients that list subscribed folders only keep seeing them.
func (ss *session) Unsubscribe(name string) error {
	return ss.run("UNSUBSCRIBE", func(context.Context) error {
		_, err := ss.folder(name)
		return err
	})
}

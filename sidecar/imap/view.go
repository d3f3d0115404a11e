package imap

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// view is a session's selected mailbox: the messages the client knows, in
// sequence-number order (RFC 3501 §2.3.1.2). Sequence numbers are this list's
// indexes plus one; they index nothing but the user's own visible messages,
// and every UID a command names is looked up here, so no number or UID guess
// reaches a message outside the user's view.
type view struct {
	f        folder
	w        *watch
	readOnly bool

	msgs []*vmsg
	info journal.MailboxInfo // the journal's counts at the last refresh
	gen  uint64              // w.gen at the last full refresh

	// searchRes is the saved result of SEARCH RETURN (SAVE) (RFC 5182).
	searchRes goimap.UIDSet
	// keywords announced in the FLAGS response; a new one is announced at the
	// next refresh (RFC 3501 §7.2.6).
	keywords    map[string]bool
	newKeywords bool
	// anyGone: some message may be gone with its EXPUNGE not sent, so that
	// the refresh after every command looks through the messages only then.
	anyGone bool
}

// markGone marks m as gone (see vmsg.gone).
func (v *view) markGone(m *vmsg) {
	m.gone = true
	v.anyGone = true
}

// vmsg is one message of a view.
type vmsg struct {
	uid      uint32
	id       journal.ID
	size     int64
	received time.Time
	flags    []string
	body     journal.BodyRef // where the journal keeps the bytes (item), zero if unknown
	// gone: no longer in the user's view (expunged by another session,
	// swept by retention) and its EXPUNGE not sent yet, because the command
	// in progress forbids it (RFC 3501 §7.4.1). Its data is still served
	// while the journal has it.
	gone bool
}

// item is what the journal needs to open the message.
func (m *vmsg) item() journal.MailboxItem {
	return journal.MailboxItem{UID: m.uid, ID: m.id, Size: m.size, Body: m.body}
}

func newVMsg(m userview.Message) *vmsg {
	return &vmsg{uid: m.UID, id: m.ID, size: m.Size, received: m.Received, flags: m.Flags, body: m.Body}
}

// systemFlags are the flags of every mailbox (RFC 3501 §2.3.2); \Recent is
// not kept.
var systemFlags = []goimap.Flag{goimap.FlagSeen, goimap.FlagAnswered, goimap.FlagFlagged, goimap.FlagDeleted, goimap.FlagDraft}

func (v *view) close() {
	v.w.put()
}

func (v *view) maxUID() uint32 {
	if len(v.msgs) == 0 {
		return 0
	}
	return v.msgs[len(v.msgs)-1].uid
}

// index returns the index of uid, or -1.
func (v *view) index(uid uint32) int {
	i := sort.Search(len(v.msgs), func(i int) bool { return v.msgs[i].uid >= uid })
	if i < len(v.msgs) && v.msgs[i].uid == uid {
		return i
	}
	return -1
}

func (v *view) noteKeywords(flags []string) {
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) && !v.keywords[f] {
			v.keywords[f] = true
			v.newKeywords = true
		}
	}
}

func (v *view) mailboxFlags() []goimap.Flag {
	out := slices.Clone(systemFlags)
	kws := make([]string, 0, len(v.keywords))
	for k := range v.keywords {
		kws = append(kws, k)
	}
	slices.Sort(kws)
	for _, k := range kws {
		out = append(out, goimap.Flag(k))
	}
	return out
}

func toFlags(flags []string) []goimap.Flag {
	out := make([]goimap.Flag, len(flags))
	for i, f := range flags {
		out[i] = goimap.Flag(f)
	}
	return out
}

// Select implements SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2).
func (ss *session) Select(name string, options *goimap.SelectOptions) (*goimap.SelectData, error) {
	var data *goimap.SelectData
	err := ss.run("SELECT", func(ctx context.Context) error {
		if ss.sel != nil {
			ss.sel.close()
			ss.sel = nil
		}
		f, err := ss.folder(name)
		if err != nil {
			return err
		}
		w := ss.srv.watches.get(f.box)
		v := &view{f: f, w: w, readOnly: options.ReadOnly, keywords: map[string]bool{}, gen: w.gen.Load()}
		// The counts first: mail that arrives before the list is read is
		// then found (again) by the next refresh, which skips UIDs it has.
		v.info, err = ss.srv.mailboxInfo(ctx, f.box)
		var msgs []userview.Message
		if err == nil {
			msgs, err = ss.srv.opts.Store.Messages(ctx, f.box)
		}
		if err != nil {
			w.put()
			ss.log.Error("imap: select", "mailbox", f.box, "err", err)
			return errUnavailable
		}
		v.msgs = make([]*vmsg, len(msgs))
		var firstUnseen uint32
		for i, m := range msgs {
			v.msgs[i] = newVMsg(m)
			v.noteKeywords(m.Flags)
			if firstUnseen == 0 && !hasFlag(m.Flags, userview.FlagSeen) {
				firstUnseen = uint32(i + 1)
			}
		}
		v.newKeywords = false
		data = &goimap.SelectData{
			Flags:             v.mailboxFlags(),
			NumMessages:       uint32(len(v.msgs)),
			FirstUnseenSeqNum: firstUnseen,
			UIDNext:           goimap.UID(max(v.info.UIDNext, v.maxUID()+1, 1)),
			UIDValidity:       uidValidity(v.info),
		}
		if !v.readOnly {
			// RFC 3501 §7.1: \* says keywords may be created.
			data.PermanentFlags = append(slices.Clone(systemFlags), goimap.FlagWildcard)
		}
		ss.sel = v
		ss.log.Debug("imap: select", "mailbox", f.box, "messages", len(v.msgs), "read_only", v.readOnly)
		return nil
	})
	return data, err
}

// Unselect implements UNSELECT (RFC 3691) and the end of CLOSE.
func (ss *session) Unselect() error {
	return ss.run("UNSELECT", func(context.Context) error {
		if ss.sel != nil {
			ss.sel.close()
			ss.sel = nil
		}
		return nil
	})
}

// Poll reports what changed in the selected mailbox since the last command:
// the library calls it after every command (RFC 3501 §7: untagged updates).
func (ss *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if !ss.conn.begin(false) {
		return nil // shutting down: the BYE follows
	}
	defer ss.conn.end(false)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.refreshRecovered(w, allowExpunge)
}

func (ss *session) refreshRecovered(w *imapserver.UpdateWriter, allowExpunge bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			ss.srv.metrics.panics.Inc()
			ss.log.Error("imap: panic in refresh", "panic", r, "stack", string(debug.Stack()))
			err = nil
		}
	}()
	return ss.refresh(ss.srv.ctx, w, allowExpunge)
}

// Idle implements IDLE (RFC 2177): new mail, flag changes and expunges are
// pushed while the client waits. The library runs it in its own goroutine and
// closes stop when the client sends DONE.
func (ss *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if !ss.conn.begin(true) {
		return nil
	}
	defer ss.conn.end(true)
	ss.srv.metrics.commands.WithLabelValues("IDLE").Inc()
	ss.mu.Lock()
	v := ss.sel
	ss.mu.Unlock()
	if v == nil {
		// Authenticated state: nothing to report (RFC 2177 §3 allows it).
		select {
		case <-stop:
		case <-ss.srv.done:
		}
		return nil
	}
	wake := v.w.addIdler()
	defer v.w.removeIdler(wake)
	for {
		ss.mu.Lock()
		var err error
		if ss.sel == v {
			err = ss.refreshRecovered(w, true)
		}
		ss.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-wake:
		case <-stop:
			return nil
		case <-ss.srv.done:
			return nil
		}
	}
}

// refresh brings the selected view up to date and writes the untagged
// responses: EXPUNGE (only when allowExpunge), EXISTS, FLAGS for new keywords,
// and FETCH FLAGS for flags changed by other sessions. A journal error is
// logged, not reported: the command itself succeeded.
func (ss *session) refresh(ctx context.Context, w *imapserver.UpdateWriter, allowExpunge bool) error {
	v := ss.sel
	if v == nil {
		return nil
	}
	g := v.w.gen.Load()
	info, err := ss.srv.mailboxInfo(ctx, v.f.box)
	if err != nil {
		ss.log.Warn("imap: refresh", "mailbox", v.f.box, "err", err)
		return nil
	}
	// Anything but new mail at the end (an expunge by another session, a
	// flag change, a retention sweep, the mailbox's creation) needs the whole
	// list: the journal's counts show a removal when its message count grew
	// by less than its UIDNEXT.
	full := g != v.gen || info.UIDValidity != v.info.UIDValidity ||
		int64(info.Messages)-int64(v.info.Messages) != int64(info.UIDNext)-int64(v.info.UIDNext)
	var added []*vmsg
	var changed []uint32 // UIDs whose flags changed
	switch {
	case full:
		msgs, err := ss.srv.opts.Store.Messages(ctx, v.f.box)
		if err != nil {
			ss.log.Warn("imap: refresh", "mailbox", v.f.box, "err", err)
			return nil
		}
		byUID := make(map[uint32]*userview.Message, len(msgs))
		for i := range msgs {
			byUID[msgs[i].UID] = &msgs[i]
		}
		for _, m := range v.msgs {
			fresh, ok := byUID[m.uid]
			if !ok {
				v.markGone(m)
				continue
			}
			if !m.gone && !slices.Equal(fresh.Flags, m.flags) {
				m.flags = fresh.Flags
				v.noteKeywords(m.flags)
				changed = append(changed, m.uid)
			}
		}
		top := v.maxUID()
		for _, m := range msgs {
			if m.UID > top {
				added = append(added, newVMsg(m))
			}
		}
	case info.UIDNext > v.info.UIDNext:
		added, err = ss.newMail(ctx, v)
		if err != nil {
			ss.log.Warn("imap: refresh", "mailbox", v.f.box, "err", err)
			return nil
		}
	}
	v.info, v.gen = info, g

	if allowExpunge && v.anyGone {
		// Highest first, so that every number sent is still valid when the
		// client applies it (RFC 3501 §7.4.1).
		for i := len(v.msgs) - 1; i >= 0; i-- {
			if !v.msgs[i].gone {
				continue
			}
			if err := w.WriteExpunge(uint32(i + 1)); err != nil {
				return err
			}
			v.msgs = slices.Delete(v.msgs, i, i+1)
		}
		v.anyGone = false
	}
	if len(added) > 0 {
		for _, m := range added {
			v.noteKeywords(m.flags)
		}
		v.msgs = append(v.msgs, added...)
		if err := w.WriteNumMessages(uint32(len(v.msgs))); err != nil {
			return err
		}
	}
	if v.newKeywords {
		v.newKeywords = false
		if err := w.WriteMailboxFlags(v.mailboxFlags()); err != nil {
			return err
		}
	}
	for _, uid := range changed {
		if i := v.index(uid); i >= 0 && !v.msgs[i].gone {
			if err := w.WriteMessageFlags(uint32(i+1), goimap.UID(uid), toFlags(v.msgs[i].flags)); err != nil {
				return err
			}
		}
	}
	return nil
}

// newMail lists the messages after the view's last UID, with their flags.
func (ss *session) newMail(ctx context.Context, v *view) ([]*vmsg, error) {
	var items []journal.MailboxItem
	err := ss.srv.opts.Journal.List(ctx, v.f.box, v.maxUID()+1, func(it journal.MailboxItem) error {
		items = append(items, it)
		return nil
	})
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		return nil, err
	}
	var out []*vmsg
	for _, it := range items {
		flags, err := ss.srv.opts.Store.Flags(ctx, v.f.box, it.UID)
		if errors.Is(err, userview.ErrNoMessage) {
			continue // expunged already, by another session
		}
		if err != nil {
			return nil, err
		}
		out = append(out, &vmsg{uid: it.UID, id: it.ID, size: it.Size, received: it.Received, flags: flags, body: it.Body})
	}
	return out, nil
}

// changedBy records a change this view made, without making the view itself
// do a full refresh for it when nothing else changed in between.
func (v *view) changedBy() {
	prev := v.gen
	if g := v.w.changed(); g == prev+1 {
		v.gen = g
	}
}

// resolve turns a command's message set into indexes of v.msgs, ascending.
// Sequence numbers beyond the mailbox are an error (RFC 3501 §9,
// "seq-number"), except through "*"; UIDs that name no message are ignored
// (RFC 3501 §6.4.8).
func (v *view) resolve(set goimap.NumSet) ([]int, error) {
	if goimap.IsSearchRes(set) {
		set = v.searchRes
	}
	n := len(v.msgs)
	// The set as spans of indexes [lo, hi), then their union in order: no
	// pass over the whole mailbox for a command about one message.
	type span struct{ lo, hi int }
	var spans []span
	switch set := set.(type) {
	case goimap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			dynamic := start == 0 || stop == 0
			if start == 0 {
				start = uint32(n)
			}
			if stop == 0 {
				stop = uint32(n)
			}
			if start > stop {
				start, stop = stop, start
			}
			if stop > uint32(n) {
				if !dynamic {
					return nil, bad("message sequence number out of range (mailbox has %d messages)", n)
				}
				stop = uint32(n)
			}
			if stop >= 1 {
				spans = append(spans, span{int(max(start, 1)) - 1, int(stop)})
			}
		}
	case goimap.UIDSet:
		top := v.maxUID()
		for _, r := range set {
			start, stop := uint32(r.Start), uint32(r.Stop)
			if start == 0 {
				start = top
			}
			if stop == 0 {
				stop = top
			}
			if start > stop {
				start, stop = stop, start
			}
			lo := sort.Search(n, func(i int) bool { return v.msgs[i].uid >= start })
			hi := lo + sort.Search(n-lo, func(i int) bool { return v.msgs[lo+i].uid > stop })
			spans = append(spans, span{lo, hi})
		}
	case nil:
	default:
		return nil, bad("unsupported message set")
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo - b.lo })
	var out []int
	next := 0 // indexes below are in out
	for _, sp := range spans {
		for i := max(sp.lo, next); i < sp.hi; i++ {
			out = append(out, i)
		}
		next = max(next, sp.hi)
	}
	return out, nil
}

package webmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// Folders. The inbox is the journal mailbox the Authenticator names; Sent is
// "<mailbox>/Sent", the folder IMAP APPENDs to (sidecar/imap/append.go).
const (
	folderInbox = "inbox"
	folderSent  = "sent"
	sentSuffix  = "/Sent"
)

var errNotFound = errors.New("webmail: no such message")

// box returns the journal mailbox of a folder of the user's, "" for an
// unknown folder.
func box(mailbox, folder string) string {
	switch folder {
	case folderInbox:
		return mailbox
	case folderSent:
		return mailbox + sentSuffix
	}
	return ""
}

// msgRef names a message in URLs: its UID in the user's folder and its
// journal ID. Both must match, so that an id cannot be guessed by counting
// and a swept-and-reused position never shows another message.
type msgRef struct {
	UID uint32
	ID  journal.ID
}

func (r msgRef) String() string { return strconv.FormatUint(uint64(r.UID), 10) + "-" + r.ID.String() }

func parseRef(s string) (msgRef, bool) {
	u, idhex, ok := strings.Cut(s, "-")
	if !ok {
		return msgRef{}, false
	}
	n, err := strconv.ParseUint(u, 10, 32)
	if err != nil || n == 0 {
		return msgRef{}, false
	}
	id, err := journal.ParseID(idhex)
	if err != nil {
		return msgRef{}, false
	}
	return msgRef{UID: uint32(n), ID: id}, true
}

var errStop = errors.New("stop")

// resolve finds a message in the user's own folder: errNotFound unless the
// journal lists ref.UID in that folder with ref.ID and the user has not
// deleted it. This is the isolation check of every message URL.
func (s *Server) resolve(ctx context.Context, jbox string, ref msgRef) (userview.Message, error) {
	var m userview.Message
	found := false
	err := s.opts.Journal.List(ctx, jbox, ref.UID, func(it journal.MailboxItem) error {
		if it.UID == ref.UID && it.ID == ref.ID {
			found = true
			m = userview.Message{UID: it.UID, ID: it.ID, Size: it.Size, Received: it.Received}
		}
		return errStop
	})
	if errors.Is(err, journal.ErrNotFound) || err == nil && !found || errors.Is(err, errStop) && !found {
		return m, errNotFound
	}
	if err != nil && !errors.Is(err, errStop) {
		return m, fmt.Errorf("list %q: %w", jbox, err)
	}
	flags, err := s.opts.Store.Flags(ctx, jbox, ref.UID)
	if errors.Is(err, userview.ErrNoMessage) {
		return m, errNotFound
	}
	if err != nil {
		return m, err
	}
	m.Flags = flags
	return m, nil
}

// summary is what the list and the search need of one message. Messages never
// change, so summaries are cached by journal ID.
type summary struct {
	From      string // display: the name, or the address
	FromAddr  string
	Subject   string
	Date      time.Time // the Date field; zero when missing
	Attach    bool
	fromLower string // names and addresses, lower case, for search
	rcptLower string // To and Cc
	subjLower string
}

// summaryCache keeps two generations: when the current one is full it
// becomes the old one, so the most recently used stay and memory is bounded.
type summaryCache struct {
	mu       sync.Mutex
	cur, old map[journal.ID]*summary
	limit    int
}

func newSummaryCache(limit int) *summaryCache {
	return &summaryCache{cur: map[journal.ID]*summary{}, old: map[journal.ID]*summary{}, limit: limit}
}

func (c *summaryCache) get(id journal.ID) *summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.cur[id]; ok {
		return s
	}
	if s, ok := c.old[id]; ok {
		c.putLocked(id, s)
		return s
	}
	return nil
}

func (c *summaryCache) put(id journal.ID, s *summary) {
	c.mu.Lock()
	c.putLocked(id, s)
	c.mu.Unlock()
}

func (c *summaryCache) putLocked(id journal.ID, s *summary) {
	if len(c.cur) >= c.limit {
		c.old, c.cur = c.cur, make(map[journal.ID]*summary, c.limit)
	}
	c.cur[id] = s
}

// structure returns a message's MIME structure: the one the journal stored,
// or parsed now for a message journaled before structures were stored.
func (s *Server) structure(ctx context.Context, id journal.ID) (*mimestruct.Info, error) {
	info, err := s.opts.Journal.Structure(ctx, id)
	if err == nil {
		return info, nil
	}
	if !errors.Is(err, journal.ErrNotFound) {
		return nil, err
	}
	rc, err := s.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err = mimestruct.Parse(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return info, err
}

func (s *Server) summary(ctx context.Context, id journal.ID) (*summary, error) {
	if sm := s.cache.get(id); sm != nil {
		return sm, nil
	}
	info, err := s.structure(ctx, id)
	if err != nil {
		return nil, err
	}
	env := &info.Envelope
	sm := &summary{Subject: env.Subject, Date: env.Date, Attach: hasAttachment(&info.Body, true)}
	if len(env.From) > 0 {
		sm.FromAddr = addrString(env.From[0])
		sm.From = env.From[0].Name
		if sm.From == "" {
			sm.From = sm.FromAddr
		}
	}
	sm.fromLower = strings.ToLower(addrsText(env.From))
	sm.rcptLower = strings.ToLower(addrsText(env.To) + " " + addrsText(env.Cc))
	sm.subjLower = strings.ToLower(env.Subject)
	s.cache.put(id, sm)
	return sm, nil
}

func addrString(a mimestruct.Address) string {
	if a.Host == "" {
		return a.Mailbox
	}
	return a.Mailbox + "@" + a.Host
}

func addrsText(l []mimestruct.Address) string {
	var b strings.Builder
	for _, a := range l {
		if a.Host == "" {
			continue // group start or end
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if a.Name != "" {
			b.WriteString(a.Name)
			b.WriteString(" ")
		}
		b.WriteString("<" + addrString(a) + ">")
	}
	return b.String()
}

// hasAttachment reports whether a message has a part a mail program would
// list as an attachment: one marked so (RFC 2183), one with a file name, or
// an embedded message. Inline images referenced from HTML (a Content-ID and
// no attachment disposition) are not.
func hasAttachment(p *mimestruct.Part, top bool) bool {
	if p.IsMultipart() {
		for i := range p.Children {
			if hasAttachment(&p.Children[i], false) {
				return true
			}
		}
		return false
	}
	if top {
		return p.Type != "text" // a message that is a PDF, say, is an attachment
	}
	if p.Disposition == "attachment" || p.IsMessage() {
		return true
	}
	if p.DispositionParams["filename"] != "" || p.Params["name"] != "" {
		return p.Disposition != "inline" || p.ID == ""
	}
	return false
}

// budgetReader reads from r until left runs out, then fails: a text search
// reads at most SearchMaxBytes of messages.
type budgetReader struct {
	r    io.Reader
	left *int64
}

var errBudget = errors.New("webmail: search byte budget exhausted")

func (b *budgetReader) Read(p []byte) (int, error) {
	if *b.left <= 0 {
		return 0, errBudget
	}
	if int64(len(p)) > *b.left {
		p = p[:*b.left]
	}
	n, err := b.r.Read(p)
	*b.left -= int64(n)
	return n, err
}

package imap

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	goimap "github.com/emersion/go-imap/v2"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// structure returns a message's MIME structure: the one the journal stored at
// append time, or, for a message journaled before the journal stored them,
// one parsed from the message and kept in a small LRU cache. It returns
// journal.ErrNotFound when the message itself is gone.
func (s *Server) structure(ctx context.Context, id journal.ID) (*mimestruct.Info, error) {
	info, err := s.opts.Journal.Structure(ctx, id)
	if err == nil && info != nil {
		return info, nil
	}
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		return nil, fmt.Errorf("structure of %s: %w", id, err)
	}
	if info := s.structs.get(id); info != nil {
		return info, nil
	}
	rc, err := s.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	info, err = mimestruct.Parse(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", id, err)
	}
	s.structs.put(id, info)
	return info, nil
}

// structCache is a least-recently-used cache of parsed structures.
type structCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *structEntry, most recent first
	m   map[journal.ID]*list.Element
}

type structEntry struct {
	id   journal.ID
	info *mimestruct.Info
}

func newStructCache(n int) *structCache {
	return &structCache{max: n, ll: list.New(), m: map[journal.ID]*list.Element{}}
}

func (c *structCache) get(id journal.ID) *mimestruct.Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*structEntry).info
	}
	return nil
}

func (c *structCache) put(id journal.ID, info *mimestruct.Info) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		e.Value.(*structEntry).info = info
		c.ll.MoveToFront(e)
		return
	}
	c.m[id] = c.ll.PushFront(&structEntry{id: id, info: info})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*structEntry).id)
	}
}

// toEnvelope converts a parsed envelope (RFC 3501 §7.4.2). mimestruct keeps
// groups as the start and end markers the library writes as RFC 3501 group
// syntax, and gives message ids without angle brackets, as the library wants.
func toEnvelope(e *mimestruct.Envelope) *goimap.Envelope {
	if e == nil {
		return &goimap.Envelope{}
	}
	return &goimap.Envelope{
		Date:      e.Date,
		Subject:   e.Subject,
		From:      toAddresses(e.From),
		Sender:    toAddresses(e.Sender),
		ReplyTo:   toAddresses(e.ReplyTo),
		To:        toAddresses(e.To),
		Cc:        toAddresses(e.Cc),
		Bcc:       toAddresses(e.Bcc),
		InReplyTo: trimIDs(e.InReplyTo),
		MessageID: trimID(e.MessageID),
	}
}

func trimID(s string) string { return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">") }

func trimIDs(ids []string) []string {
	var out []string
	for _, id := range ids {
		if id = trimID(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

func toAddresses(as []mimestruct.Address) []goimap.Address {
	if len(as) == 0 {
		return nil
	}
	out := make([]goimap.Address, len(as))
	for i, a := range as {
		out[i] = goimap.Address{Name: a.Name, Mailbox: a.Mailbox, Host: a.Host}
	}
	return out
}

// toBodyStructure converts a parsed part into BODYSTRUCTURE (RFC 3501
// §7.4.2), always with the extension data, which BODY leaves out. It never
// produces what the library cannot write: a multipart without parts (the
// library panics) or a message/rfc822 without its envelope and body.
func toBodyStructure(p *mimestruct.Part) goimap.BodyStructure {
	if p.IsMultipart() {
		mp := &goimap.BodyStructureMultiPart{
			Subtype: nonEmpty(p.Subtype, "mixed"),
			Extended: &goimap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: disposition(p),
				Language:    p.Language,
				Location:    p.Location,
			},
		}
		for i := range p.Children {
			mp.Children = append(mp.Children, toBodyStructure(&p.Children[i]))
		}
		return mp
	}
	typ, sub := nonEmpty(p.Type, "text"), nonEmpty(p.Subtype, "plain")
	isMsg := typ == "message" && (sub == "rfc822" || sub == "global")
	switch {
	case typ == "multipart":
		typ, sub = "text", "plain" // RFC 2045 §5.2's default for a broken multipart
	case isMsg && !p.IsMessage():
		typ, sub = "application", "octet-stream"
		isMsg = false
	}
	sp := &goimap.BodyStructureSinglePart{
		Type:        typ,
		Subtype:     sub,
		Params:      p.Params,
		ID:          p.ID,
		Description: p.Description,
		Encoding:    nonEmpty(p.Encoding, "7bit"),
		Size:        clamp32(p.Size),
		Extended: &goimap.BodyStructureSinglePartExt{
			Disposition: disposition(p),
			Language:    p.Language,
			Location:    p.Location,
		},
	}
	switch {
	case isMsg:
		sp.MessageRFC822 = &goimap.BodyStructureMessageRFC822{
			Envelope:      toEnvelope(p.Message),
			BodyStructure: toBodyStructure(&p.Children[0]),
			NumLines:      p.Lines,
		}
	case typ == "text":
		sp.Text = &goimap.BodyStructureText{NumLines: p.Lines}
	}
	return sp
}

func disposition(p *mimestruct.Part) *goimap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &goimap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func clamp32(n int64) uint32 {
	return uint32(min(max(n, 0), 1<<32-1))
}

// partAt returns the part that a section's part numbers name (RFC 3501
// §6.4.5): the n-th part of a multipart; for a message/rfc822 part, the parts
// of the message it encapsulates; "1" of anything else is that thing itself
// (a message that is not multipart has part 1, its body).
func partAt(root *mimestruct.Part, path []int) (*mimestruct.Part, bool) {
	cur := root
	for k, n := range path {
		body := cur
		if k > 0 && cur.IsMessage() {
			body = &cur.Children[0]
		}
		switch {
		case body.IsMultipart():
			if n < 1 || n > len(body.Children) {
				return nil, false
			}
			cur = &body.Children[n-1]
		case n == 1:
			cur = body
		default:
			return nil, false
		}
	}
	return cur, true
}

// discard skips n bytes of r.
func discard(r io.Reader, n int64) error {
	if n <= 0 {
		return nil
	}
	m, err := io.CopyN(io.Discard, r, n)
	if err == io.EOF || m < n && err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

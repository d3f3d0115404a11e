package imap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// Fetch implements FETCH and UID FETCH (RFC 3501 §6.4.5, RFC 9051 §6.4.5).
//
// FLAGS, UID, INTERNALDATE and RFC822.SIZE come from the session's view, so a
// reconnecting client's UID FETCH 1:* (FLAGS) costs no message read.
// ENVELOPE and BODYSTRUCTURE come from the MIME structure the journal stored
// (package mimestruct). Body sections are streamed from the journal with the
// exact size announced before the literal: BODY[] of a 50 MB message never
// sits in memory, and a section of a part is found by the structure's byte
// offsets. In a FETCH of several messages, those of at most prefetchMax
// bytes are read ahead, whole, in batches, while the ones before are written
// (prefetch.go).
// Messages are sent as stored, so RFC822.SIZE and BODY[] agree with each
// other and with the journal, bare LF line ends included.
//
// A message that retention swept meanwhile is left out of the response, and
// the command ends in NO [EXPUNGEISSUED] (RFC 9051 §7.1); its EXPUNGE follows.
func (ss *session) Fetch(w *imapserver.FetchWriter, set goimap.NumSet, options *goimap.FetchOptions) error {
	return ss.run("FETCH", func(ctx context.Context) error {
		v, err := ss.selected()
		if err != nil {
			return err
		}
		idx, err := v.resolve(set)
		if err != nil {
			return err
		}
		// RFC 3501 §6.4.5: BODY[...] (not .PEEK), RFC822, RFC822.TEXT and
		// BINARY[...] set \Seen, except in a read-only mailbox.
		markSeen := false
		for _, s := range options.BodySection {
			markSeen = markSeen || !s.Peek
		}
		for _, s := range options.BinarySection {
			markSeen = markSeen || !s.Peek
		}
		markSeen = markSeen && !v.readOnly
		f := &fetcher{ss: ss, v: v, options: options, markSeen: markSeen}
		// The responses go out in large writes; the last ones before the
		// command returns, ahead of its completion.
		ss.conn.cork()
		defer func() {
			if err := ss.conn.uncork(); err != nil {
				ss.log.Debug("imap: fetch: write", "err", err)
			}
		}()
		if len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
			items := make([]journal.MailboxItem, len(idx))
			for k, i := range idx {
				items[k] = v.msgs[i].item()
			}
			f.pf = newPrefetcher(ctx, ss, items)
			defer f.pf.stop()
		}
		for k, i := range idx {
			f.ahead, f.aheadID = f.pf.get(k), v.msgs[i].id
			err := f.message(ctx, w, i)
			f.ahead = nil
			if err != nil {
				return err
			}
		}
		if f.seen {
			v.changedBy()
		}
		if f.failed != nil {
			return f.failed
		}
		if f.missing {
			return no("EXPUNGEISSUED", "some messages were removed by retention meanwhile")
		}
		return nil
	})
}

// fetcher is one FETCH command in progress.
type fetcher struct {
	ss       *session
	v        *view
	options  *goimap.FetchOptions
	markSeen bool

	pf      *prefetcher // nil when no message is read ahead
	ahead   []byte      // the current message read ahead, or nil
	aheadID journal.ID

	seen    bool  // \Seen was set on some message
	missing bool  // some message is no longer in the journal
	failed  error // a message could not be read completely; reported at the end
}

// plan is what one body or binary section will send: bytes computed here
// (a filtered header), or a span of the raw message, decoded for BINARY.
type plan struct {
	data   []byte
	start  int64 // span of the raw message, when data is nil
	end    int64
	decode string // BINARY: the transfer encoding to remove
	skip   int64  // BINARY partial: decoded bytes to skip
	size   int64  // bytes the literal holds
}

// msgData is what the sections of one message share: its structure and its
// top-level header, each read at most once.
type msgData struct {
	m         *vmsg
	info      *mimestruct.Info
	hdrEnd    int64
	hdr       []byte
	hdrLoaded bool

	// decoded holds the decoded size of each part decoded so far, by part
	// path: a FETCH may name one part in any number of BINARY and
	// BINARY.SIZE items, and each decoding reads the whole part.
	decoded map[string]int64
}

// message fetches one message. A journal error ends the command; a message
// that is gone is skipped.
func (f *fetcher) message(ctx context.Context, w *imapserver.FetchWriter, i int) error {
	ss, v, o := f.ss, f.v, f.options
	m := v.msgs[i]
	setSeen := false
	if f.markSeen && !m.gone && !hasFlag(m.flags, userview.FlagSeen) {
		flags, err := ss.srv.opts.Store.AddFlags(ctx, v.f.box, m.uid, []string{userview.FlagSeen})
		switch {
		case errors.Is(err, userview.ErrNoMessage):
			v.markGone(m) // expunged by another session: served all the same
		case err != nil:
			ss.log.Warn("imap: set \\Seen", "mailbox", v.f.box, "uid", m.uid, "err", err)
		default:
			m.flags, setSeen, f.seen = flags, true, true
		}
	}

	// Everything that reads the journal, except the streaming of spans, is
	// done before the response starts, so that an error or a malformed
	// message can still be answered cleanly.
	md := &msgData{m: m}
	needInfo := o.Envelope || o.BodyStructure != nil || len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0
	for _, s := range o.BodySection {
		needInfo = needInfo || len(s.Part) > 0
	}
	if needInfo {
		info, err := ss.srv.structure(ctx, m.id)
		if err != nil {
			return f.readError(m, err)
		}
		md.info = info
	}
	bodies := make([]plan, len(o.BodySection))
	for k, s := range o.BodySection {
		p, err := f.planBody(ctx, md, s)
		if err != nil {
			return f.readError(m, err)
		}
		bodies[k] = p
	}
	binaries := make([]plan, len(o.BinarySection))
	for k, s := range o.BinarySection {
		p, err := f.planBinary(ctx, md, s.Part, s.Partial)
		if err != nil {
			return f.readError(m, err)
		}
		binaries[k] = p
	}
	binSizes := make([]int64, len(o.BinarySectionSize))
	for k, s := range o.BinarySectionSize {
		p, err := f.planBinary(ctx, md, s.Part, nil)
		if err != nil {
			return f.readError(m, err)
		}
		binSizes[k] = p.size
	}
	var env *goimap.Envelope
	var bs goimap.BodyStructure
	if o.Envelope {
		env = toEnvelope(&md.info.Envelope)
	}
	if o.BodyStructure != nil {
		bs = toBodyStructure(&md.info.Body)
	}

	rw := w.CreateMessage(uint32(i + 1))
	return f.write(rw, func() error {
		if o.UID {
			rw.WriteUID(goimap.UID(m.uid))
		}
		if o.Flags || setSeen {
			rw.WriteFlags(toFlags(m.flags))
		}
		if o.InternalDate {
			// In the server's zone, as SEARCH SINCE/BEFORE compare it.
			rw.WriteInternalDate(m.received.In(time.Local))
		}
		if o.RFC822Size {
			rw.WriteRFC822Size(m.size)
		}
		if env != nil {
			rw.WriteEnvelope(env)
		}
		if bs != nil {
			rw.WriteBodyStructure(bs)
		}
		for k, s := range o.BodySection {
			lw := rw.WriteBodySection(s, bodies[k].size)
			if err := f.stream(ctx, lw, m, bodies[k]); err != nil {
				return err
			}
		}
		for k, s := range o.BinarySection {
			lw := rw.WriteBinarySection(s, binaries[k].size)
			if err := f.stream(ctx, lw, m, binaries[k]); err != nil {
				return err
			}
		}
		for k, s := range o.BinarySectionSize {
			rw.WriteBinarySectionSize(s, clamp32(binSizes[k]))
		}
		return nil
	})
}

// readError handles a failure to read a message before its response started.
func (f *fetcher) readError(m *vmsg, err error) error {
	var ie *goimap.Error
	if errors.As(err, &ie) {
		return err
	}
	if errors.Is(err, journal.ErrNotFound) {
		f.v.markGone(m)
		f.missing = true
		return nil
	}
	f.ss.log.Error("imap: fetch", "mailbox", f.v.f.box, "uid", m.uid, "err", err)
	return errUnavailable
}

// write runs the writing of one FETCH response. The library holds its write
// lock from CreateMessage to Close: a panic in between must still close the
// response, and then ends the connection, whose byte stream may be cut in a
// literal.
func (f *fetcher) write(rw *imapserver.FetchResponseWriter, fn func() error) (err error) {
	closed := false
	defer func() {
		if r := recover(); r != nil {
			if !closed {
				func() {
					defer func() { _ = recover() }()
					_ = rw.Close()
				}()
			}
			if cerr := f.ss.conn.Conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				f.ss.log.Debug("imap: close", "err", cerr)
			}
			panic(r)
		}
	}()
	err = fn()
	closed = true
	if cerr := rw.Close(); err == nil {
		err = cerr
	}
	return err
}

// header loads the message's top-level header section once.
func (f *fetcher) header(ctx context.Context, md *msgData) error {
	if md.hdrLoaded {
		return nil
	}
	rc, err := f.open(ctx, md.m)
	if err != nil {
		return err
	}
	md.hdrEnd, md.hdr, err = readHeader(bufio.NewReaderSize(rc, 32<<10))
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("reading header: %w", err)
	}
	md.hdrLoaded = true
	return nil
}

// readSpan reads up to limit bytes of [start, end) of the message.
func (f *fetcher) readSpan(ctx context.Context, m *vmsg, start, end, limit int64) ([]byte, error) {
	rc, err := f.open(ctx, m)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if err := discard(rc, start); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(rc, min(end-start, limit)))
}

// planBody works out a BODY[section]<partial> (RFC 3501 §6.4.5). A part that
// does not exist, or HEADER/TEXT of a part that is not a message, is the empty
// string, as Dovecot answers.
func (f *fetcher) planBody(ctx context.Context, md *msgData, s *goimap.FetchItemBodySection) (plan, error) {
	var p plan
	fields := len(s.HeaderFields) > 0 || len(s.HeaderFieldsNot) > 0
	if len(s.Part) == 0 {
		switch s.Specifier {
		case goimap.PartSpecifierNone:
			p.start, p.end = 0, md.m.size
		case goimap.PartSpecifierHeader, goimap.PartSpecifierText:
			if md.info != nil && !fields {
				md.hdrEnd = md.info.Body.BodyStart
			} else if err := f.header(ctx, md); err != nil {
				return p, err
			}
			switch {
			case fields:
				p.data = fieldsOf(md.hdr, s)
			case s.Specifier == goimap.PartSpecifierHeader:
				p.start, p.end = 0, md.hdrEnd
			default:
				p.start, p.end = md.hdrEnd, md.m.size
			}
		}
		// MIME needs a part number; without one it is empty.
	} else if part, ok := partAt(&md.info.Body, s.Part); ok {
		switch s.Specifier {
		case goimap.PartSpecifierNone:
			p.start, p.end = part.BodyStart, part.End
		case goimap.PartSpecifierMIME:
			p.start, p.end = part.HeaderStart, part.BodyStart
		default: // HEADER, HEADER.FIELDS[.NOT], TEXT of an encapsulated message
			if part.IsMessage() {
				e := &part.Children[0]
				switch {
				case fields:
					h, err := f.readSpan(ctx, md.m, e.HeaderStart, e.BodyStart, maxHeaderKept)
					if err != nil {
						return p, err
					}
					p.data = fieldsOf(h, s)
				case s.Specifier == goimap.PartSpecifierHeader:
					p.start, p.end = e.HeaderStart, e.BodyStart
				default:
					p.start, p.end = e.BodyStart, e.End
				}
			}
		}
	}
	if p.data == nil && p.end < p.start {
		p.end = p.start
	}
	if p.data != nil {
		p.data = partialBytes(p.data, s.Partial)
		p.size = int64(len(p.data))
		if p.data == nil {
			p.data = []byte{}
		}
		return p, nil
	}
	if s.Partial != nil {
		p.start = min(p.start+s.Partial.Offset, p.end)
		p.end = min(p.end, p.start+s.Partial.Size)
	}
	p.size = p.end - p.start
	return p, nil
}

// fieldsOf is HEADER.FIELDS or HEADER.FIELDS.NOT of a raw header.
func fieldsOf(h []byte, s *goimap.FetchItemBodySection) []byte {
	if len(s.HeaderFieldsNot) > 0 {
		return filterHeader(h, s.HeaderFieldsNot, true)
	}
	return filterHeader(h, s.HeaderFields, false)
}

func partialBytes(b []byte, partial *goimap.SectionPartial) []byte {
	if partial == nil {
		return b
	}
	if partial.Offset >= int64(len(b)) {
		return nil
	}
	b = b[partial.Offset:]
	return b[:min(int64(len(b)), partial.Size)]
}

// planBinary works out a BINARY[part]<partial> (RFC 3516 §4.2): the part's
// body with its transfer encoding removed. An empty part path is the whole
// message as stored; a multipart or a message/rfc822 part is its body as
// stored (they have no transfer encoding of their own to remove).
func (f *fetcher) planBinary(ctx context.Context, md *msgData, path []int, partial *goimap.SectionPartial) (plan, error) {
	var p plan
	if len(path) == 0 {
		p.start, p.end = 0, md.m.size
	} else if part, ok := partAt(&md.info.Body, path); ok {
		p.start, p.end = part.BodyStart, part.End
		if !part.IsMultipart() && !part.IsMessage() {
			p.decode = part.Encoding
			if _, ok := decodeTransfer(p.decode, nil); !ok {
				return p, no(goimap.ResponseCodeUnknownCTE, "cannot decode content-transfer-encoding %q", printable(p.decode))
			}
		}
	}
	size := p.end - p.start
	if p.decode != "" && p.decode != "7bit" && p.decode != "8bit" && p.decode != "binary" {
		// The literal's size must be known before it is sent: decode once
		// to count, once per part and message.
		key := fmt.Sprint(path)
		if n, ok := md.decoded[key]; ok {
			size = n
		} else {
			n, err := f.decodedSize(ctx, md.m, p)
			if err != nil {
				return p, err
			}
			if md.decoded == nil {
				md.decoded = map[string]int64{}
			}
			md.decoded[key], size = n, n
		}
	} else {
		p.decode = ""
	}
	if partial != nil {
		p.skip = min(partial.Offset, size)
		size = min(size-p.skip, partial.Size)
		if p.decode == "" {
			// Nothing to decode: the partial's offset is an offset into
			// the stored bytes (RFC 3516 §4.2 with an identity encoding).
			p.start += p.skip
			p.skip = 0
		}
	}
	p.size = size
	return p, nil
}

// decodedSize decodes a planned section's span to count its bytes.
func (f *fetcher) decodedSize(ctx context.Context, m *vmsg, p plan) (int64, error) {
	rc, err := f.open(ctx, m)
	if err != nil {
		return 0, err
	}
	if err := discard(rc, p.start); err != nil {
		rc.Close()
		return 0, err
	}
	dec, _ := decodeTransfer(p.decode, io.LimitReader(rc, p.end-p.start))
	n, err := io.Copy(io.Discard, dec)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("decoding: %w", err)
	}
	return n, nil
}

// stream writes a planned section into its literal. When the journal fails
// midway, the literal is filled up with spaces to the size announced, so that
// the connection stays usable, and the command ends in NO.
func (f *fetcher) stream(ctx context.Context, lw io.WriteCloser, m *vmsg, p plan) error {
	cw := &countingWriter{w: lw}
	var err error
	if p.data != nil {
		_, err = cw.Write(p.data)
	} else if p.size > 0 {
		err = f.copySpan(ctx, cw, m, p)
	}
	var ne net.Error
	if err != nil && (errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || cw.werr != nil) {
		return err // the client is gone
	}
	if err != nil {
		f.ss.log.Error("imap: fetch: reading message", "mailbox", f.v.f.box, "uid", m.uid, "err", err)
		f.failed = errUnavailable
		if perr := pad(cw, p.size-cw.n); perr != nil {
			return perr
		}
	}
	return lw.Close()
}

func (f *fetcher) copySpan(ctx context.Context, w io.Writer, m *vmsg, p plan) error {
	if b := f.aheadBytes(m.id); b != nil && p.decode == "" && p.end <= int64(len(b)) && p.size == p.end-p.start {
		_, err := w.Write(b[p.start:p.end])
		return err
	}
	rc, err := f.open(ctx, m)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := discard(rc, p.start); err != nil {
		return err
	}
	var r io.Reader = io.LimitReader(rc, p.end-p.start)
	if p.decode != "" {
		r, _ = decodeTransfer(p.decode, r)
		if err := discard(r, p.skip); err != nil {
			return err
		}
	}
	// io.CopyN through a LimitReader would allocate its buffer every time.
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(w, io.LimitReader(r, p.size), *bp)
	copyBufs.Put(bp)
	if err == nil && n < p.size {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// countingWriter counts what was written and remembers a write error, which
// means the client connection failed.
type countingWriter struct {
	w    io.Writer
	n    int64
	werr error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.werr = err
	}
	return n, err
}

func pad(w io.Writer, n int64) error {
	var spaces [512]byte
	for i := range spaces {
		spaces[i] = ' '
	}
	for n > 0 {
		k := min(n, int64(len(spaces)))
		if _, err := w.Write(spaces[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

package imap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/lifelinemail/lifeline/internal/headerlimit"
	"github.com/lifelinemail/lifeline/journal"
)

// Search implements SEARCH and UID SEARCH (RFC 3501 §6.4.4) with ESEARCH
// (RFC 4731) and SEARCHRES (RFC 5182).
//
// Criteria are evaluated cheapest first, per message, so that a message is
// read only when flags, sizes, dates and the stored header summary have not
// decided already: flags, UIDs, sizes and INTERNALDATE come from the view;
// SENTBEFORE/SENTON/SENTSINCE, FROM, TO, CC, SUBJECT and HEADER Message-ID
// from the journal's summary; any other HEADER from the message's header
// section; BODY and TEXT stream the message once through a reader that
// decodes quoted-printable and base64 text parts and their charsets (RFC 2047
// encoded words in header fields too). Matching is case-insensitive (RFC
// 3501 §6.4.4: Unicode lower case here). Only text/* parts (and the header
// fields of embedded messages) are searched, not attachments.
//
// One SEARCH reads at most Options.SearchMaxBytes of messages; when it would
// read more it stops and answers NO [LIMIT] (RFC 5530 §3), rather than a
// result that silently misses messages. Narrowing criteria (SINCE, FROM)
// evaluated first keep most searches far below the limit.
func (ss *session) Search(kind imapserver.NumKind, criteria *goimap.SearchCriteria, options *goimap.SearchOptions) (*goimap.SearchData, error) {
	var data *goimap.SearchData
	err := ss.run("SEARCH", func(ctx context.Context) error {
		v, err := ss.selected()
		if err != nil {
			return err
		}
		// RFC 9051 §7.1 (LIMIT, from RFC 5530 §3): refused before any
		// message is read.
		if n, size := countTextKeys(criteria); n > maxSearchTextKeys || size > maxSearchTextBytes {
			return no(goimap.ResponseCodeLimit, "SEARCH looks for %d strings of %d bytes; at most %d strings of %d KB", n, size, maxSearchTextKeys, maxSearchTextBytes>>10)
		}
		s := &searcher{ss: ss, v: v, words: newWordDecoder()}
		if ss.srv.opts.SearchMaxBytes > 0 {
			left := ss.srv.opts.SearchMaxBytes
			s.left = &left
		}
		s.collect(criteria)
		var seqs goimap.SeqSet
		var uids goimap.UIDSet
		data = &goimap.SearchData{}
		for i, m := range v.msgs {
			if m.gone {
				continue
			}
			c := &candidate{seq: uint32(i + 1), m: m}
			ok, err := s.match(ctx, c, criteria)
			if errors.Is(err, errSearchLimit) {
				return no(goimap.ResponseCodeLimit, "SEARCH would read more than %d MB of messages; narrow it (SINCE, FROM, SUBJECT)", ss.srv.opts.SearchMaxBytes>>20)
			}
			if errors.Is(err, journal.ErrNotFound) {
				v.markGone(m) // swept by retention meanwhile
				continue
			}
			if err != nil {
				ss.log.Error("imap: search", "mailbox", v.f.box, "uid", m.uid, "err", err)
				return errUnavailable
			}
			if !ok {
				continue
			}
			num := c.seq
			if kind == imapserver.NumKindUID {
				num = m.uid
			}
			seqs.AddNum(c.seq)
			uids.AddNum(goimap.UID(m.uid))
			if data.Min == 0 || num < data.Min {
				data.Min = num
			}
			data.Max = max(data.Max, num)
			data.Count++
		}
		data.All = seqs
		if kind == imapserver.NumKindUID {
			data.All = uids
		}
		if options.ReturnSave {
			v.searchRes = uids
		}
		return nil
	})
	return data, err
}

// Bounds on the strings one SEARCH looks for (BODY, TEXT and HEADER values,
// FROM, TO and the like included, at any depth of NOT and OR). Each costs a
// pass over every message read, so the byte budget alone would let a few
// thousand strings cost minutes of CPU; real clients send a handful. (go-imap
// reads commands of up to 50 KiB, literals of up to 4 KiB.)
const (
	maxSearchTextKeys  = 64
	maxSearchTextBytes = 16 << 10
)

// errSearchLimit stops a SEARCH that reached Options.SearchMaxBytes.
var errSearchLimit = errors.New("search byte limit reached")

// searcher is one SEARCH command in progress.
type searcher struct {
	ss    *session
	v     *view
	words *mime.WordDecoder
	left  *int64 // bytes SEARCH may still read; nil: no limit

	// Every BODY and TEXT string of the criteria, lower-cased: one pass
	// over a message answers them all.
	body, text []string
}

// candidate is one message under evaluation, with what was read of it.
type candidate struct {
	seq uint32
	m   *vmsg

	entry     *journal.Entry
	fields    []headerField
	hdrLoaded bool
	scanned   bool
	bodyFound map[string]bool
	textFound map[string]bool
}

// countTextKeys counts the strings the criteria look for, at any depth, and
// their bytes. Every occurrence counts, repeated or not: each is evaluated.
func countTextKeys(c *goimap.SearchCriteria) (n, size int) {
	n = len(c.Body) + len(c.Text) + len(c.Header)
	for _, b := range c.Body {
		size += len(b)
	}
	for _, t := range c.Text {
		size += len(t)
	}
	for _, h := range c.Header {
		size += len(h.Key) + len(h.Value)
	}
	add := func(c *goimap.SearchCriteria) {
		k, sz := countTextKeys(c)
		n, size = n+k, size+sz
	}
	for i := range c.Not {
		add(&c.Not[i])
	}
	for i := range c.Or {
		add(&c.Or[i][0])
		add(&c.Or[i][1])
	}
	return n, size
}

// collect gathers the BODY and TEXT strings, each once: a repeated string
// would only cost its matcher's pass again.
func (s *searcher) collect(c *goimap.SearchCriteria) {
	for _, b := range c.Body {
		s.body = appendNew(s.body, lower(b))
	}
	for _, t := range c.Text {
		s.text = appendNew(s.text, lower(t))
	}
	for i := range c.Not {
		s.collect(&c.Not[i])
	}
	for i := range c.Or {
		s.collect(&c.Or[i][0])
		s.collect(&c.Or[i][1])
	}
}

func lower(s string) string { return strings.ToLower(s) }

// appendNew appends v to list unless list holds it already.
func appendNew(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

// match evaluates the criteria on one message, cheapest criteria first.
func (s *searcher) match(ctx context.Context, c *candidate, cr *goimap.SearchCriteria) (bool, error) {
	m := c.m
	for _, set := range cr.SeqNum {
		if !seqContains(set, c.seq, uint32(len(s.v.msgs))) {
			return false, nil
		}
	}
	for _, set := range cr.UID {
		if !s.uidContains(set, m.uid) {
			return false, nil
		}
	}
	for _, f := range cr.Flag {
		if !hasFlag(m.flags, string(f)) { // \Recent is never set
			return false, nil
		}
	}
	for _, f := range cr.NotFlag {
		if hasFlag(m.flags, string(f)) {
			return false, nil
		}
	}
	if cr.Larger > 0 && m.size <= cr.Larger || cr.Smaller > 0 && m.size >= cr.Smaller {
		return false, nil
	}
	// RFC 3501 §6.4.4: dates compare "disregarding time and timezone".
	if !cr.Since.IsZero() || !cr.Before.IsZero() {
		if !dateIn(m.received.In(time.Local), cr.Since, cr.Before) {
			return false, nil
		}
	}
	if !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
		e, err := s.entry(ctx, c)
		if err != nil {
			return false, err
		}
		sent, err := mail.ParseDate(e.Summary.Date)
		if err != nil {
			sent = m.received.In(time.Local) // no usable Date: as Dovecot, the internal date
		}
		if !dateIn(sent, cr.SentSince, cr.SentBefore) {
			return false, nil
		}
	}
	for _, h := range cr.Header {
		ok, err := s.header(ctx, c, h)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, n := range cr.Not {
		ok, err := s.match(ctx, c, &n)
		if err != nil || ok {
			return false, err
		}
	}
	for _, or := range cr.Or {
		ok, err := s.match(ctx, c, &or[0])
		if err != nil {
			return false, err
		}
		if !ok {
			if ok, err = s.match(ctx, c, &or[1]); err != nil || !ok {
				return false, err
			}
		}
	}
	if len(cr.Body) > 0 || len(cr.Text) > 0 {
		if err := s.scan(ctx, c); err != nil {
			return false, err
		}
		for _, b := range cr.Body {
			if !c.bodyFound[lower(b)] {
				return false, nil
			}
		}
		for _, t := range cr.Text {
			if !c.textFound[lower(t)] {
				return false, nil
			}
		}
	}
	return true, nil
}

// dateIn reports whether t's date is on or after since and before before
// (zero means unbounded); since and before are dates at midnight UTC, as the
// library parses them.
func dateIn(t, since, before time.Time) bool {
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return (since.IsZero() || !d.Before(since)) && (before.IsZero() || d.Before(before))
}

func seqContains(set goimap.SeqSet, seq, n uint32) bool {
	for _, r := range set {
		start, stop := r.Start, r.Stop
		if start == 0 {
			start = n
		}
		if stop == 0 {
			stop = n
		}
		if start > stop {
			start, stop = stop, start
		}
		if start <= seq && seq <= stop {
			return true
		}
	}
	return false
}

func (s *searcher) uidContains(set goimap.UIDSet, uid uint32) bool {
	if goimap.IsSearchRes(set) {
		return s.v.searchRes.Contains(goimap.UID(uid))
	}
	top := s.v.maxUID()
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
		if start <= uid && uid <= stop {
			return true
		}
	}
	return false
}

func (s *searcher) entry(ctx context.Context, c *candidate) (*journal.Entry, error) {
	if c.entry == nil {
		e, err := s.ss.srv.opts.Journal.Get(ctx, c.m.id)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", c.m.id, err)
		}
		c.entry = &e
	}
	return c.entry, nil
}

// summaryField returns the summary's value of a field, and whether the
// summary holds that field at all.
func summaryField(sum *journal.Summary, name string) (string, bool) {
	switch strings.ToLower(name) {
	case "from":
		return sum.From, true
	case "to":
		return sum.To, true
	case "cc":
		return sum.Cc, true
	case "subject":
		return sum.Subject, true
	case "message-id":
		return sum.MessageID, true
	}
	return "", false
}

// header evaluates HEADER (and FROM, TO, CC, BCC, SUBJECT): the field exists
// and its value contains the string; an empty string asks only that the
// field exists (RFC 3501 §6.4.4).
func (s *searcher) header(ctx context.Context, c *candidate, h goimap.SearchCriteriaHeaderField) (bool, error) {
	needle := lower(h.Value)
	if needle != "" {
		e, err := s.entry(ctx, c)
		if err != nil {
			return false, err
		}
		if v, ok := summaryField(&e.Summary, h.Key); ok {
			// An empty summary value is an absent field (or an empty one,
			// which no non-empty string matches either).
			return s.contains(v, needle), nil
		}
	}
	if err := s.loadHeader(ctx, c); err != nil {
		return false, err
	}
	for _, f := range c.fields {
		if strings.EqualFold(f.name, h.Key) && s.contains(f.value(), needle) {
			return true, nil
		}
	}
	return false, nil
}

// contains matches a header value raw and with its encoded words decoded.
func (s *searcher) contains(v, needle string) bool {
	if strings.Contains(lower(v), needle) {
		return true
	}
	d := decodeHeaderValue(s.words, v)
	return d != v && strings.Contains(lower(d), needle)
}

// open opens a message for reading within the SEARCH's byte budget.
func (s *searcher) open(ctx context.Context, id journal.ID) (*budgetReader, io.Closer, error) {
	rc, err := s.ss.srv.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", id, err)
	}
	return &budgetReader{src: srcReader{r: rc}, left: s.left}, rc, nil
}

func (s *searcher) loadHeader(ctx context.Context, c *candidate) error {
	if c.hdrLoaded {
		return nil
	}
	br, rc, err := s.open(ctx, c.m.id)
	if err != nil {
		return err
	}
	_, kept, err := readHeader(bufio.NewReaderSize(br, 32<<10))
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if br.exceeded {
		return errSearchLimit
	}
	if err != nil {
		return fmt.Errorf("reading header of %s: %w", c.m.id, err)
	}
	c.fields = splitHeader(kept)
	c.hdrLoaded = true
	return nil
}

// errAllFound ends a scan early: every string has been found.
var errAllFound = errors.New("all found")

// scan streams a message once and records which BODY and TEXT strings it
// contains.
func (s *searcher) scan(ctx context.Context, c *candidate) error {
	if c.scanned {
		return nil
	}
	sc := &textScan{}
	for _, n := range s.body {
		sc.body = append(sc.body, &matcher{needle: []byte(n)})
	}
	for _, n := range s.text {
		sc.text = append(sc.text, &matcher{needle: []byte(n)})
	}
	br, rc, err := s.open(ctx, c.m.id)
	if err != nil {
		return err
	}
	err = s.walkMessage(bufio.NewReaderSize(br, 32<<10), sc, 0, true)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	switch {
	case br.exceeded:
		return errSearchLimit
	case br.src.err != nil:
		return fmt.Errorf("reading %s: %w", c.m.id, br.src.err)
	case err != nil && !errors.Is(err, errAllFound):
		// Malformed content ends the walk; what was seen counts.
		s.ss.log.Debug("imap: search: malformed message", "uid", c.m.uid, "err", err)
	}
	c.bodyFound, c.textFound = map[string]bool{}, map[string]bool{}
	for _, m := range sc.body {
		c.bodyFound[string(m.needle)] = c.bodyFound[string(m.needle)] || m.found
	}
	for _, m := range sc.text {
		c.textFound[string(m.needle)] = c.textFound[string(m.needle)] || m.found
	}
	c.scanned = true
	return nil
}

// maxSearchDepth bounds how deeply nested parts are searched (mimestruct's
// MaxDepth).
const maxSearchDepth = 20

// walkMessage searches a message (or an embedded message/rfc822): its header
// fields count for TEXT at the top and for BODY and TEXT when embedded.
func (s *searcher) walkMessage(br *bufio.Reader, sc *textScan, depth int, top bool) error {
	_, kept, err := readHeader(br)
	if err != nil {
		return err
	}
	fields := splitHeader(kept)
	var ct, cte string
	lw := sc.writer(!top)
	for _, f := range fields {
		v := f.value()
		switch strings.ToLower(f.name) {
		case "content-type":
			ct = v
		case "content-transfer-encoding":
			cte = v
		}
		fmt.Fprintf(lw, "%s: %s\n", f.name, decodeHeaderValue(s.words, v))
		if sc.done() {
			return errAllFound
		}
	}
	lw.flush()
	return s.walkBody(br, ct, cte, sc, depth)
}

// walkBody searches one entity's body by its Content-Type.
func (s *searcher) walkBody(r io.Reader, ct, cte string, sc *textScan, depth int) error {
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil || ct == "" {
		mediaType, params = "text/plain", nil
	}
	switch {
	case strings.HasPrefix(mediaType, "multipart/") && params["boundary"] != "" && depth < maxSearchDepth:
		// The part headers are bounded: go-message keeps every field of
		// one, and a part header of millions of "a:b" lines fits a 10 MB
		// message.
		mr := textproto.NewMultipartReader(headerlimit.Parts(r, params["boundary"]), params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			pct := p.Header.Get("Content-Type")
			if pct == "" && mediaType == "multipart/digest" {
				pct = "message/rfc822" // RFC 2046 §5.1.5
			}
			if err := s.walkBody(p, pct, p.Header.Get("Content-Transfer-Encoding"), sc, depth+1); err != nil {
				return err
			}
		}
	case (mediaType == "message/rfc822" || mediaType == "message/global") && depth < maxSearchDepth:
		dec, ok := decodeTransfer(cte, r)
		if !ok {
			dec = r
		}
		return s.walkMessage(bufio.NewReader(dec), sc, depth+1, false)
	case strings.HasPrefix(mediaType, "text/"):
		dec, ok := decodeTransfer(cte, r)
		if !ok {
			dec = r
		}
		text := decodeCharset(params["charset"], dec)
		lw := sc.writer(true)
		buf := make([]byte, 32<<10)
		for {
			n, err := text.Read(buf)
			if n > 0 {
				lw.write(buf[:n])
				if sc.done() {
					return errAllFound
				}
			}
			if errors.Is(err, io.EOF) {
				lw.flush()
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	return nil // not text: not searched
}

// textScan holds the matchers of one message's scan.
type textScan struct {
	body, text []*matcher
}

func (sc *textScan) done() bool {
	for _, m := range sc.body {
		if !m.found {
			return false
		}
	}
	for _, m := range sc.text {
		if !m.found {
			return false
		}
	}
	return true
}

// writer returns a lower-casing writer feeding the TEXT matchers, and the
// BODY matchers too when body is true. Each call starts a new segment: no
// match spans two parts.
func (sc *textScan) writer(body bool) *lowerWriter {
	ms := sc.text
	if body {
		ms = append(append([]*matcher(nil), sc.body...), sc.text...)
	}
	for _, m := range ms {
		m.tail = m.tail[:0]
	}
	return &lowerWriter{ms: ms}
}

// lowerWriter lower-cases UTF-8 text written to it in pieces of any size
// (keeping a rune cut between two writes for the next) and feeds it to
// matchers.
type lowerWriter struct {
	ms      []*matcher
	pending []byte
}

func (w *lowerWriter) Write(p []byte) (int, error) {
	w.write(p)
	return len(p), nil
}

func (w *lowerWriter) write(p []byte) {
	data := append(w.pending, p...)
	cut := len(data)
	for i := len(data) - 1; i >= 0 && i >= len(data)-utf8.UTFMax; i-- {
		if utf8.RuneStart(data[i]) {
			if !utf8.FullRune(data[i:]) {
				cut = i
			}
			break
		}
	}
	w.pending = append(w.pending[:0], data[cut:]...)
	w.feed(bytes.ToLower(data[:cut]))
}

func (w *lowerWriter) flush() {
	if len(w.pending) > 0 {
		w.feed(bytes.ToLower(w.pending))
		w.pending = w.pending[:0]
	}
}

func (w *lowerWriter) feed(b []byte) {
	for _, m := range w.ms {
		m.feed(b)
	}
}

// matcher finds one lower-cased string in a stream, across writes.
type matcher struct {
	needle []byte
	tail   []byte // the last len(needle)-1 bytes seen
	found  bool
}

func (m *matcher) feed(b []byte) {
	if m.found {
		return
	}
	if len(m.needle) == 0 {
		m.found = true
		return
	}
	// The chunk is searched in place, not copied after the tail: a match
	// across writes lies within the tail and the chunk's first k bytes
	// (the tail holds none, or it would have been found).
	k := len(m.needle) - 1
	m.tail = append(m.tail, b[:min(len(b), k)]...)
	if bytes.Contains(m.tail, m.needle) || bytes.Contains(b, m.needle) {
		m.found = true
		return
	}
	if len(b) >= k {
		m.tail = append(m.tail[:0], b[len(b)-k:]...)
	} else { // the tail holds all of b: keep its last k bytes
		keep := min(len(m.tail), k)
		m.tail = m.tail[:copy(m.tail, m.tail[len(m.tail)-keep:])]
	}
}

// budgetReader reads a message within the SEARCH's byte budget.
type budgetReader struct {
	src      srcReader
	left     *int64
	exceeded bool
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left != nil {
		if *b.left <= 0 {
			b.exceeded = true
			return 0, errSearchLimit
		}
		if int64(len(p)) > *b.left {
			p = p[:*b.left]
		}
	}
	n, err := b.src.Read(p)
	if b.left != nil {
		*b.left -= int64(n)
	}
	return n, err
}

// Package mailview turns stored messages into something the webmail can show
// safely (decoded headers, a text body, a sanitized HTML body, a list of
// attachments addressable by IMAP-style part numbers), and builds and sends
// the messages the webmail composes.
//
// Everything here reads mail written by strangers, so Parse never fails a page
// for a broken part, never panics, and bounds the parts, nesting and bytes it
// keeps, and the header fields it reads (headerlimit.go); the HTML it returns
// is sanitized (see sanitize.go for each rule and why it exists).
package mailview

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	// Registers the charsets beyond UTF-8/US-ASCII/ISO-8859-1 with go-message,
	// so that bodies and encoded words in any common charset are decoded.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	htmlcharset "golang.org/x/net/html/charset"
	"golang.org/x/text/encoding/charmap"
)

// Limits on the work Parse and OpenPart do for one message. A hostile
// message can nest multiparts arbitrarily deep or hold millions of empty
// parts; past these limits the rest is not shown.
const (
	// MaxParts is the number of MIME entities walked.
	MaxParts = 1000
	// MaxDepth is the multipart nesting depth walked; deeper multiparts are
	// listed as opaque attachments.
	MaxDepth = 50
	// DefaultMaxTextBytes is used when Options.MaxTextBytes is 0.
	DefaultMaxTextBytes = 2 << 20
)

// Options controls Parse.
type Options struct {
	// CIDURL maps a Content-ID (without angle brackets) to the URL the
	// browser loads the part from. Nil: cid: images are removed. The
	// Content-ID comes from the message (the sender chose it), so CIDURL
	// must escape it (url.QueryEscape); the result is HTML-escaped here.
	CIDURL func(contentID string) string
	// AllowRemote keeps http(s) images (the user asked to load them).
	AllowRemote bool
	// MaxTextBytes bounds the bytes of text and of HTML kept (each);
	// 0 means DefaultMaxTextBytes.
	MaxTextBytes int64
	// TextOnly leaves Message.HTML empty: a caller that reads only Text (a
	// text search) does not pay for sanitizing HTML it never shows.
	TextOnly bool
}

// Address is one mailbox of an address list.
type Address struct{ Name, Email string }

// String formats the address for display and for the compose form: the
// name unencoded (it is UTF-8 text, not a header), quoted when it holds
// RFC 5322 §3.2.3 specials so that the result parses back as one address.
func (a Address) String() string {
	if a.Name == "" {
		return a.Email
	}
	name := a.Name
	if strings.ContainsAny(name, `()<>[]:;@\,."`) {
		name = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
	}
	return name + " <" + a.Email + ">"
}

// Message is a parsed message ready to be shown.
type Message struct {
	From            []Address
	To, Cc, ReplyTo []Address
	Subject         string
	Date            time.Time
	// MessageID, InReplyTo and References hold msg-ids without the angle
	// brackets.
	MessageID  string
	InReplyTo  string
	References []string
	// Text is the text/plain body (or text derived from the HTML body),
	// decoded to UTF-8.
	Text string
	// HTML is the sanitized HTML body, "" if none.
	HTML string
	// HasRemoteImages says remote images were removed from HTML.
	HasRemoteImages bool
	Attachments     []Attachment
	// Truncated says text, HTML or parts were cut at a limit.
	Truncated bool
	// Broken says the MIME structure was malformed; what could be read is
	// shown.
	Broken bool
}

// Attachment is a part that is not shown as body text.
type Attachment struct {
	// ID is the part number as in IMAP BODY[ID] (RFC 3501 §6.4.5), e.g. "1.2".
	ID                    string
	Filename, ContentType string
	// Size is the decoded size in bytes.
	Size      int64
	ContentID string
	Inline    bool
}

// errReader remembers the first error of the underlying reader other than
// io.EOF, so that Parse can tell a failing store (an error) from a malformed
// message (shown as well as possible).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// capBuffer keeps the first max bytes written to it: the raw text shown when
// the MIME structure cannot be parsed.
type capBuffer struct {
	buf bytes.Buffer
	max int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

// Parse reads a message (RFC 5322, MIME per RFC 2045-2049). It returns an
// error only when r fails; malformed messages are shown as far as possible.
func Parse(r io.Reader, opts Options) (*Message, error) {
	max := opts.MaxTextBytes
	if max <= 0 {
		max = DefaultMaxTextBytes
	}
	er := &errReader{r: r}
	raw := &capBuffer{max: int(max) + 64<<10}
	m := &Message{}
	p := &parser{m: m, max: max}

	tee := io.TeeReader(er, raw)
	e, err := readMessage(tee)
	if e == nil {
		// The header itself is malformed (e.g. a line without a colon):
		// show the raw message rather than nothing. Read the rest so that
		// raw holds up to its limit, not just what the header parser
		// buffered.
		_, _ = io.Copy(io.Discard, tee) // a failure is in er.err
		if er.err != nil {
			return nil, fmt.Errorf("mailview: reading message: %w", er.err)
		}
		m.Broken = true
		p.fallback(raw.buf.Bytes(), true)
		m.Text = capUTF8(strings.ToValidUTF8(p.text.String(), "\uFFFD"), max, &p.textCut)
		if p.textCut {
			m.Text += truncNote
			m.Truncated = true
		}
		return m, nil
	}
	if err != nil {
		// Unknown charset or transfer encoding of a single-part body: the
		// raw bytes are shown.
		m.Broken = true
	}
	readHeader(m, mail.Header{Header: e.Header})

	w := &walker{}
	w.walk(e, "", 0, false, p.leaf)
	if w.broken {
		m.Broken = true
	}
	if w.truncated {
		m.Truncated = true
	}
	// Drain what is left so that raw holds the body for the fallback and
	// the reader error, if any, is seen.
	if _, err := io.Copy(io.Discard, e.Body); err != nil && er.err == nil {
		m.Broken = true
	}
	if er.err != nil {
		return nil, fmt.Errorf("mailview: reading message: %w", er.err)
	}
	if p.text.Len() == 0 && p.html.Len() == 0 && len(m.Attachments) == 0 {
		// Nothing readable came out of the MIME structure (typically a
		// multipart whose boundary never appears): show the raw body.
		p.fallback(raw.buf.Bytes(), false)
	}
	if p.text.Len() == 0 && p.html.Len() > 0 {
		// Replies quote Text, so an HTML-only message needs a text form.
		p.text.WriteString(htmlToText(p.html.String(), max))
	}
	m.Text = capUTF8(strings.ToValidUTF8(p.text.String(), "\uFFFD"), max, &p.textCut)
	if p.textCut {
		m.Text += truncNote
		m.Truncated = true
	}
	if p.html.Len() > 0 && !opts.TextOnly {
		m.HTML, m.HasRemoteImages = sanitizeHTML(capUTF8(strings.ToValidUTF8(p.html.String(), "\uFFFD"), max, &p.htmlCut), opts)
		if p.htmlCut {
			m.Truncated = true
		}
	}
	return m, nil
}

// capUTF8 cuts s to at most max bytes at a character boundary and sets
// *cut when it does. The parts are read up to max bytes each, but converting
// them from their charset can make them longer (windows-1252 "–", one byte,
// is three in UTF-8), and the limit is on what is kept.
func capUTF8(s string, max int64, cut *bool) string {
	if int64(len(s)) <= max {
		return s
	}
	*cut = true
	n := int(max)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// truncNote ends a Text cut at Options.MaxTextBytes.
const truncNote = "\n\n[… message truncated …]"

// parser collects the body parts and attachments of one message.
type parser struct {
	m                *Message
	max              int64
	text, html       bytes.Buffer
	textCut, htmlCut bool
}

// fallback shows raw bytes as the text: the whole input when the header is
// broken, else the body after the header.
func (p *parser) fallback(raw []byte, whole bool) {
	if !whole {
		if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
			raw = raw[i+4:]
		} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
			raw = raw[i+2:]
		} else {
			raw = nil
		}
	}
	if int64(len(raw)) > p.max {
		raw = raw[:p.max]
		p.textCut = true
	}
	p.text.Reset()
	p.text.Write(raw)
}

// leaf handles one non-multipart entity: body text or attachment.
func (p *parser) leaf(e *message.Entity, id string, inRelated bool, decodeErr error) bool {
	info := partInfo(e, id, inRelated)
	// A text part is shown unless it is marked as an attachment. A name
	// alone does not make it one when nothing is shown yet: many mailers
	// (bounce generators notably) name their only text part.
	isBody := info.disposition != "attachment" &&
		(info.filename == "" || p.text.Len()+p.html.Len() == 0) &&
		(info.mediaType == "text/plain" || info.mediaType == "text/html")
	if isBody {
		buf, cut := &p.text, &p.textCut
		if info.mediaType == "text/html" {
			buf, cut = &p.html, &p.htmlCut
		}
		if decodeErr != nil {
			p.m.Broken = true
		}
		if buf.Len() > 0 && info.mediaType == "text/plain" {
			buf.WriteString("\n\n")
		}
		room := p.max - int64(buf.Len())
		if room < 0 {
			room = 0
		}
		var part bytes.Buffer
		n, err := io.Copy(&part, io.LimitReader(e.Body, room))
		if err != nil {
			p.m.Broken = true
		}
		buf.Write(guessCharset(part.Bytes(), info.mediaType, e))
		if n == room {
			// Anything left means the limit cut the text.
			if k, _ := io.Copy(io.Discard, e.Body); k > 0 {
				*cut = true
			}
		}
		return false
	}
	size, err := io.Copy(io.Discard, e.Body)
	if err != nil {
		p.m.Broken = true
	}
	name := info.filename
	if name == "" {
		name = defaultName(info.mediaType, id, e)
	}
	p.m.Attachments = append(p.m.Attachments, Attachment{
		ID: id, Filename: name, ContentType: info.mediaType, Size: size,
		ContentID: info.contentID, Inline: info.inline,
	})
	return false
}

// defaultName names a part that has no filename, so that downloads get a
// usable name.
func defaultName(mediaType, id string, e *message.Entity) string {
	if mediaType == "message/rfc822" {
		return "message-" + id + ".eml"
	}
	ext := ".bin"
	if exts, _ := mime.ExtensionsByType(mediaType); len(exts) > 0 {
		ext = exts[0]
	}
	return "part-" + id + ext
}

// guessCharset decodes a text part that declares no charset and is not valid
// UTF-8: RFC 2045 §5.2 says us-ascii, but such parts in the wild are 8-bit
// in the sender's local charset, which an HTML part may name in a <meta>
// element, and which is otherwise most often windows-1252 (as browsers
// assume, WHATWG Encoding §4.2). Declared charsets were already decoded by
// go-message.
func guessCharset(b []byte, mediaType string, e *message.Entity) []byte {
	if utf8.Valid(b) {
		return b
	}
	if _, params, err := e.Header.ContentType(); err == nil && params["charset"] != "" {
		return b
	}
	enc := charmap.Windows1252.NewDecoder()
	if mediaType == "text/html" {
		if guess, name, _ := htmlcharset.DetermineEncoding(b, "text/html"); name != "" && name != "windows-1252" {
			enc = guess.NewDecoder()
		}
	}
	out, err := enc.Bytes(b)
	if err != nil {
		return b
	}
	return out
}

type part struct {
	mediaType, disposition, filename, contentID string
	inline                                      bool
}

var paramRe = regexp.MustCompile(`(?i)(?:^|;)\s*(?:file)?name\s*=\s*("[^"]*"|[^;]*)`)

// partInfo reads the fields of a part header that Parse needs, tolerating
// malformed parameters (mime.ParseMediaType rejects many found in the wild).
func partInfo(e *message.Entity, id string, inRelated bool) part {
	var pi part
	ct := e.Header.Get("Content-Type")
	mt, _, err := e.Header.ContentType()
	if err != nil || mt == "" {
		// Unparsable parameters: take the type before the first ";" or
		// space ("text/plain charset=x" is seen in the wild).
		mt, _, _ = strings.Cut(ct, ";")
		if f := strings.Fields(mt); len(f) > 0 {
			mt = strings.ToLower(f[0])
		} else {
			mt = ""
		}
	}
	if mt == "" || !strings.Contains(mt, "/") {
		// RFC 2045 §5.2: the default is text/plain; us-ascii.
		mt = "text/plain"
	}
	pi.mediaType = mt
	ah := mail.AttachmentHeader{Header: e.Header}
	disp, _, _ := e.Header.ContentDisposition()
	if disp == "" {
		d, _, _ := strings.Cut(e.Header.Get("Content-Disposition"), ";")
		disp = strings.TrimSpace(d)
	}
	pi.disposition = strings.ToLower(disp)
	// A malformed parameter list yields an error and no name; the scan
	// below then recovers the name if it can.
	name, _ := ah.Filename()
	if name == "" {
		// Fall back to a lenient scan of the raw parameters.
		for _, f := range []string{e.Header.Get("Content-Disposition"), ct} {
			if mm := paramRe.FindStringSubmatch(f); mm != nil {
				name = strings.Trim(strings.TrimSpace(mm[1]), `"`)
				if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
					name = dec
				}
				break
			}
		}
	}
	pi.filename = SanitizeFilename(name)
	pi.contentID = strings.TrimSpace(strings.Trim(strings.TrimSpace(e.Header.Get("Content-Id")), "<>"))
	pi.inline = pi.disposition == "inline" || (pi.disposition == "" && (inRelated || pi.contentID != ""))
	return pi
}

// SanitizeFilename makes a received filename safe to offer for download:
// no directory part (path separators of any OS), no control or format
// characters (which can hide the real extension, e.g. U+202E), no leading
// dots, at most 200 bytes.
func SanitizeFilename(name string) string {
	name = strings.ToValidUTF8(name, "")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == ':' {
			return -1
		}
		return r
	}, name)
	name = strings.TrimLeft(strings.TrimSpace(name), ".")
	name = strings.TrimSpace(name)
	for len(name) > 200 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}

// readHeader fills the header fields of m, each tolerating malformed values.
func readHeader(m *Message, h mail.Header) {
	if s, err := h.Subject(); err == nil {
		m.Subject = s
	} else {
		m.Subject = h.Get("Subject")
	}
	m.Subject = cleanLine(m.Subject)
	m.Date, _ = h.Date()
	m.From = addrList(h, "From")
	m.To = addrList(h, "To")
	m.Cc = addrList(h, "Cc")
	m.ReplyTo = addrList(h, "Reply-To")
	if id, err := h.MessageID(); err == nil {
		m.MessageID = id
	}
	if l, err := h.MsgIDList("In-Reply-To"); err == nil && len(l) > 0 {
		m.InReplyTo = l[0]
	}
	if l, err := h.MsgIDList("References"); err == nil {
		m.References = l
	}
}

// cleanLine removes line breaks and other control characters from a decoded
// header value (encoded words can carry any byte).
func cleanLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\r' || r == '\n' {
			return ' '
		}
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

// addrList parses an address list field; when the whole list does not parse,
// each comma-separated piece is tried on its own, and pieces that still do not
// parse are kept as a display name so that the reader sees them.
func addrList(h mail.Header, key string) []Address {
	l, err := h.AddressList(key)
	if err == nil {
		out := make([]Address, 0, len(l))
		for _, a := range l {
			out = append(out, Address{Name: cleanLine(a.Name), Email: cleanLine(a.Address)})
		}
		return out
	}
	raw := h.Get(key)
	if raw == "" {
		return nil
	}
	var out []Address
	for _, piece := range strings.Split(raw, ",") {
		piece = strings.TrimSpace(piece)
		if piece == "" {
			continue
		}
		if a, err := mail.ParseAddress(piece); err == nil {
			out = append(out, Address{Name: cleanLine(a.Name), Email: cleanLine(a.Address)})
			continue
		}
		if dec, err := new(mime.WordDecoder).DecodeHeader(piece); err == nil {
			piece = dec
		}
		out = append(out, Address{Name: cleanLine(piece)})
	}
	return out
}

// walker walks a MIME tree numbering parts as IMAP does (RFC 3501 §6.4.5):
// the children of a multipart are 1..n below its own number, the body of a
// message that is not multipart is "1". Embedded message/rfc822 parts are
// leaves (shown as attachments).
type walker struct {
	parts     int
	broken    bool
	truncated bool
}

type leafFunc func(e *message.Entity, id string, inRelated bool, decodeErr error) (stop bool)

func (w *walker) walk(e *message.Entity, id string, depth int, inRelated bool, fn leafFunc) (stop bool) {
	return w.walkErr(e, id, depth, inRelated, nil, fn)
}

func (w *walker) walkErr(e *message.Entity, id string, depth int, inRelated bool, decodeErr error, fn leafFunc) (stop bool) {
	w.parts++
	if w.parts > MaxParts {
		w.truncated = true
		return true
	}
	mr := multipartReader(e)
	if mr == nil || depth >= MaxDepth {
		if mr != nil {
			w.truncated = true
		}
		if id == "" {
			id = "1"
		}
		return fn(e, id, inRelated, decodeErr)
	}
	mt, _, _ := e.Header.ContentType()
	related := mt == "multipart/related"
	for i := 1; ; i++ {
		child, err := mr.NextPart()
		if err == io.EOF {
			return false
		}
		if child == nil {
			// Broken boundary, truncated message: keep what was read.
			w.broken = true
			return false
		}
		cid := strconv.Itoa(i)
		if id != "" {
			cid = id + "." + cid
		}
		if w.walkErr(child, cid, depth+1, related, err, fn) {
			return true
		}
	}
}

// ErrNoPart is returned by OpenPart when the message has no such part.
var ErrNoPart = errors.New("mailview: no such part")

// PartRef names one leaf part of a message met by EachPart.
type PartRef struct {
	// ID is the part number as in Attachment.ID.
	ID string
	// ContentID is the Content-ID without angle brackets, "" if none.
	ContentID string
	// Filename is the sanitized filename, or one made up from the type.
	Filename string
	// ContentType is the media type; "; charset=utf-8" follows for text,
	// which the body is then decoded to.
	ContentType string
}

// EachPart reads a raw message once and calls fn with each leaf part, in
// message order (as Parse numbers them), and its decoded body (transfer
// encoding undone, text re-encoded to UTF-8), until fn returns true; the body
// of that part can still be read after EachPart returns, as long as r can. A
// part cut short by the end of a truncated message ends where the message
// ends. EachPart fails only when the header of the message cannot be read at
// all.
func EachPart(r io.Reader, fn func(p PartRef, body io.Reader) (stop bool)) error {
	e, err := readMessage(r)
	if e == nil {
		return fmt.Errorf("mailview: reading message: %w", err)
	}
	w := &walker{}
	w.walk(e, "", 0, false, func(e *message.Entity, pid string, inRelated bool, decodeErr error) bool {
		info := partInfo(e, pid, inRelated)
		p := PartRef{ID: pid, ContentID: info.contentID, Filename: info.filename, ContentType: info.mediaType}
		if p.Filename == "" {
			p.Filename = defaultName(info.mediaType, pid, e)
		}
		if strings.HasPrefix(p.ContentType, "text/") && decodeErr == nil {
			p.ContentType += "; charset=utf-8"
		}
		return fn(p, truncatedOK{e.Body})
	})
	return nil
}

// OpenPart finds one part of a raw message by Attachment.ID (an IMAP part
// number) or by "cid:<content-id>", and returns its name, content type and
// decoded body as EachPart does. The body reads from r, so r must stay open
// until body has been read.
func OpenPart(r io.Reader, id string) (filename, contentType string, body io.Reader, err error) {
	wantCID, byCID := strings.CutPrefix(id, "cid:")
	wantCID = strings.Trim(wantCID, "<>")
	var found bool
	err = EachPart(r, func(p PartRef, b io.Reader) bool {
		if byCID {
			if p.ContentID == "" || p.ContentID != wantCID {
				return false
			}
		} else if p.ID != id {
			return false
		}
		found = true
		filename, contentType, body = p.Filename, p.ContentType, b
		return true
	})
	if err != nil {
		return "", "", nil, err
	}
	if !found {
		return "", "", nil, fmt.Errorf("%w: %q", ErrNoPart, id)
	}
	return filename, contentType, body, nil
}

// truncatedOK ends a part body at the end of a truncated message without an
// error: the bytes that exist are the part.
type truncatedOK struct{ r io.Reader }

func (t truncatedOK) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}

package imap

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
)

// Decoding of what a part's header says about its body: the transfer encoding
// (RFC 2045 §6) for BINARY (RFC 3516) and SEARCH, the charset for SEARCH, and
// RFC 2047 encoded words for SEARCH in header fields. Malformed encodings are
// decoded as far as they go, never an error: a broken message must not fail
// a command.

// srcReader remembers the first error of the reader it wraps, so that a read
// error of the journal is told apart from malformed content, which decoders
// report as errors too.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && s.err == nil {
		s.err = err
	}
	return n, err
}

// lenient turns a decoder's error into the end of the data, unless the
// source failed (src.err), which is then the error.
type lenient struct {
	r   io.Reader
	src *srcReader
}

func (l lenient) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		if l.src.err != nil {
			return n, l.src.err
		}
		return n, io.EOF
	}
	return n, err
}

// decodeTransfer returns a reader of the decoded body of a part with the given
// Content-Transfer-Encoding, and false for an encoding it does not know (RFC
// 3516 §4.3: NO [UNKNOWN-CTE]).
func decodeTransfer(encoding string, r io.Reader) (io.Reader, bool) {
	src := &srcReader{r: r}
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "7bit", "8bit", "binary":
		return r, true
	case "base64":
		return lenient{r: base64.NewDecoder(base64.StdEncoding, &base64Filter{r: bufio.NewReader(src)}), src: src}, true
	case "quoted-printable":
		return lenient{r: quotedprintable.NewReader(src), src: src}, true
	}
	return nil, false
}

// base64Filter passes only base64 characters, and nothing after the padding:
// mailers wrap lines with CRLF, add spaces, and some append a second block or
// a signature after the data.
type base64Filter struct {
	r    *bufio.Reader
	done bool
}

func (f *base64Filter) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && !f.done {
		c, err := f.r.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
			p[n] = c
			n++
		case c == '=':
			p[n] = c
			n++
			// The padding ends the data once it completes a quantum; the
			// decoder checks that.
			if next, err := f.r.Peek(1); err != nil || next[0] != '=' {
				f.done = true
			}
		}
	}
	if n == 0 && f.done {
		return 0, io.EOF
	}
	return n, nil
}

// decodeCharset converts text in the named charset to UTF-8. Unknown charsets
// and UTF-8 itself pass unchanged.
func decodeCharset(charset string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return r
	}
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return r
	}
	return enc.NewDecoder().Reader(r)
}

// newWordDecoder decodes RFC 2047 encoded words in header field values.
func newWordDecoder() *mime.WordDecoder {
	return &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		enc, err := htmlindex.Get(charset)
		if err != nil {
			return nil, fmt.Errorf("unknown charset %q", charset)
		}
		return enc.NewDecoder().Reader(r), nil
	}}
}

// decodeHeaderValue decodes the encoded words of an unfolded field value; a
// value that does not decode is returned as it is.
func decodeHeaderValue(d *mime.WordDecoder, v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	if s, err := d.DecodeHeader(v); err == nil {
		return s
	}
	return v
}

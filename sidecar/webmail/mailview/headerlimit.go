package mailview

import (
	"io"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/lifelinemail/lifeline/internal/headerlimit"
)

// readMessage reads a message's header with go-message, its size bounded
// (headerlimit.MaxFields fields, headerlimit.MaxBytes bytes): go-message
// alone keeps every field, and fails the whole message past 1 MB.
func readMessage(r io.Reader) (*message.Entity, error) {
	return message.Read(headerlimit.Header(r))
}

// partReader iterates over the parts of a multipart entity, reading each
// part's header bounded.
type partReader struct{ mr *textproto.MultipartReader }

// multipartReader returns a reader of e's parts, or nil if e is not a
// multipart (the test go-message's Entity.MultipartReader makes).
func multipartReader(e *message.Entity) *partReader {
	mt, params, _ := e.Header.ContentType()
	if !strings.HasPrefix(mt, "multipart/") {
		return nil
	}
	b := params["boundary"]
	return &partReader{textproto.NewMultipartReader(headerlimit.Parts(e.Body, b), b)}
}

// NextPart returns the next part, decoded as go-message does; io.EOF after
// the last. Like message.New, it returns an entity with an error for an
// unknown charset or transfer encoding.
func (r *partReader) NextPart() (*message.Entity, error) {
	p, err := r.mr.NextPart()
	if err != nil {
		return nil, err
	}
	return message.New(message.Header{Header: p.Header}, p)
}

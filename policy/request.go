package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Request is one Postfix policy delegation request: its attributes by name
// (http://www.postfix.org/SMTPD_POLICY_README.html, "Protocol description").
type Request map[string]string

// Errors of ReadRequest. A request that fails with one of them is malformed:
// the server logs it and closes the connection without a reply.
var (
	ErrLineTooLong   = errors.New("policy: line too long")
	ErrTooManyAttrs  = errors.New("policy: too many attributes")
	ErrMalformedLine = errors.New("policy: line is not name=value")
	ErrEmptyRequest  = errors.New("policy: empty request")
)

// ReadRequest reads one request: "name=value" lines ended by an empty line.
// Postfix ends lines with LF; a CR before it is dropped too. r must have a
// buffer of at least maxLine bytes (bufio.NewReaderSize): a longer line
// fails with ErrLineTooLong. io.EOF before the first byte is returned as
// is: the client closed between requests.
func ReadRequest(r *bufio.Reader, maxLine, maxAttrs int) (Request, error) {
	req := Request{}
	n := 0
	for {
		line, err := readLine(r, maxLine)
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				return nil, fmt.Errorf("policy: request ended without an empty line: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if len(line) == 0 {
			if n == 0 {
				return nil, ErrEmptyRequest
			}
			return req, nil
		}
		if err := req.addLine(line, maxAttrs); err != nil {
			return nil, err
		}
		n++
	}
}

// addLine adds one "name=value" line. The value may contain '=' (the first
// one splits), and a name repeated replaces the earlier value.
func (req Request) addLine(line []byte, maxAttrs int) error {
	name, value, ok := bytes.Cut(line, []byte{'='})
	if !ok || len(name) == 0 {
		return fmt.Errorf("%w: %q", ErrMalformedLine, truncate(line))
	}
	if _, dup := req[string(name)]; !dup && len(req) >= maxAttrs {
		return ErrTooManyAttrs
	}
	req[string(name)] = string(value)
	return nil
}

// readLine reads one line without its LF (and a CR before it).
func readLine(r *bufio.Reader, maxLine int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine {
		return nil, ErrLineTooLong
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, fmt.Errorf("policy: line without newline: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	line = line[:len(line)-1]
	return bytes.TrimSuffix(line, []byte{'\r'}), nil
}

// truncate shortens what a log line quotes from a malformed request.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

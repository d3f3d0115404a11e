package pop3

import (
	"bufio"
	"errors"
	"io"
)

// sendMessage copies a message from src to w as the body of a multi-line
// response (RFC 1939 §3): every line ends in CRLF (a bare LF becomes CRLF), a
// line that begins with "." gets another "." (byte-stuffing), and ".CRLF" ends
// it. With bodyLines >= 0 (TOP) it sends the header, the empty line and that
// many lines of the body, then stops reading. It holds one buffer of the
// message in memory, never the whole of it.
func sendMessage(w *bufio.Writer, src io.Reader, bodyLines int) error {
	br := bufio.NewReaderSize(src, 32<<10)
	bol := true      // at the beginning of a line
	inHeader := true // before the empty line that ends the header (RFC 5322 §2.1)
	prevCR := false  // the previous, incomplete piece of this line ended in CR
	lines := 0       // body lines sent
	for {
		if bol && !inHeader && bodyLines >= 0 && lines >= bodyLines {
			break
		}
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			complete := chunk[len(chunk)-1] == '\n'
			if bol && chunk[0] == '.' {
				if werr := w.WriteByte('.'); werr != nil {
					return werr
				}
			}
			if complete {
				body := chunk[:len(chunk)-1]
				empty := len(body) == 0 || (len(body) == 1 && body[0] == '\r')
				if len(body) > 0 && body[len(body)-1] == '\r' {
					body = body[:len(body)-1]
				}
				if _, werr := w.Write(body); werr != nil {
					return werr
				}
				var werr error
				if len(chunk) == 1 && prevCR {
					werr = w.WriteByte('\n')
				} else {
					_, werr = w.WriteString("\r\n")
				}
				if werr != nil {
					return werr
				}
				if inHeader && bol && empty {
					inHeader = false
				} else if !inHeader {
					lines++
				}
				bol, prevCR = true, false
			} else {
				if _, werr := w.Write(chunk); werr != nil {
					return werr
				}
				bol, prevCR = false, chunk[len(chunk)-1] == '\r'
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
	if !bol {
		if _, err := w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	_, err := w.WriteString(".\r\n")
	return err
}

package milter

import (
	"errors"
	"io"
)

// The milter protocol never hands the filter the raw message: the MTA sends
// each header field as a (name, value) pair of C strings (SMFIC_HEADER), an
// end-of-header marker (SMFIC_EOH) and the body in chunks (SMFIC_BODY). The
// journal must store exactly the bytes the MTA will deliver, so the milter
// rebuilds them. What Postfix sends, from src/milter/milter8.c and
// src/global/mime_state.c:
//
//   - Header values are the text after the colon. Postfix (like Sendmail)
//     drops ONE space (not a tab) after the colon unless the milter negotiated
//     SMFIP_HDR_LEADSPC (milter protocol 6, Postfix ≥ 2.6 with the default
//     milter_protocol = 6). Lifeline asks for SMFIP_HDR_LEADSPC whenever the
//     MTA offers it and then gets the value verbatim. Without it the space is
//     put back unless the value is empty or starts with a tab or line break —
//     Sendmail's own convention; "Name:  x" and "Name:\t x" then stay exact,
//     only "Name: \tx" comes back as "Name:\tx".
//   - A folded field (RFC 5322 §2.2.3) arrives as one value whose lines are
//     joined by a bare LF ("Sendmail 8 sends multi-line headers as text
//     separated by newline"), never CRLF. The rebuild turns each LF into CRLF,
//     the line end Postfix writes when it delivers over SMTP or LMTP.
//   - Postfix has already normalised obsolete "Name : value" (RFC 5322 §4.5)
//     to "Name: value" in its queue file, and delivers it so; the milter sees
//     the normalised form, so rebuilding it is exact.
//   - Postfix's own Received: header, the first header of the queue file, is
//     hidden from milters (Sendmail compatibility: "don't expose our first
//     (received) header"). The journal therefore holds the message as the
//     sending client handed it over, without the topmost Received: header
//     that Postfix adds on delivery. Replay and restore deliver it again
//     through an MTA or LMTP server, which adds its own.
//   - Postfix never sends the empty line between header and body ("don't
//     expose our first body line"), and inserts one itself when the client
//     omitted it (mime_state: "force output of one blank line"). The rebuild
//     writes it at SMFIC_EOH (or before the first body chunk, or at the end).
//     Only a message that ends inside its header section (no empty line and
//     no body at all) may thus be journaled with two bytes (CRLF) more than
//     Postfix delivers.
//   - Header text beyond Postfix's header_size_limit is dropped by Postfix
//     before both the milter and delivery see it, so it is consistent.
//   - Body chunks (up to 64 KiB, cut anywhere, not at line ends) carry every
//     line ended by CRLF, including the last; long lines that Postfix stored
//     in several records come through unbroken. They are copied verbatim,
//     8-bit bytes included.
//   - Lines longer than Postfix's smtp_line_length_limit /
//     lmtp_line_length_limit may be broken by Postfix's SMTP/LMTP client at
//     delivery time; the journal keeps them as received.

var errHeaderAfterBody = errors.New("milter: header field after end of header")

// rebuilder writes the message, as the MTA will deliver it, to w while the
// milter events arrive, so that no second copy is built at end-of-message.
type rebuilder struct {
	w            io.Writer
	leadingSpace bool // SMFIP_HDR_LEADSPC was negotiated: values are verbatim
	inBody       bool // the header/body separator has been written
	buf          []byte
}

// Header writes one header field from an SMFIC_HEADER event.
func (b *rebuilder) Header(name, value string) error {
	if b.inBody {
		return errHeaderAfterBody
	}
	b.buf = appendHeaderField(b.buf[:0], name, value, b.leadingSpace)
	_, err := b.w.Write(b.buf)
	return err
}

// EndOfHeader writes the empty line that ends the header section (RFC 5322
// §2.1). It is idempotent.
func (b *rebuilder) EndOfHeader() error {
	if b.inBody {
		return nil
	}
	b.inBody = true
	_, err := io.WriteString(b.w, "\r\n")
	return err
}

// Body writes one SMFIC_BODY chunk verbatim.
func (b *rebuilder) Body(chunk []byte) error {
	if err := b.EndOfHeader(); err != nil {
		return err
	}
	_, err := b.w.Write(chunk)
	return err
}

// Finish completes the message at end-of-message: a message without body still
// gets its header/body separator.
func (b *rebuilder) Finish() error { return b.EndOfHeader() }

// appendHeaderField appends "name:value\r\n" to dst as it appears in the
// delivered message. value is the SMFIC_HEADER value; leadingSpace tells
// whether the MTA sent it verbatim (SMFIP_HDR_LEADSPC) or dropped one space
// after the colon.
func appendHeaderField(dst []byte, name, value string, leadingSpace bool) []byte {
	// An MTA never ends a value with a line break (Postfix and Sendmail strip
	// it; go-milter's client does too). Writing one would produce an empty
	// line and end the header section early, so drop it.
	for len(value) > 0 && value[len(value)-1] == '\n' {
		value = value[:len(value)-1]
		if len(value) > 0 && value[len(value)-1] == '\r' {
			value = value[:len(value)-1]
		}
	}
	dst = append(dst, name...)
	dst = append(dst, ':')
	if !leadingSpace && value != "" && value[0] != '\t' && value[0] != '\r' && value[0] != '\n' {
		dst = append(dst, ' ')
	}
	// Folded lines are joined by LF (Postfix, Sendmail) or CRLF (other
	// clients); RFC 5322 §2.2.3 folding is CRLF followed by WSP.
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\n' && (i == 0 || value[i-1] != '\r') {
			dst = append(dst, '\r')
		}
		dst = append(dst, c)
	}
	return append(dst, '\r', '\n')
}

package replay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
)

// maxDSNHeaders caps the copy of the original header in a DSN.
const maxDSNHeaders = 64 << 10

// dsnInput is what a delivery status notification says.
type dsnInput struct {
	hostname string
	sender   string
	arrival  time.Time
	queueID  string
	subject  string
	failed   []failure
	headers  []byte // the original message's header section, CRLF, no blank line
	now      time.Time
}

// composeDSN writes an RFC 3464 delivery status notification: a
// multipart/report (RFC 6522) with report-type=delivery-status and three
// parts: a human-readable explanation, the machine-readable
// message/delivery-status, and the original header as text/rfc822-headers
// (RFC 6522 §4; only the header, as most MTAs do, so that a large message is
// not sent back).
func composeDSN(in dsnInput) []byte {
	boundary := "lifeline-" + randomHex(12)
	eightBit := !isASCII(in.sender) || !isASCII(in.subject) || !isASCII(string(in.headers))
	for _, f := range in.failed {
		if !isASCII(f.rc.Address) || !isASCII(f.reply) {
			eightBit = true
		}
	}
	cte := "7bit"
	if eightBit {
		cte = "8bit"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", in.hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", in.sender)
	b.WriteString("Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", in.now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\r\n", notify.MessageID(in.hostname))
	// RFC 3834 §5: auto-replied, so that vacation responders stay quiet.
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	b.WriteString("\r\n")
	b.WriteString("This is a MIME-encapsulated message.\r\n\r\n")

	// Part 1: for people.
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Description: Notification\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	fmt.Fprintf(&b, "Content-Transfer-Encoding: %s\r\n\r\n", cte)
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", in.hostname)
	b.WriteString("Your message could not be delivered to one or more recipients.\r\n")
	b.WriteString("It was held while their mailbox server was unavailable, and the\r\n")
	b.WriteString("server refused it or stayed unavailable after it came back.\r\n\r\n")
	if in.subject != "" {
		fmt.Fprintf(&b, "Subject of your message: %s\r\n\r\n", oneLine(decodeHeader(in.subject)))
	}
	for _, f := range in.failed {
		fmt.Fprintf(&b, "<%s>: %s\r\n", f.rc.Address, oneLine(f.reply))
	}
	b.WriteString("\r\n")

	// Part 2: RFC 3464 §2.2 per-message fields, then §2.3 per-recipient.
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Description: Delivery report\r\n")
	b.WriteString("Content-Type: message/delivery-status\r\n")
	if eightBit {
		b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	}
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", in.hostname)
	fmt.Fprintf(&b, "X-Lifeline-Journal-ID: %s\r\n", in.queueID)
	if !in.arrival.IsZero() {
		fmt.Fprintf(&b, "Arrival-Date: %s\r\n", in.arrival.Format(time.RFC1123Z))
	}
	for _, f := range in.failed {
		b.WriteString("\r\n")
		// RFC 6533 §3: utf-8 address type for an internationalized address.
		addrType := "rfc822"
		if !isASCII(f.rc.Address) {
			addrType = "utf-8"
		}
		fmt.Fprintf(&b, "Final-Recipient: %s; %s\r\n", addrType, f.rc.Address)
		b.WriteString("Action: failed\r\n")
		fmt.Fprintf(&b, "Status: %s\r\n", dsnStatus(f.last))
		if f.last.Code != 0 {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s\r\n", oneLine(f.last.String()))
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", in.now.Format(time.RFC1123Z))
	}
	b.WriteString("\r\n")

	// Part 3: the original header.
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.WriteString("Content-Description: Undelivered Message Headers\r\n")
	b.WriteString("Content-Type: text/rfc822-headers\r\n")
	if eightBit {
		b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	}
	b.WriteString("\r\n")
	b.Write(in.headers)
	if len(in.headers) > 0 && !bytes.HasSuffix(in.headers, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

// dsnStatus is the RFC 3463 status for a failed recipient: the server's
// enhanced code for a 5xx, 5.0.0 for a 5xx without one, and 4.4.7 ("delivery
// time expired") for a recipient given up on after temporary errors.
func dsnStatus(r Reply) string {
	if r.Permanent() {
		if strings.HasPrefix(r.Enhanced, "5.") {
			return r.Enhanced
		}
		return "5.0.0"
	}
	return "4.4.7"
}

// originalHeaders reads the header section of a journaled message, up to
// maxDSNHeaders, with CRLF line ends.
func (q *queue) originalHeaders(ctx context.Context, id journal.ID) ([]byte, error) {
	rc, err := q.r.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	br := bufio.NewReader(io.LimitReader(rc, maxDSNHeaders))
	var out bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" && (line != "" || err != nil) {
			break // the blank line that ends the header (RFC 5322 §2.1), or EOF
		}
		out.WriteString(trimmed)
		out.WriteString("\r\n")
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return out.Bytes(), err
		}
	}
	return out.Bytes(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// decodeHeader decodes RFC 2047 encoded words for the human-readable part;
// undecodable text is shown as it is.
func decodeHeader(s string) string {
	var d mime.WordDecoder
	if out, err := d.DecodeHeader(s); err == nil {
		return out
	}
	return s
}

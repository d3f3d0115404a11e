package e2e

import (
	"bytes"
	"fmt"
	"strings"
)

// AddedField describes a header field that is prepended to a message on its
// way from Lifeline's milter to Dovecot's maildir.
type AddedField struct {
	Name string // field name, matched case-insensitively
	// Contains, if set, must occur in the (unfolded) field, so that a
	// Received field of the sender's own is never taken for one of ours.
	Contains string
	Who      string // which program adds it, and why, for messages
	// Optional fields may be absent.
	Optional bool
}

// Fields prepended on delivery, top first, as measured with Postfix 3.7 and
// Dovecot 2.3 (Debian 12):
//
//   - Dovecot's LMTP server adds Return-Path (the envelope sender),
//     Delivered-To (the envelope recipient, lmtp_hdr_delivery_address =
//     final) and its own Received ("… by HOST with LMTP id …",
//     lmtp_add_received_header). Delivered-To, and the "for <rcpt>" clause
//     of the Received field, only when the LMTP transaction had a single
//     recipient: Postfix's LMTP client gives Dovecot one transaction for
//     all recipients of a message (up to lmtp_destination_recipient_limit,
//     50), so the copies of a message to several mailboxes have neither.
//   - Postfix's smtpd prepends its Received ("… by MYHOSTNAME (Postfix)
//     with ESMTP id QUEUEID …") when it writes the queue file. Postfix does
//     not send it to milters: the milter's first header is the sender's.
//
// Dovecot's fields are not in the journal because they do not exist until the
// message is delivered. Postfix's Received is in the queue file but Postfix
// does not pass it to milters (measured: a milter's first header is the
// first one the client sent). Everything else Postfix's cleanup changes
// before the queue file is written (Return-Path removed, missing Message-Id,
// Date and From added, addresses without a domain qualified) the milter does
// see, so journal and mailbox agree on it.
var (
	DovecotAdded = []AddedField{
		{Name: "Return-Path", Who: "Dovecot LMTP (envelope sender)"},
		{Name: "Delivered-To", Who: "Dovecot LMTP (envelope recipient)", Optional: true},
		{Name: "Received", Contains: " with LMTP", Who: "Dovecot LMTP"},
	}
	PostfixAdded = []AddedField{
		{Name: "Received", Contains: "(Postfix) with ", Who: "Postfix smtpd"},
	}
)

// StripAdded removes the fields want from the top of a stored message, in
// that order, and returns them (as stored, folded) and the rest. It is an
// error when the message does not start with exactly those fields (optional
// ones may be missing).
func StripAdded(stored []byte, want []AddedField) (removed []string, rest []byte, err error) {
	rest = stored
	for _, f := range want {
		field, after := firstField(rest)
		name, _, ok := strings.Cut(field, ":")
		if !ok || !strings.EqualFold(name, f.Name) || !strings.Contains(unfold(field), f.Contains) {
			if f.Optional {
				continue
			}
			return removed, rest, fmt.Errorf("expected the %s field added by %s (containing %q), found %q", f.Name, f.Who, f.Contains, trunc(field, 200))
		}
		removed = append(removed, field)
		rest = after
	}
	return removed, rest, nil
}

// firstField splits off the first header field with its continuation lines.
func firstField(b []byte) (string, []byte) {
	end := 0
	for {
		i := bytes.IndexByte(b[end:], '\n')
		if i < 0 {
			return string(b), nil
		}
		end += i + 1
		if end >= len(b) || (b[end] != ' ' && b[end] != '\t') {
			return string(b[:end]), b[end:]
		}
	}
}

func unfold(s string) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(s)
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// PostfixLineLimit is Postfix's smtp_line_length_limit (and the lmtp_ one),
// 998 by default: its SMTP and LMTP clients break longer lines.
const PostfixLineLimit = 998

// BreakLongLines applies what Postfix's SMTP/LMTP client does to a line
// longer than limit bytes (not counting its CRLF): it sends the first limit
// bytes, then "CRLF SPACE" and up to limit-1 more, and so on, each piece with
// its leading space at most limit long ("breaking line > 998 bytes with
// <CR><LF>SPACE" in Postfix's log). The milter, and so the journal, sees the
// line unbroken.
func BreakLongLines(b []byte, limit int) []byte {
	var out bytes.Buffer
	out.Grow(len(b) + len(b)/limit*3)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		var line, eol []byte
		if i < 0 {
			line, b = b, nil
		} else {
			line, eol, b = b[:i], b[i:i+1], b[i+1:]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line, eol = line[:n-1], []byte("\r\n")
			}
		}
		// The break inserts CRLF in a CRLF message, LF in an LF one.
		brk := "\r\n "
		if len(eol) == 1 {
			brk = "\n "
		}
		n := limit
		for len(line) > n {
			out.Write(line[:n])
			out.WriteString(brk)
			line = line[n:]
			n = limit - 1
		}
		out.Write(line)
		out.Write(eol)
	}
	return out.Bytes()
}

// ToLF turns every CRLF into LF, as Dovecot does when it saves to maildir
// (mail_save_crlf = no, the default): Dovecot's maildir files have LF line
// ends, the journal has the CRLF of the SMTP stream.
func ToLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

// CompareJournal compares a journaled message with the copy Dovecot stored.
// It removes the fields added on delivery (DovecotAdded, then PostfixAdded)
// from the stored copy, turns the journal's CRLF into LF and breaks its
// long lines as Postfix's LMTP client does; the rest must be equal byte for
// byte. It returns the removed fields.
func CompareJournal(journaled, stored []byte) ([]string, error) {
	removed, rest, err := StripAdded(stored, append(append([]AddedField(nil), DovecotAdded...), PostfixAdded...))
	if err != nil {
		return removed, err
	}
	want := ToLF(BreakLongLines(journaled, PostfixLineLimit))
	if bytes.Equal(rest, want) {
		return removed, nil
	}
	return removed, fmt.Errorf("journal and mailbox differ: %s", firstDifference(want, rest))
}

// firstDifference describes where a and b first differ, with context.
func firstDifference(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(i-80, 0)
	return fmt.Sprintf("journal %d bytes, mailbox %d bytes (after the delivery fields), first difference at byte %d:\n  journal: %q\n  mailbox: %q",
		len(a), len(b), i, a[lo:min(i+80, len(a))], b[lo:min(i+80, len(b))])
}

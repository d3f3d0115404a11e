package mimestruct

import (
	"net/mail"
	"slices"
	"strings"
	"time"
)

// buildEnvelope makes a message's envelope from its header fields (RFC 3501
// §7.4.2).
func buildEnvelope(v *[numFields]string) Envelope {
	e := Envelope{
		Date:      parseDate(v[fieldDate]),
		Subject:   decodeWords(v[fieldSubject]),
		From:      parseAddressList(v[fieldFrom]),
		Sender:    parseAddressList(v[fieldSender]),
		ReplyTo:   parseAddressList(v[fieldReplyTo]),
		To:        parseAddressList(v[fieldTo]),
		Cc:        parseAddressList(v[fieldCc]),
		Bcc:       parseAddressList(v[fieldBcc]),
		InReplyTo: msgIDs(v[fieldInReplyTo]),
	}
	if ids := msgIDs(v[fieldMessageID]); len(ids) > 0 {
		e.MessageID = ids[0]
	}
	// RFC 3501 §7.4.2: "If the Sender or Reply-To lines are absent in the
	// [RFC-2822] header, or are present but empty, the server sets the
	// corresponding member of the envelope to be the same value as the from
	// member."
	if len(e.Sender) == 0 {
		e.Sender = slices.Clone(e.From)
	}
	if len(e.ReplyTo) == 0 {
		e.ReplyTo = slices.Clone(e.From)
	}
	return e
}

// msgIDs returns the msg-ids of a Message-ID, In-Reply-To or References value
// without their angle brackets (RFC 5322 §3.6.4), skipping the phrases that
// RFC 822 allowed between them. A value without angle brackets that is one
// word is taken as an id, as mailers write them.
func msgIDs(s string) []string {
	var ids []string
	rest := removeComments(s)
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			rest = rest[i+1:]
			if id := strings.TrimSpace(rest); id != "" && !strings.ContainsAny(id, " \t<") {
				ids = append(ids, clean(id))
			}
			break
		}
		if id := strings.Join(strings.Fields(rest[i+1:i+j]), ""); id != "" {
			ids = append(ids, clean(id))
		}
		rest = rest[i+j+1:]
	}
	if ids == nil {
		if w := strings.TrimSpace(rest); w != "" && !strings.ContainsAny(w, " \t") {
			ids = append(ids, clean(w))
		}
	}
	return ids
}

// extraDateLayouts are dates mailers write that net/mail.ParseDate, which
// follows RFC 5322 §3.3 and its obsolete forms, does not take.
var extraDateLayouts = []string{
	time.ANSIC,    // asctime(3): "Mon Jan _2 15:04:05 2006"
	time.UnixDate, // date(1): "Mon Jan _2 15:04:05 MST 2006"
	"Mon Jan _2 15:04:05 -0700 2006",
	"Mon, 2 Jan 2006 15:04:05",
	"2 Jan 2006 15:04:05",
	"Mon, 2 January 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST-0700",
	"Mon, 2 Jan 2006 15:04:05 -07:00",
	"Mon, 2 Jan 2006 15:04:05 -0700 MST",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
	time.RFC3339,
}

// obsZones are RFC 5322 §4.3's obsolete zone names. time.Parse gives a zone
// name it does not know offset 0.
var obsZones = map[string]int{
	"UT": 0, "GMT": 0, "Z": 0,
	"EST": -5 * 3600, "EDT": -4 * 3600,
	"CST": -6 * 3600, "CDT": -5 * 3600,
	"MST": -7 * 3600, "MDT": -6 * 3600,
	"PST": -8 * 3600, "PDT": -7 * 3600,
}

// parseDate parses a Date value leniently; the zero time when it cannot.
func parseDate(s string) time.Time {
	s = strings.Join(strings.Fields(removeComments(s)), " ")
	if s == "" {
		return time.Time{}
	}
	// The form RFC 5322 §3.3 recommends, which nearly every mailer writes,
	// first: net/mail.ParseDate tries dozens of layouts before it.
	t, err := time.Parse("Mon, 2 Jan 2006 15:04:05 -0700", s)
	if err != nil {
		t, err = mail.ParseDate(s)
	}
	if err != nil {
		for _, layout := range extraDateLayouts {
			if t, err = time.Parse(layout, s); err == nil {
				break
			}
		}
	}
	if err != nil {
		return time.Time{}
	}
	name, off := t.Zone()
	if want, ok := obsZones[strings.ToUpper(name)]; ok && off == 0 && want != 0 {
		t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(),
			time.FixedZone(name, want))
		off = want
	}
	if t.IsZero() {
		return time.Time{}
	}
	// Only the offset is kept (IMAP shows it, not a zone name), as the
	// stored form keeps it.
	return t.In(time.FixedZone("", off))
}

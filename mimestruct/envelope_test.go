package mimestruct

import (
	"reflect"
	"testing"
	"time"
)

func TestParseAddressList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Address
	}{
		{"", nil},
		{"alice@example.org", []Address{{"", "alice", "example.org"}}},
		{"Alice <alice@example.org>", []Address{{"Alice", "alice", "example.org"}}},
		{`"Doe, John" <john@x.com>, jane@y.com`, []Address{{"Doe, John", "john", "x.com"}, {"", "jane", "y.com"}}},
		{"John Q. Public <jqp@x>", []Address{{"John Q. Public", "jqp", "x"}}},
		{"jqp@x (John Q. Public)", []Address{{"John Q. Public", "jqp", "x"}}},
		{"=?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3=BCller?= <j@x.de>", []Address{{"Jörg Müller", "j", "x.de"}}},
		{`"=?iso-8859-1?q?J=F6rg?=" <j@x.de>`, []Address{{"Jörg", "j", "x.de"}}},
		{"undisclosed-recipients:;", []Address{{"", "undisclosed-recipients", ""}, {}}},
		{"friends: a@b, C <c@d>; , e@f", []Address{{"", "friends", ""}, {"", "a", "b"}, {"C", "c", "d"}, {}, {"", "e", "f"}}},
		{"open group: a@b", []Address{{"", "open group", ""}, {"", "a", "b"}, {}}},
		{"root", []Address{{"", "root", MissingDomain}}},
		{"Name <>, <>", []Address{{"Name", MissingMailbox, MissingDomain}}},
		{"<@relay1,@relay2:user@host>", []Address{{"", "user", "host"}}},
		{"Alice <alice@example.org", []Address{{"Alice", "alice", "example.org"}}},
		{"Alice alice@example.org", []Address{{"Alice", "alice", "example.org"}}},
		{"a@b c@d", []Address{{"", "a", "b"}, {"", "c", "d"}}},
		{"<a@b> junk, c@d", []Address{{"", "a", "b"}, {"", "c", "d"}}},
		{`"john smith"@example.com`, []Address{{"", "john smith", "example.com"}}},
		{"user@[192.0.2.1]", []Address{{"", "user", "[192.0.2.1]"}}},
		{`"unterminated <a@b>`, []Address{{"", "unterminated <a@b>", MissingDomain}}},
		{"@b", []Address{{"", MissingMailbox, "b"}}},
		{",,;:<>@", nil},
		{"a\x00b@c\rd", []Address{{"", "a b", "c"}}},
	} {
		got := parseAddressList(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseAddressList(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeWords(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"=?UTF-8?B?w6TDtsO8?=", "äöü"},
		{"=?utf-8?q?a_b?= =?utf-8?q?c?=", "a bc"},
		{"=?utf-8?q?a?=  x  =?utf-8?q?b?=", "a  x  b"},
		{"Re: =?iso-8859-1?q?caf=E9?=", "Re: café"},
		{"=?windows-1252?q?=80?=", "€"},
		{"=?utf-8?b?4oI=?= =?utf-8?b?rA==?=", "€"}, // a character split across words
		{"=?utf-8*en?q?lang?=", "lang"},
		{"=?x-unknown-charset?q?abc?=", "abc"},
		{"=?utf-8?x?bad encoding?=", "=?utf-8?x?bad encoding?="},
		{"=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="},
		{"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"},
		{"a =? b ?= c", "a =? b ?= c"},
		{"=?utf-8?q?=FF?=", "\uFFFD"},
	} {
		if got := decodeWords(tc.in); got != tc.want {
			t.Errorf("decodeWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseDate(t *testing.T) {
	utc := func(s string) time.Time {
		t.Helper()
		d, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		in   string
		want time.Time
		off  int
	}{
		{"Mon, 2 Jan 2006 15:04:05 -0700", utc("2006-01-02T22:04:05Z"), -7 * 3600},
		{"2 Jan 2006 15:04:05 +0100 (CET)", utc("2006-01-02T14:04:05Z"), 3600},
		{"Mon, 02 Jan 06 15:04 GMT", utc("2006-01-02T15:04:00Z"), 0},
		{"Mon, 2 Jan 2006 15:04:05 EST", utc("2006-01-02T20:04:05Z"), -5 * 3600},
		{"Mon Jan  2 15:04:05 2006", utc("2006-01-02T15:04:05Z"), 0},
		{"Mon,\r\n 2 Jan 2006\t15:04:05 +0000", utc("2006-01-02T15:04:05Z"), 0},
		{"yesterday", time.Time{}, 0},
		{"", time.Time{}, 0},
	} {
		got := parseDate(tc.in)
		if !got.Equal(tc.want) {
			t.Errorf("parseDate(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if _, off := got.Zone(); !got.IsZero() && off != tc.off {
			t.Errorf("parseDate(%q): offset %d, want %d", tc.in, off, tc.off)
		}
	}
}

func TestEnvelope(t *testing.T) {
	raw := "From: Alice <alice@example.org>\r\nReply-To: \r\nTo: bob@example.com\r\nCc: carol@example.com\r\nBcc: dave@example.com\r\n" +
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: < id1@example.org >\r\n" +
		"In-Reply-To: Your message of Monday <a@x> <b@y>\r\nDate: Tue, 3 Jan 2006 10:00:00 +0000\r\n\r\nbody"
	info := mustParse(t, raw)
	e := info.Envelope
	alice := []Address{{"Alice", "alice", "example.org"}}
	if !reflect.DeepEqual(e.From, alice) || !reflect.DeepEqual(e.Sender, alice) || !reflect.DeepEqual(e.ReplyTo, alice) {
		t.Errorf("From %v Sender %v ReplyTo %v: Sender and an empty Reply-To must default to From", e.From, e.Sender, e.ReplyTo)
	}
	if e.Subject != "Grüße" || e.MessageID != "id1@example.org" || !reflect.DeepEqual(e.InReplyTo, []string{"a@x", "b@y"}) ||
		e.To[0].Mailbox != "bob" || e.Cc[0].Mailbox != "carol" || e.Bcc[0].Mailbox != "dave" || e.Date.Day() != 3 {
		t.Errorf("%+v", e)
	}
	if got := msgIDs("bare@id"); !reflect.DeepEqual(got, []string{"bare@id"}) {
		t.Errorf("msgIDs(bare) = %q", got)
	}
	if got := msgIDs("<a@b"); !reflect.DeepEqual(got, []string{"a@b"}) {
		t.Errorf("msgIDs(<a@b) = %q", got)
	}
}

package journal

import (
	"strings"
	"testing"
)

func identityOf(t *testing.T, from string, rcpts []string, msg string) ID {
	t.Helper()
	h := NewIdentityHasher()
	if _, err := h.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	env := Envelope{MailFrom: from}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, Recipient{Address: r})
	}
	return h.ID(env)
}

func TestIdentity(t *testing.T) {
	const base = "From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
	rcpts := []string{"b@example.com", "c@example.com"}
	want := identityOf(t, "a@example.org", rcpts, base)
	if want.IsZero() {
		t.Fatal("zero id")
	}

	same := []struct {
		name      string
		from      string
		rcpts     []string
		msg       string
		different bool
	}{
		{name: "identical", msg: base},
		{name: "trace fields added", msg: "Received: from mx by host (Postfix) with ESMTP id 4ABC\r\n\tfor <b@example.com>; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
			"Return-Path: <a@example.org>\r\nDelivered-To: b@example.com\r\nX-Original-To: b@example.com\r\n" + base},
		{name: "trace field among others, any case", msg: strings.Replace(base, "Subject: hi\r\n", "Subject: hi\r\nRECEIVED: by x\r\nreturn-path: <>\r\n", 1)},
		{name: "mbox From_ line", msg: "From a@example.org Mon Jan  2 15:04:05 2006\r\n" + base},
		{name: "LF line ends", msg: strings.ReplaceAll(base, "\r\n", "\n")},
		{name: "recipient order, case, duplicates and brackets", rcpts: []string{"<C@Example.com>", "b@example.com", "B@EXAMPLE.COM"}, msg: base},
		{name: "sender case", from: "A@Example.ORG", msg: base},

		{name: "different body", msg: strings.Replace(base, "body", "Body", 1), different: true},
		{name: "different subject", msg: strings.Replace(base, "hi", "hi!", 1), different: true},
		{name: "extra non-trace field", msg: "X-Mailer: m\r\n" + base, different: true},
		{name: "trace-like line in the body is content", msg: base + "Received: x\r\n", different: true},
		{name: "bare CR is not a line end", msg: strings.Replace(base, "body\r\n", "body\r", 1), different: true},
		{name: "different sender", from: "z@example.org", msg: base, different: true},
		{name: "null sender", from: "<>", msg: base, different: true},
		{name: "fewer recipients", rcpts: []string{"b@example.com"}, msg: base, different: true},
		{name: "more recipients", rcpts: []string{"b@example.com", "c@example.com", "d@example.com"}, msg: base, different: true},
	}
	for _, tc := range same {
		t.Run(tc.name, func(t *testing.T) {
			from := tc.from
			if from == "" {
				from = "a@example.org"
			}
			r := tc.rcpts
			if r == nil {
				r = rcpts
			}
			got := identityOf(t, from, r, tc.msg)
			if (got != want) != tc.different {
				t.Errorf("id %s, base %s, want different=%v", got, want, tc.different)
			}
		})
	}
}

func TestIdentityStreaming(t *testing.T) {
	msg := "Received: a\r\n b\r\nSubject: s\r\n\r\nline one\r\nline two\r\r\n\r"
	want := identityOf(t, "f", []string{"r"}, msg)
	for split := 1; split < len(msg); split++ {
		h := NewIdentityHasher()
		h.Write([]byte(msg[:split]))
		h.Write([]byte(msg[split:]))
		if got := h.ID(Envelope{MailFrom: "f", Recipients: []Recipient{{Address: "r"}}}); got != want {
			t.Fatalf("split at %d: %s, want %s", split, got, want)
		}
	}
}

func TestIsTraceField(t *testing.T) {
	for _, n := range []string{"Received", "RETURN-PATH", "delivered-to", "X-Original-To"} {
		if !IsTraceField(n) {
			t.Errorf("%s is a trace field", n)
		}
	}
	for _, n := range []string{"Subject", "Message-ID", "Receive", "X-Received-Foo"} {
		if IsTraceField(n) {
			t.Errorf("%s is no trace field", n)
		}
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These run without any MTA (also under -short): they pin the harness's own
// helpers to what was measured against Postfix and Dovecot.

func TestBreakLongLines(t *testing.T) {
	// Measured with Postfix 3.7.11's LMTP client: a 1,214-byte header line
	// arrived as lines of 998 and 217 bytes (" " + 216); a 2,100-byte body
	// line as 998, 998 (" " + 997) and 106 (" " + 105); a 998-byte line
	// unchanged.
	in := "Subject: long " + strings.Repeat("h", 1198) + "\r\n\r\n" +
		strings.Repeat("y", 2100) + "\r\n" + strings.Repeat("z", 998) + "\r\nend\r\n"
	got := BreakLongLines([]byte(in), PostfixLineLimit)
	var lens []int
	for _, l := range strings.Split(strings.TrimSuffix(string(got), "\r\n"), "\r\n") {
		lens = append(lens, len(l))
	}
	want := []int{998, 215, 0, 998, 998, 106, 998, 3}
	if len(lens) != len(want) {
		t.Fatalf("line lengths %v, want %v", lens, want)
	}
	for i := range want {
		if lens[i] != want[i] {
			t.Fatalf("line lengths %v, want %v", lens, want)
		}
	}
	if strings.ReplaceAll(string(got), "\r\n ", "") != in {
		t.Errorf("unbreaking does not give the input back")
	}
	if lf := BreakLongLines([]byte(strings.Repeat("x", 1000)+"\n"), 998); string(lf) != strings.Repeat("x", 998)+"\n xx\n" {
		t.Errorf("LF input: %q", lf[990:])
	}
}

func TestStripAdded(t *testing.T) {
	stored := "Return-Path: <s@example.net>\n" +
		"Delivered-To: alice@example.test\n" +
		"Received: from mx.lifeline.test ([127.0.0.1])\n\tby vm with LMTP\n\tid x\n\t(envelope-from <s@example.net>)\n\tfor <alice@example.test>; date\n" +
		"Received: from client.lifeline.test (unknown [127.0.0.1])\n\tby mx.lifeline.test (Postfix) with ESMTP id ABC\n\tfor <alice@example.test>; date\n" +
		"Received: from elsewhere by somewhere (Postfix) with ESMTP id DEF; date\n" +
		"Subject: x\n\nbody\n"
	all := append(append([]AddedField(nil), DovecotAdded...), PostfixAdded...)
	removed, rest, err := StripAdded([]byte(stored), all)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 || !strings.HasPrefix(string(rest), "Received: from elsewhere") {
		t.Errorf("removed %d fields, rest %q", len(removed), rest)
	}
	// Several recipients in one LMTP transaction: no Delivered-To.
	multi := strings.Replace(stored, "Delivered-To: alice@example.test\n", "", 1)
	if removed, _, err := StripAdded([]byte(multi), all); err != nil || len(removed) != 3 {
		t.Errorf("without Delivered-To: %d removed, %v", len(removed), err)
	}
	// A message whose first Received is not Dovecot's is refused.
	if _, _, err := StripAdded([]byte("Return-Path: <>\nReceived: from a by b with ESMTP; d\n\nx\n"), all); err == nil {
		t.Errorf("a foreign Received was taken for Dovecot's")
	}
}

func TestCompareJournal(t *testing.T) {
	journal := "X-Lifeline-Test-Id: 1\r\nSubject: s\r\n\r\n" + strings.Repeat("a", 1000) + "\r\n"
	stored := "Return-Path: <s@example.net>\nDelivered-To: a@example.test\n" +
		"Received: from mx ([127.0.0.1])\n\tby vm with LMTP\n\tid x; d\n" +
		"Received: from c (unknown [127.0.0.1])\n\tby mx (Postfix) with ESMTP id A; d\n" +
		"X-Lifeline-Test-Id: 1\nSubject: s\n\n" + strings.Repeat("a", 998) + "\n aa\n"
	if _, err := CompareJournal([]byte(journal), []byte(stored)); err != nil {
		t.Fatal(err)
	}
	if _, err := CompareJournal([]byte(strings.Replace(journal, "Subject: s", "Subject: t", 1)), []byte(stored)); err == nil {
		t.Errorf("a changed subject went unnoticed")
	}
}

func TestCRLFAndDotStuffing(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\n":       "a\r\nb\r\n",
		"a\r\nb":       "a\r\nb\r\n",
		"a\rb\n":       "a\rb\r\n",
		"a\r\r\n":      "a\r\r\n",
		"":             "",
		"\n":           "\r\n",
		"x\r\n\r\n.\n": "x\r\n\r\n.\r\n",
	} {
		if got := string(CRLF([]byte(in))); got != want {
			t.Errorf("CRLF(%q) = %q, want %q", in, got, want)
		}
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := writeDotStuffed(w, []byte(".\r\n..\r\na.b\r\n.x\r\r\n")); err != nil {
		t.Fatal(err)
	}
	if want := "..\r\n...\r\na.b\r\n..x\r\r\n.\r\n"; b.String() != want {
		t.Errorf("dot-stuffed %q, want %q", b.String(), want)
	}
}

func TestTestIDOf(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"Return-Path: <>\nX-Lifeline-Test-Id: e2e-1\nSubject: x\n\nbody\n", "e2e-1"},
		{"x-lifeline-test-id:  e2e-2 \r\n\r\n", "e2e-2"},
		{"Subject: x\n\nX-Lifeline-Test-Id: in-body\n", ""},
		{"Subject: " + strings.Repeat("x", 70000) + "\nX-Lifeline-Test-Id: after-long\n\n", "after-long"},
		{"", ""},
	} {
		got, err := TestIDOf(bufio.NewReaderSize(strings.NewReader(c.msg), 16<<10))
		if err != nil || got != c.want {
			t.Errorf("TestIDOf(%.40q) = %q, %v; want %q", c.msg, got, err, c.want)
		}
	}
	if got := string(StripMboxFrom([]byte("From MAILER-DAEMON Thu Jan  1\nSubject: x\n"))); got != "Subject: x\n" {
		t.Errorf("StripMboxFrom: %q", got)
	}
}

func TestPostfixMaybeResent(t *testing.T) {
	log := filepath.Join(t.TempDir(), "postfix.log")
	lines := "Nov 27 04:22:00 postfix/lmtp[1234]: 4F1A2B3C4D: to=<alice@example.test>, relay=127.0.0.1[127.0.0.1]:35955, delay=0.1, dsn=4.4.2, status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once)\n" +
		"Nov 27 04:22:00 postfix/lmtp[1234]: 5A6B7C8D9E: to=<bob@example.test>, relay=127.0.0.1[127.0.0.1]:35955, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:35955: Connection refused)\n"
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := postfixMaybeResent(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["4F1A2B3C4D"] {
		t.Errorf("got %v, want only 4F1A2B3C4D", got)
	}
}

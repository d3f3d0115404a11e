package mailview

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

var me = Address{"Alice", "alice@example.org"}

func origMsg() *Message {
	return &Message{
		From:      []Address{{"Jörg", "joerg@example.de"}},
		To:        []Address{{"Alice", "ALICE@example.org"}, {"", "bob@example.org"}},
		Cc:        []Address{{"Carol", "carol@example.net"}, {"Bob again", "bob@example.org"}},
		Subject:   "Re: AW: plans",
		Date:      time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC),
		MessageID: "m1@example.de", InReplyTo: "m0@example.org",
		References: []string{"a@x", "m0@example.org"},
		Text:       "line one\r\n> earlier\r\n\r\nline three\r\n",
	}
}

func emails(l []Address) string {
	var s []string
	for _, a := range l {
		s = append(s, a.Email)
	}
	return strings.Join(s, ",")
}

func TestReply(t *testing.T) {
	o := origMsg()
	d := Reply(o, me, false)
	eq(t, "Subject", d.Subject, "Re: plans")
	eq(t, "To", emails(d.To), "joerg@example.de")
	eq(t, "Cc", len(d.Cc), 0)
	eq(t, "InReplyTo", d.InReplyTo, "m1@example.de")
	eq(t, "References", strings.Join(d.References, " "), "a@x m0@example.org m1@example.de")
	contains(t, d.Text, "On Fri, 27 Nov 2026 05:00 +0000, Jörg wrote:\n> line one\n>> earlier\n>\n> line three\n")

	d = Reply(o, me, true)
	eq(t, "To", emails(d.To), "joerg@example.de,bob@example.org")
	eq(t, "Cc", emails(d.Cc), "carol@example.net")

	o.ReplyTo = []Address{{"List", "list@example.org"}}
	d = Reply(o, me, false)
	eq(t, "To", emails(d.To), "list@example.org")

	// Without References, In-Reply-To starts the chain (RFC 5322 §3.6.4).
	o.References = nil
	d = Reply(o, me, false)
	eq(t, "References", strings.Join(d.References, " "), "m0@example.org m1@example.de")

	o.Subject = "plain"
	eq(t, "Subject", Reply(o, me, false).Subject, "Re: plain")
}

func TestForward(t *testing.T) {
	d := Forward(origMsg(), me)
	eq(t, "Subject", d.Subject, "Fwd: Re: AW: plans")
	contains(t, d.Text, "---------- Forwarded message ----------\nFrom: Jörg <joerg@example.de>\n")
	contains(t, d.Text, "Subject: Re: AW: plans\nTo: Alice <ALICE@example.org>, bob@example.org\n")
	contains(t, d.Text, "line one\n> earlier")
	eq(t, "To", len(d.To), 0)
	o := origMsg()
	o.Subject = "Fwd: x"
	eq(t, "Subject", Forward(o, me).Subject, "Fwd: x")
}

func testDraft() Draft {
	return Draft{
		From:       Address{"Älice Müller", "alice@example.org"},
		To:         []Address{{"Bob, the Builder", "bob@example.org"}},
		Cc:         []Address{{"", "carol@example.net"}},
		Bcc:        []Address{{"Secret", "secret@example.com"}},
		Subject:    "Grüße — a long subject line that needs folding because it is longer than seventy-eight characters",
		Text:       "Hällo,\nline with trailing space \n" + strings.Repeat("x", 200) + "\n.\nFrom me\n",
		InReplyTo:  "<m1@example.de>",
		References: []string{"a@x", "<m1@example.de>"},
		Date:       time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC),
		Attachments: []DraftAttachment{
			{Filename: "Résumé 2026.pdf", ContentType: "application/pdf", Data: bytes.NewReader(bytes.Repeat([]byte{0, 1, 2, 255}, 100))},
			{Filename: "../notes.txt", ContentType: "text/plain; charset=utf-8", Data: strings.NewReader("notes")},
		},
	}
}

func TestBuild(t *testing.T) {
	raw, err := Build(testDraft())
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 998 || strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d too long or bare CR/LF", i)
		}
		for _, c := range []byte(line) {
			if c >= 0x80 {
				t.Fatalf("line %d not 7-bit: %q", i, line)
			}
		}
	}
	if bytes.Contains(bytes.ToLower(raw), []byte("secret")) {
		t.Error("Bcc written into the message")
	}
	// Parse it back with go-message.
	mr, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := mr.Header.Subject()
	eq(t, "Subject", subj, testDraft().Subject)
	from, _ := mr.Header.AddressList("From")
	eq(t, "From", from[0].Name, "Älice Müller")
	to, _ := mr.Header.AddressList("To")
	eq(t, "To", to[0].Name, "Bob, the Builder")
	id, _ := mr.Header.MessageID()
	if !strings.HasSuffix(id, "@example.org") {
		t.Errorf("Message-ID %q", id)
	}
	refs, _ := mr.Header.MsgIDList("References")
	eq(t, "References", strings.Join(refs, " "), "a@x m1@example.de")
	eq(t, "MIME-Version", mr.Header.Get("Mime-Version"), "1.0")
	var names []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		switch h := p.Header.(type) {
		case *mail.InlineHeader:
			eq(t, "text", string(b), strings.ReplaceAll(testDraft().Text, "\n", "\r\n"))
		case *mail.AttachmentHeader:
			n, _ := h.Filename()
			names = append(names, n)
			if n == "Résumé 2026.pdf" && !bytes.Equal(b, bytes.Repeat([]byte{0, 1, 2, 255}, 100)) {
				t.Error("attachment bytes differ")
			}
		}
	}
	eq(t, "names", strings.Join(names, "|"), "Résumé 2026.pdf|notes.txt")
	// And with our own Parse.
	m, err := Parse(bytes.NewReader(raw), Options{})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "attachments", len(m.Attachments), 2)
	eq(t, "in-reply-to", m.InReplyTo, "m1@example.de")

	// Without attachments: a single text/plain part.
	d := testDraft()
	d.Attachments, d.MessageID = nil, "<fixed@example.org>"
	raw, err = Build(d)
	if err != nil {
		t.Fatal(err)
	}
	contains(t, string(raw), "Message-Id: <fixed@example.org>\r\n")
	contains(t, string(raw), "Content-Type: text/plain; charset=utf-8\r\n")
	contains(t, string(raw), "Content-Transfer-Encoding: quoted-printable\r\n")
	m, err = Parse(bytes.NewReader(raw), Options{})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "text", m.Text, strings.ReplaceAll(d.Text, "\n", "\r\n"))
}

// TestBuildPython checks Build's output with an independent MIME parser,
// Python's email package (policy=default is strict about defects).
func TestBuildPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 missing in CI")
		}
		t.Skip("python3 missing")
	}
	raw, err := Build(testDraft())
	if err != nil {
		t.Fatal(err)
	}
	script := `
import sys, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
def defects(p):
    return list(p.defects) + [d for part in p.walk() if part is not p for d in part.defects]
assert not defects(m), defects(m)
print(m["subject"])
print(m["from"].addresses[0].display_name)
print(m["to"].addresses[0].display_name)
print(m.get_body(("plain",)).get_content().replace("\r\n", "\n"), end="")
for a in m.iter_attachments():
    print(a.get_filename(), len(a.get_content()))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	d := testDraft()
	want := d.Subject + "\n" + d.From.Name + "\n" + d.To[0].Name + "\n" + d.Text + "Résumé 2026.pdf 400\nnotes.txt 5\n"
	eq(t, "python sees", string(out), want)
}

func TestBuildHeaderInjection(t *testing.T) {
	evil := []func(d *Draft){
		func(d *Draft) { d.Subject = "hi\r\nBcc: victim@example.com" },
		func(d *Draft) { d.Subject = "hi\nX-Evil: 1" },
		func(d *Draft) { d.Subject = "hi\rX-Evil: 1" },
		func(d *Draft) { d.To[0].Name = "Bob\r\nBcc: victim@example.com" },
		func(d *Draft) { d.To[0].Email = "bob@example.org\r\nBcc: victim@example.com" },
		func(d *Draft) { d.From.Name = "A\x00B" },
		func(d *Draft) { d.Cc[0].Email = "carol@example.net>, <victim@example.com" },
		func(d *Draft) { d.InReplyTo = "<a@b>\r\nX-Evil: 1" },
		func(d *Draft) { d.References = []string{"a@b> <c@d"} },
		func(d *Draft) { d.MessageID = "x@y\nBcc: v@w" },
		func(d *Draft) { d.Attachments[0].Filename = "a\r\nContent-Type: text/html" },
		func(d *Draft) { d.Attachments[0].ContentType = "text/html\r\nX-Evil: 1" },
	}
	for i, f := range evil {
		d := testDraft()
		f(&d)
		raw, err := Build(d)
		if err == nil {
			t.Errorf("case %d: Build accepted it:\n%s", i, raw)
		}
	}
	d := testDraft()
	d.To, d.Cc, d.Bcc = nil, nil, nil
	if _, err := Build(d); err == nil {
		t.Error("Build without recipients succeeded")
	}
	d = testDraft()
	d.Subject = "tab\tis fine"
	if _, err := Build(d); err != nil {
		t.Errorf("tab: %v", err)
	}
	if _, err := Build(testDraft()); errors.Is(err, ErrHeaderInjection) {
		t.Error("clean draft rejected")
	}
}

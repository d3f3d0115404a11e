package journal

import (
	"bytes"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want Summary
	}{{
		name: "crlf",
		msg: "From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nCc: carol@example.com\r\n" +
			"Subject: Hello\r\nDate: Mon, 2 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1@example.org>\r\n\r\nbody\r\n",
		want: Summary{From: "Alice <alice@example.org>", To: "bob@example.com", Cc: "carol@example.com",
			Subject: "Hello", Date: "Mon, 2 Jan 2006 15:04:05 -0700", MessageID: "<1@example.org>"},
	}, {
		name: "lf and folding",
		msg:  "Subject: a\n b\n\tc\nTo: x\n\nbody",
		want: Summary{Subject: "a b\tc", To: "x"},
	}, {
		name: "crlf folding",
		msg:  "Subject: a\r\n  b\r\n\r\n",
		want: Summary{Subject: "a  b"},
	}, {
		name: "first occurrence wins, names fold case",
		msg:  "SUBJECT: one\r\nsubject: two\r\nfrom: f\r\n\r\n",
		want: Summary{Subject: "one", From: "f"},
	}, {
		name: "obsolete white space before colon",
		msg:  "Subject : spaced\r\n\r\n",
		want: Summary{Subject: "spaced"},
	}, {
		name: "no blank line, no final line end",
		msg:  "From: a\r\nSubject: only headers",
		want: Summary{From: "a", Subject: "only headers"},
	}, {
		name: "not a header section",
		msg:  "hello world\r\nSubject: no\r\n\r\n",
		want: Summary{},
	}, {
		name: "header section ends at a line that is no field",
		msg:  "Subject: yes\r\nthis is body\r\nFrom: not a header\r\n",
		want: Summary{Subject: "yes"},
	}, {
		name: "leading folded line",
		msg:  " Subject: no\r\n\r\n",
		want: Summary{},
	}, {
		name: "8-bit, NUL and bare CR kept raw",
		msg:  "Subject: gr\xfc\xdf\x00e\rx\r\n\r\n",
		want: Summary{Subject: "gr\xfc\xdf\x00e x"},
	}, {
		name: "empty value",
		msg:  "Subject:\r\nTo:   \r\n\r\n",
		want: Summary{},
	}, {
		name: "mbox From_ line in front",
		msg:  "From alice@example.org Mon Jan  2 15:04:05 2006\nSubject: s\n\n",
		want: Summary{Subject: "s"},
	}, {
		name: "empty message",
		msg:  "",
		want: Summary{},
	}, {
		name: "blank line first",
		msg:  "\r\nSubject: body\r\n",
		want: Summary{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSummary(strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+q\nwant %+q", got, tc.want)
			}
			// One byte at a time must give the same result.
			h := NewIdentityHasher()
			for i := range len(tc.msg) {
				h.Write([]byte{tc.msg[i]})
			}
			if s := h.Summary(); s != tc.want {
				t.Errorf("byte by byte: got %+q", s)
			}
		})
	}
}

func TestSummaryLimits(t *testing.T) {
	long := strings.Repeat("x", SummaryFieldMax+100)
	s, err := ParseSummary(strings.NewReader("Subject: " + long + "\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Subject) != SummaryFieldMax {
		t.Errorf("subject length %d, want %d", len(s.Subject), SummaryFieldMax)
	}

	// A header section over HeaderLimit: fields before the limit count, the rest
	// is body. The message is far larger than the limit and must still be read.
	var msg bytes.Buffer
	msg.WriteString("From: first\r\n")
	for msg.Len() < HeaderLimit+10000 {
		msg.WriteString("X-Filler: " + strings.Repeat("y", 990) + "\r\n")
	}
	msg.WriteString("Subject: too late\r\n\r\nbody\r\n")
	h := NewIdentityHasher()
	if _, err := io.Copy(h, bytes.NewReader(msg.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := h.Summary(); got.From != "first" || got.Subject != "" {
		t.Errorf("huge header: got %+q", got)
	}
	if h.Size() != int64(msg.Len()) {
		t.Errorf("size %d, want %d", h.Size(), msg.Len())
	}
}

// TestSummaryCorpus runs the parser over real mail written by many MTAs and
// checks it against net/mail where both understand the message.
func TestSummaryCorpus(t *testing.T) {
	root := filepath.Join("..", "..", "shared", "corpus", "sisimai")
	files, _ := filepath.Glob(filepath.Join(root, "*", "*"))
	if len(files) == 0 {
		t.Skipf("mail corpus not found at %s; it lives beside the project root", root)
	}
	compared := 0
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseSummary(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		// net/mail joins folded lines with one space and trims; compare with white
		// space collapsed.
		for _, f := range []struct{ key, got string }{
			{"From", got.From}, {"To", got.To}, {"Subject", got.Subject}, {"Message-Id", got.MessageID},
		} {
			if w := strings.Join(strings.Fields(m.Header.Get(f.key)), " "); w != strings.Join(strings.Fields(f.got), " ") {
				t.Errorf("%s: %s = %q, net/mail says %q", name, f.key, f.got, w)
			}
		}
		compared++
	}
	t.Logf("%d messages parsed, %d compared with net/mail", len(files), compared)
}

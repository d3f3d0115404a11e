package mailview

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// bigMessage is a newsletter-like message: an HTML part of about htmlKB KiB
// with links and images, its text alternative, and a 1 MiB attachment.
func bigMessage(htmlKB int) []byte {
	var b bytes.Buffer
	b.WriteString("From: news@example.com\r\nTo: alice@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n")
	b.WriteString("--o\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\n")
	b.WriteString(strings.Repeat("Some text of the newsletter.\r\n", htmlKB*1024/30))
	b.WriteString("\r\n--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
	row := `<tr><td style="color: #333; font-size: 14px" bgcolor="#eeeeee"><a href="https://example.com/x?id=1">Item</a> <img src="https://img.example.com/a.png" width="20"> <b>bold</b></td></tr>` + "\r\n"
	b.WriteString("<table>")
	b.WriteString(strings.Repeat(row, htmlKB*1024/len(row)))
	b.WriteString("</table>\r\n--a--\r\n--o\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1, 2, 3, 4}, 256<<10))
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--o--\r\n")
	return b.Bytes()
}

// BenchmarkParse parses a 1.2 MB newsletter (100 KiB of HTML, its text, a
// 1 MiB attachment) for display (full) and for a text search (text-only,
// the HTML not sanitized): the ratio is what TextOnly saves a search.
func BenchmarkParse(b *testing.B) {
	raw := bigMessage(100)
	for _, bc := range []struct {
		name string
		opts Options
	}{{"full", Options{}}, {"text-only", Options{TextOnly: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Parse(bytes.NewReader(raw), bc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParseCost bounds the time of pathological inputs at the size limit, so
// that one hostile message cannot tie up the webmail (generous bounds: the
// machine is shared and -race is slow).
func TestParseCost(t *testing.T) {
	cases := map[string]string{
		"tags":       "Content-Type: text/html\r\n\r\n" + strings.Repeat("<b><i><a href=x>", 200000),
		"attrs":      "Content-Type: text/html\r\n\r\n<p " + strings.Repeat(`a="b" `, 300000) + ">",
		"parts":      "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\n\r\n", 300000),
		"headerline": "Subject: " + strings.Repeat("=?utf-8?q?a?= ", 200000) + "\r\n\r\nx",
		"newsletter": string(bigMessage(2048)),
	}
	for name, raw := range cases {
		start := time.Now()
		m, err := Parse(strings.NewReader(raw), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d := time.Since(start)
		t.Logf("%s: %d bytes in %v (html %d, text %d, %d attachments)", name, len(raw), d, len(m.HTML), len(m.Text), len(m.Attachments))
		if d > 20*time.Second {
			t.Errorf("%s: %v", name, d)
		}
	}
}

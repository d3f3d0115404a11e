package webmail

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// countingJournal counts the messages opened.
type countingJournal struct {
	journal.Journal
	opens atomic.Int64
}

func (c *countingJournal) Open(ctx context.Context, id journal.ID) (io.ReadCloser, error) {
	c.opens.Add(1)
	return c.Journal.Open(ctx, id)
}

// gif is a 1×1 GIF, base64.
const gif = "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

// The body document embeds a message's cid: images reading the message
// once, not once per image: a message with a thousand tiny images after
// megabytes of padding cost a thousand parses of it. The same Content-ID
// many times is embedded once, from its first part, as /cid/ serves it.
func TestInlineImagesOneRead(t *testing.T) {
	const images = 300
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: alice@example.com\r\nSubject: many images\r\n" +
		"Content-Type: multipart/related; boundary=rel\r\n\r\n--rel\r\nContent-Type: text/html\r\n\r\n<p>")
	for i := range images {
		fmt.Fprintf(&b, `<img src="cid:img%d@t">`, i)
	}
	b.WriteString("<img src=\"cid:dup@t\"></p>\r\n--rel\r\nContent-Type: application/octet-stream\r\n\r\n")
	b.WriteString(strings.Repeat(strings.Repeat("x", 76)+"\r\n", 256<<10/78)) // padding
	for i := range images {
		fmt.Fprintf(&b, "--rel\r\nContent-Type: image/gif\r\nContent-ID: <img%d@t>\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", i, gif)
	}
	for i := range 50 {
		// The first dup@t is a GIF; the others, PNG by type, must not
		// replace it.
		ct := "image/png"
		if i == 0 {
			ct = "image/gif"
		}
		fmt.Fprintf(&b, "--rel\r\nContent-Type: %s\r\nContent-ID: <dup@t>\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", ct, gif)
	}
	b.WriteString("--rel--\r\n")

	f := newFixture(t)
	id := f.add(t, time.Time{}, b.String(), "alice@example.com")
	cj := &countingJournal{Journal: f.j}
	e := start(t, f, false, func(o *Options) { o.Journal = cj })
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	before := cj.opens.Load()
	body := c.get("/mail/inbox/" + f.ref(t, "alice@example.com", id) + "/body")
	opens := cj.opens.Load() - before
	if body.StatusCode != 200 {
		t.Fatalf("body: %d", body.StatusCode)
	}
	// One read for the images, one for the text.
	if opens > 2 {
		t.Errorf("%d journal opens for a body with %d images, want at most 2", opens, images+1)
	}
	if n := strings.Count(body.body, "data:image/gif;base64,"+gif); n != images+1 {
		t.Errorf("%d images embedded, want %d", n, images+1)
	}
	if strings.Contains(body.body, "data:image/png") {
		t.Error("a later part with a Content-ID already seen was embedded")
	}
}

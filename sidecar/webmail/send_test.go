package webmail

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// smtpSink is a go-smtp server that records what it gets; reject makes it
// answer RCPT with a 550.
type smtpSink struct {
	addr   string
	reject string
	mu     sync.Mutex
	got    []sunk
}

type sunk struct {
	from  string
	rcpts []string
	data  []byte
}

func startSMTP(t testing.TB, reject string) *smtpSink {
	t.Helper()
	s := &smtpSink{reject: reject}
	srv := smtp.NewServer(s)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

func (s *smtpSink) messages() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

type sinkSession struct {
	s   *smtpSink
	cur sunk
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error { ss.cur.from = from; return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.reject != "" && strings.Contains(to, ss.s.reject) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown here"}
	}
	ss.cur.rcpts = append(ss.cur.rcpts, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.cur.data = b
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, ss.cur)
	ss.s.mu.Unlock()
	ss.cur = sunk{}
	return nil
}
func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }

// postMultipart posts a compose form with files.
func (c *client) postMultipart(path string, fields url.Values, files map[string][]byte) *resp {
	c.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, vs := range fields {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	for name, data := range files {
		w, err := mw.CreateFormFile("files", name)
		if err != nil {
			c.t.Fatal(err)
		}
		w.Write(data)
	}
	mw.Close()
	req, err := http.NewRequest("POST", c.e.ts.URL+path, &buf)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return c.do(req)
}

var hiddenRE = regexpMust(`name="(in_reply_to|references|answered|to|subject)"[^>]*value="([^"]*)"`)

func formFields(body string) url.Values {
	v := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], htmlUnescape(m[2]))
	}
	return v
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&amp;", "&", "&#43;", "+").Replace(s)
}

func TestReplyReachesSMTPAndSent(t *testing.T) {
	f, plain, _, _ := stdFixture(t)
	sink := startSMTP(t, "")
	e := start(t, f, false, func(o *Options) { o.Relay.Addr = sink.addr; o.Relay.Timeout = 10 * time.Second })
	c := e.client(t)
	tok := c.login("alice@example.com", "alice-pw")
	ref := f.ref(t, "alice@example.com", plain)
	page := c.get("/compose?reply=" + ref + "&folder=inbox")
	if page.StatusCode != 200 || !strings.Contains(page.body, "Re: plain hello") || !strings.Contains(page.body, "anne@example.org") {
		t.Fatalf("reply form: %d\n%s", page.StatusCode, page.body)
	}
	form := formFields(page.body)
	form.Set("csrf", tok)
	form.Set("body", "my answer\n\n> first line")
	r := c.postMultipart("/compose", form, map[string][]byte{"notes.txt": []byte("attached notes")})
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/mail/sent") {
		t.Fatalf("send: %d\n%s", r.StatusCode, r.body)
	}
	got := sink.messages()
	if len(got) != 1 || got[0].from != "alice@example.com" || !slices.Equal(got[0].rcpts, []string{"anne@example.org"}) {
		t.Fatalf("relay got %+v", got)
	}
	data := string(got[0].data)
	for _, want := range []string{"Subject: Re: plain hello", "In-Reply-To: <plain@t>", "notes.txt", "my answer"} {
		if !strings.Contains(data, want) {
			t.Errorf("sent message lacks %q:\n%s", want, data)
		}
	}
	ctx := context.Background()
	sent, err := f.store.Messages(ctx, "alice@example.com/Sent")
	if err != nil || len(sent) != 1 {
		t.Fatalf("Sent: %v %v", sent, err)
	}
	if l := c.get(r.Header.Get("Location")); !strings.Contains(l.body, "Re: plain hello") || !strings.Contains(l.body, "was sent and saved in Sent") {
		t.Errorf("Sent list:\n%s", l.body)
	}
	if fl, _ := f.store.Flags(ctx, "alice@example.com", f.uid(t, "alice@example.com", plain)); !slices.Contains(fl, userview.FlagAnswered) {
		t.Errorf("original not answered: %v", fl)
	}
}

func TestSendFailureShown(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	sink := startSMTP(t, "nobody")
	// A relay that is not there, and one that refuses the recipient.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct{ relay, want string }{{dead, "could not be sent"}, {sink.addr, "user unknown here"}} {
		e := start(t, f, false, func(o *Options) { o.Relay.Addr = tc.relay; o.Relay.Timeout = 5 * time.Second })
		c := e.client(t)
		tok := c.login("alice@example.com", "alice-pw")
		r := c.postMultipart("/compose", url.Values{"csrf": {tok}, "to": {"nobody@example.net"}, "subject": {"s"}, "body": {"keep this text"}}, nil)
		if r.StatusCode != http.StatusBadGateway || !strings.Contains(r.body, tc.want) || !strings.Contains(r.body, "keep this text") {
			t.Errorf("relay %s: %d\n%s", tc.relay, r.StatusCode, r.body)
		}
		if sent, _ := f.store.Messages(context.Background(), "alice@example.com/Sent"); len(sent) != 0 {
			t.Errorf("a failed message was saved in Sent")
		}
	}
	if len(sink.messages()) != 0 {
		t.Error("refused message delivered")
	}
	_ = errors.New
}

func TestForwardCarriesAttachments(t *testing.T) {
	f, _, attach, bob := stdFixture(t)
	sink := startSMTP(t, "")
	e := start(t, f, false, func(o *Options) { o.Relay.Addr = sink.addr; o.Relay.Timeout = 10 * time.Second })
	c := e.client(t)
	tok := c.login("alice@example.com", "alice-pw")
	ref := f.ref(t, "alice@example.com", attach)
	page := c.get("/compose?forward=" + ref + "&folder=inbox")
	if page.StatusCode != 200 || !strings.Contains(page.body, "Fwd: Grüße with file") || !strings.Contains(page.body, "Grüße.bin") {
		t.Fatalf("forward form: %d\n%s", page.StatusCode, page.body)
	}
	form := url.Values{"csrf": {tok}, "to": {"dave@example.net"}, "subject": {"Fwd: x"}, "body": {"fyi"},
		"fwd": {ref}, "fwd_folder": {"inbox"}}
	if r := c.postMultipart("/compose", form, nil); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("send: %d\n%s", r.StatusCode, r.body)
	}
	got := sink.messages()
	if len(got) != 1 || !strings.Contains(string(got[0].data), "aGVsbG8gYmluYXJ5IHdvcmxk") {
		t.Fatalf("forwarded message lacks the attachment: %+v", got)
	}
	// Forwarding bob's message by its id is refused.
	form.Set("fwd", f.ref(t, "bob@example.com", bob))
	if r := c.postMultipart("/compose", form, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("forwarding another user's message: %d", r.StatusCode)
	}
	if len(sink.messages()) != 1 {
		t.Error("another user's message was sent")
	}
}

func TestReplyAllForm(t *testing.T) {
	f, _, attach, _ := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	page := c.get("/compose?reply=" + f.ref(t, "alice@example.com", attach) + "&folder=inbox&all=1")
	if page.StatusCode != 200 || !strings.Contains(page.body, "carol@example.net") || !strings.Contains(page.body, "j@example.org") {
		t.Fatalf("reply-all form: %d\n%s", page.StatusCode, page.body)
	}
	// Sending is not configured here: the form says so.
	if !strings.Contains(page.body, "Sending is not configured") {
		t.Error("no note that sending is off")
	}
}

func TestInlineImageRoute(t *testing.T) {
	f := newFixture(t)
	id := f.add(t, time.Time{}, strings.ReplaceAll(msgHTML, "REMOTE", "192.0.2.1"), "alice@example.com")
	e := start(t, f, false, nil)
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	base := "/mail/inbox/" + f.ref(t, "alice@example.com", id)
	r := c.get(base + "/cid/logo@t")
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "image/gif" || !strings.HasPrefix(r.Header.Get("Content-Disposition"), "inline") ||
		!strings.HasPrefix(r.body, "GIF89a") {
		t.Errorf("cid route: %d %v", r.StatusCode, r.Header)
	}
	body := c.get(base + "/body")
	if !strings.Contains(body.body, "data:image/gif;base64,R0lGOD") || strings.Contains(body.body, "192.0.2.1") {
		t.Errorf("body document: inline image not embedded or remote one kept:\n%s", body.body)
	}
	if view := c.get(base); !strings.Contains(view.body, "Remote images in this message were blocked") {
		t.Error("no remote-images note")
	}
}

package webmail

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

const (
	msgPlain = "From: Anne Example <anne@example.org>\r\nTo: alice@example.com\r\nSubject: plain hello\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <plain@t>\r\n\r\nfirst line\r\nneedle-in-body\r\n"
	msgAttach = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nTo: alice@example.com, carol@example.net\r\n" +
		"Subject: =?iso-8859-1?q?Gr=FC=DFe?= with file\r\nDate: Wed, 11 Mar 2020 10:00:00 +0000\r\n" +
		"Message-ID: <attach@t>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee the file\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe.bin\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gYmluYXJ5IHdvcmxk\r\n--b1--\r\n"
	msgBob = "From: x@example.org\r\nTo: bob@example.com\r\nSubject: SECRET-BOB\r\nMessage-ID: <bob@t>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n" +
		"--b2\r\nContent-Type: text/plain\r\n\r\nSECRET-BOB body\r\n" +
		"--b2\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=secret.bin\r\n\r\nSECRET-BOB-ATTACHMENT\r\n--b2--\r\n"
)

// stdFixture: alice has msgPlain (uid 1) and msgAttach (uid 2), bob msgBob.
func stdFixture(t testing.TB) (f *fixture, plain, attach, bob journal.ID) {
	f = newFixture(t)
	plain = f.add(t, time.Date(2006, 1, 2, 16, 0, 0, 0, time.UTC), msgPlain, "alice@example.com")
	attach = f.add(t, time.Date(2020, 3, 11, 11, 0, 0, 0, time.UTC), msgAttach, "alice@example.com")
	bob = f.add(t, time.Date(2020, 3, 12, 11, 0, 0, 0, time.UTC), msgBob, "bob@example.com")
	return
}

func TestLoginCookieAndLogout(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			f, _, _, _ := stdFixture(t)
			e := start(t, f, tlsOn, nil)
			c := e.client(t)
			if r := c.get("/mail/inbox"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
				t.Fatalf("inbox before login: %d %s", r.StatusCode, r.Header.Get("Location"))
			}
			r := c.tryLogin("alice@example.com", "alice-pw")
			if r.StatusCode != http.StatusSeeOther {
				t.Fatalf("login: %d\n%s", r.StatusCode, r.body)
			}
			var sc *http.Cookie
			for _, ck := range r.Cookies() {
				if strings.HasSuffix(ck.Name, "lifeline") && ck.Value != "" {
					sc = ck
				}
			}
			if sc == nil {
				t.Fatalf("no session cookie: %v", r.Header["Set-Cookie"])
			}
			if !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.Secure != tlsOn {
				t.Errorf("cookie attributes: %+v", sc)
			}
			if tlsOn && sc.Name != "__Host-lifeline" {
				t.Errorf("cookie name under TLS: %q", sc.Name)
			}
			if len(sc.Value) < 43 { // 256 bits, base64url
				t.Errorf("session id %q is short", sc.Value)
			}
			if v := metricValue(t, e.reg, "lifeline_webmail_sessions", nil); v != 1 {
				t.Errorf("sessions gauge = %v, want 1", v)
			}
			if v := metricValue(t, e.reg, "lifeline_logins_total", map[string]string{"protocol": "webmail", "result": "success"}); v != 1 {
				t.Errorf("logins success = %v", v)
			}
			in := c.get("/mail/inbox")
			if in.StatusCode != 200 || !strings.Contains(in.body, "plain hello") || !strings.Contains(in.body, "Grüße with file") {
				t.Fatalf("inbox: %d\n%s", in.StatusCode, in.body)
			}
			tok := csrfOf(t, in.body)
			if r := c.post("/logout", url.Values{"csrf": {tok}}); r.StatusCode != http.StatusSeeOther {
				t.Fatalf("logout: %d", r.StatusCode)
			}
			if r := c.get("/mail/inbox"); r.StatusCode != http.StatusSeeOther {
				t.Fatalf("inbox after logout: %d", r.StatusCode)
			}
			if v := metricValue(t, e.reg, "lifeline_webmail_sessions", nil); v != 0 {
				t.Errorf("sessions gauge after logout = %v", v)
			}
		})
	}
}

func TestLoginWrongPasswordAndRateLimit(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	a := newAuth()
	e := start(t, f, false, func(o *Options) { o.Auth = a })
	c := e.client(t)
	r := c.tryLogin("alice@example.com", "wrong")
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong user name or password") {
		t.Fatalf("wrong password: %d\n%s", r.StatusCode, r.body)
	}
	// German from Accept-Language.
	tok := csrfOf(t, c.get("/login").body)
	req, _ := http.NewRequest("POST", e.ts.URL+"/login", strings.NewReader(url.Values{"csrf": {tok}, "user": {"alice@example.com"}, "password": {"wrong2"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept-Language", "de-DE,de;q=0.9,en;q=0.5")
	if r := c.do(req); !strings.Contains(r.body, "Benutzername oder Passwort falsch") {
		t.Fatalf("German: %d\n%s", r.StatusCode, r.body)
	}
	c.tryLogin("alice@example.com", "wrong3")
	// The user is locked out now: even the right password is refused, and
	// so is IMAP, which shares the Authenticator.
	r = c.tryLogin("alice@example.com", "alice-pw")
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(r.body, "not possible right now") {
		t.Fatalf("rate limited: %d\n%s", r.StatusCode, r.body)
	}
	if _, err := a.Login(context.Background(), "127.0.0.9", "alice@example.com", "alice-pw"); err == nil {
		t.Error("the shared limiter let IMAP in")
	}
	if v := metricValue(t, e.reg, "lifeline_logins_total", map[string]string{"protocol": "webmail", "result": "error"}); v != 1 {
		t.Errorf("logins error = %v", v)
	}
	if v := metricValue(t, e.reg, "lifeline_logins_total", map[string]string{"protocol": "webmail", "result": "failure"}); v != 3 {
		t.Errorf("logins failure = %v", v)
	}
}

func TestNotServing(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	e := start(t, f, false, func(o *Options) { o.Serving = notServing{} })
	r := e.client(t).tryLogin("alice@example.com", "alice-pw")
	if r.StatusCode != http.StatusForbidden || !strings.Contains(r.body, "it is up") {
		t.Fatalf("%d\n%s", r.StatusCode, r.body)
	}
}

type notServing struct{}

func (notServing) Serves(string) (bool, string) { return false, "it is up: use your usual mail server" }

// TestCSRF: every POST route refuses a request without the session's token,
// and with another session's token.
func TestCSRF(t *testing.T) {
	f, plain, _, _ := stdFixture(t)
	e := start(t, f, false, func(o *Options) { o.Control = newFakeControl(); o.Servers = fakeServers{} })
	alice := e.client(t)
	alice.login("alice@example.com", "alice-pw")
	other := e.client(t)
	otherTok := other.login("postmaster@example.com", "pm-pw")
	ref := f.ref(t, "alice@example.com", plain)
	routes := []struct {
		path string
		form url.Values
	}{
		{"/login", url.Values{"user": {"alice@example.com"}, "password": {"alice-pw"}}},
		{"/logout", url.Values{}},
		{"/mail/inbox/" + ref + "/flags", url.Values{"action": {"delete"}}},
		{"/compose", url.Values{"to": {"x@example.net"}, "body": {"hi"}}},
		{"/admin/outage", url.Values{"server": {"mx"}, "action": {"start"}}},
	}
	for _, rt := range routes {
		for _, tok := range []string{"", "wrong", otherTok} {
			form := url.Values{}
			for k, v := range rt.form {
				form[k] = v
			}
			if tok != "" {
				form.Set("csrf", tok)
			}
			if r := alice.post(rt.path, form); r.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s with token %q: %d, want 403", rt.path, tok, r.StatusCode)
			}
		}
	}
	// Nothing happened: still logged in, the message still there, unflagged.
	if r := alice.get("/mail/inbox"); r.StatusCode != 200 || !strings.Contains(r.body, "plain hello") {
		t.Fatalf("after refused POSTs: %d", r.StatusCode)
	}
}

func TestSessionExpiry(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	e := start(t, f, false, func(o *Options) { o.SessionIdle = 10 * time.Minute; o.SessionMax = 30 * time.Minute })
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	e.clock.add(9 * time.Minute)
	if r := c.get("/mail/inbox"); r.StatusCode != 200 {
		t.Fatalf("within idle time: %d", r.StatusCode)
	}
	e.clock.add(10 * time.Minute)
	if r := c.get("/mail/inbox"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after idle time: %d", r.StatusCode)
	}
	// Absolute expiry: busy, but past SessionMax.
	c.login("alice@example.com", "alice-pw")
	for range 4 {
		e.clock.add(8 * time.Minute)
		c.get("/mail/inbox")
	}
	if r := c.get("/mail/inbox"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after max session time: %d", r.StatusCode)
	}
	if n := e.srv.sessions.count(); n != 0 {
		t.Errorf("%d sessions kept after expiry", n)
	}
}

// TestIsolation: alice cannot open bob's message, its parts or .eml, nor
// change its flags, by putting its id into her URLs.
func TestIsolation(t *testing.T) {
	f, plain, _, bob := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	tok := c.login("alice@example.com", "alice-pw")
	bobRef := f.ref(t, "bob@example.com", bob)
	// bob's UID with bob's ID, alice's UID with bob's ID, bob's message in
	// alice's Sent, and a path trick.
	aliceUID := strings.Split(f.ref(t, "alice@example.com", plain), "-")[0]
	refs := []string{bobRef, aliceUID + "-" + bob.String(), "1-" + bob.String(), "2-" + bob.String()}
	for _, ref := range refs {
		for _, folder := range []string{"inbox", "sent"} {
			base := "/mail/" + folder + "/" + ref
			for _, p := range []string{base, base + "/body", base + "/raw", base + "/part/1", base + "/part/2", base + "/cid/x"} {
				r := c.get(p)
				if r.StatusCode != http.StatusNotFound || strings.Contains(r.body, "SECRET") {
					t.Errorf("GET %s: %d", p, r.StatusCode)
				}
			}
			if r := c.post(base+"/flags", url.Values{"csrf": {tok}, "action": {"delete"}}); r.StatusCode != http.StatusNotFound {
				t.Errorf("POST %s/flags: %d", base, r.StatusCode)
			}
			if r := c.get("/compose?reply=" + ref + "&folder=" + folder); r.StatusCode != http.StatusNotFound {
				t.Errorf("reply to %s: %d", ref, r.StatusCode)
			}
		}
	}
	if r := c.get("/mail/bob@example.com"); r.StatusCode != http.StatusNotFound {
		t.Errorf("another folder name: %d", r.StatusCode)
	}
	if fl, err := f.store.Flags(context.Background(), "bob@example.com", 1); err != nil || len(fl) != 0 {
		t.Errorf("bob's flags: %v %v", fl, err)
	}
}

func TestMessageViewAttachmentAndRaw(t *testing.T) {
	f, _, attach, _ := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	ref := f.ref(t, "alice@example.com", attach)
	r := c.get("/mail/inbox/" + ref)
	if r.StatusCode != 200 || !strings.Contains(r.body, "Grüße with file") || !strings.Contains(r.body, "see the file") ||
		!strings.Contains(r.body, "Grüße.bin") {
		t.Fatalf("view: %d\n%s", r.StatusCode, r.body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"} {
		if r.Header.Get(h) == "" {
			t.Errorf("no %s", h)
		}
	}
	if !strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP %q", r.Header.Get("Content-Security-Policy"))
	}
	// Opening marked it read, in the view IMAP uses.
	uid := f.uid(t, "alice@example.com", attach)
	if fl, _ := f.store.Flags(context.Background(), "alice@example.com", uid); !slices.Contains(fl, userview.FlagSeen) {
		t.Errorf("flags after view: %v", fl)
	}
	link := attachmentLinkRE.FindStringSubmatch(r.body)
	if link == nil {
		t.Fatalf("no attachment link in\n%s", r.body)
	}
	a := c.get(link[1])
	if a.StatusCode != 200 || a.body != "hello binary world" {
		t.Fatalf("attachment: %d %q", a.StatusCode, a.body)
	}
	cd := a.Header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, "filename*=UTF-8''Gr%C3%BC%C3%9Fe.bin") {
		t.Errorf("Content-Disposition %q", cd)
	}
	body := c.get("/mail/inbox/" + ref + "/body")
	if csp := body.Header.Get("Content-Security-Policy"); body.StatusCode != 200 || csp != bodyCSP ||
		!strings.Contains(body.body, "see the file") {
		t.Errorf("body: %d %q\n%s", body.StatusCode, csp, body.body)
	}
	if r := c.get("/mail/inbox/" + ref + "/body?images=1"); r.Header.Get("Content-Security-Policy") != bodyCSPRemote {
		t.Errorf("body with images: CSP %q", r.Header.Get("Content-Security-Policy"))
	}
	if l := c.get("/mail/inbox"); strings.Count(l.body, `class="tag attach"`) != 1 {
		t.Errorf("attachment marks: %d", strings.Count(l.body, `class="tag attach"`))
	}
	raw := c.get("/mail/inbox/" + ref + "/raw")
	if raw.body != msgAttach || !strings.HasPrefix(raw.Header.Get("Content-Disposition"), "attachment;") ||
		raw.Header.Get("Content-Type") != "message/rfc822" {
		t.Errorf("raw: %q %v", raw.body, raw.Header)
	}
}

var attachmentLinkRE = regexpMust(`href="(/mail/inbox/[^"]+/part/[^"]+)"`)

func (f *fixture) uid(t testing.TB, mailbox string, id journal.ID) uint32 {
	t.Helper()
	ref, _ := parseRef(f.ref(t, mailbox, id))
	return ref.UID
}

// TestFlagsShared: what webmail sets, the userview (and so IMAP) sees.
func TestFlagsShared(t *testing.T) {
	f, plain, attach, _ := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	tok := c.login("alice@example.com", "alice-pw")
	ref := f.ref(t, "alice@example.com", plain)
	uid := f.uid(t, "alice@example.com", plain)
	ctx := context.Background()
	for _, step := range []struct {
		action string
		want   []string
	}{
		{"read", []string{userview.FlagSeen}},
		{"flag", []string{userview.FlagSeen, userview.FlagFlagged}},
		{"unread", []string{userview.FlagFlagged}},
		{"unflag", nil},
	} {
		r := c.post("/mail/inbox/"+ref+"/flags", url.Values{"csrf": {tok}, "action": {step.action}})
		if r.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: %d\n%s", step.action, r.StatusCode, r.body)
		}
		fl, err := f.store.Flags(ctx, "alice@example.com", uid)
		if err != nil || !slices.Equal(fl, step.want) {
			t.Errorf("after %s: %v %v, want %v", step.action, fl, err, step.want)
		}
	}
	// The list shows unread and flagged from the view.
	if _, err := f.store.AddFlags(ctx, "alice@example.com", uid, []string{userview.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	if r := c.get("/mail/inbox"); !strings.Contains(r.body, "msg unread flagged") {
		t.Errorf("list does not show flagged unread:\n%s", r.body)
	}
	if r := c.post("/mail/inbox/"+ref+"/flags", url.Values{"csrf": {tok}, "action": {"delete"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	msgs, _ := f.store.Messages(ctx, "alice@example.com")
	if len(msgs) != 1 || msgs[0].ID != attach {
		t.Errorf("view after delete: %+v", msgs)
	}
	if r := c.get("/mail/inbox/" + ref); r.StatusCode != http.StatusNotFound {
		t.Errorf("deleted message: %d", r.StatusCode)
	}
}

func TestPagingAndSearch(t *testing.T) {
	f := newFixture(t)
	base := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	for i := range 120 {
		from := "even@example.org"
		if i%2 == 1 {
			from = "odd@example.org"
		}
		body := fmt.Sprintf("From: %s\r\nTo: alice@example.com\r\nSubject: number %03d\r\nDate: %s\r\nMessage-ID: <%d@t>\r\n\r\nbody of %03d\r\n",
			from, i, base.AddDate(0, 0, i).Format(time.RFC1123Z), i, i)
		if i == 77 {
			body = strings.Replace(body, "body of", "zebra-word in body of", 1)
		}
		f.add(t, base.AddDate(0, 0, i), body, "alice@example.com")
	}
	e := start(t, f, false, nil)
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	subjects := func(body string) []string {
		var out []string
		for _, m := range subjectRE.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return out
	}
	p1 := subjects(c.get("/mail/inbox").body)
	if len(p1) != 50 || p1[0] != "number 119" || p1[49] != "number 070" {
		t.Errorf("page 1: %d rows, %v … %v", len(p1), first(p1), last(p1))
	}
	p3 := c.get("/mail/inbox?page=3")
	if s := subjects(p3.body); len(s) != 20 || s[19] != "number 000" || !strings.Contains(p3.body, "Page 3 of 3") {
		t.Errorf("page 3: %v", s)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"subject=number+042", []string{"number 042"}},
		{"from=odd&subject=number+04", []string{"number 049", "number 047", "number 045", "number 043", "number 041"}},
		{"text=zebra-word", []string{"number 077"}},
		{"q=zebra-word", []string{"number 077"}},
		{"to=alice&since=2024-01-03&before=2024-01-04", []string{"number 003", "number 002"}},
		{"from=nobody", nil},
	} {
		got := subjects(c.get("/mail/inbox?" + tc.query).body)
		if !slices.Equal(got, tc.want) {
			t.Errorf("search %s: %v, want %v", tc.query, got, tc.want)
		}
	}
	// The text search reads at most SearchMaxBytes and says so.
	e2 := start(t, f, false, func(o *Options) { o.SearchMaxBytes = 2000 })
	c2 := e2.client(t)
	c2.login("alice@example.com", "alice-pw")
	if r := c2.get("/mail/inbox?text=zebra-word"); !strings.Contains(r.body, "search stopped") {
		t.Errorf("bounded search does not say so")
	}
}

var subjectRE = regexpMust(`<span class="subject">([^<]*)</span>`)

func first(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

func last(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

func TestPlainHTTPOffLoopbackRefused(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	e := start(t, f, false, nil)
	for _, p := range []string{"/login", "/mail/inbox", "/"} {
		req := httptest.NewRequest("GET", p, nil)
		req.RemoteAddr = "192.0.2.7:4711"
		w := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(w, req)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "HTTPS") {
			t.Errorf("%s from 192.0.2.7 over plain HTTP: %d", p, w.Code)
		}
	}
	req := httptest.NewRequest("POST", "/login", strings.NewReader("user=alice%40example.com&password=alice-pw"))
	req.RemoteAddr = "192.0.2.7:4711"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
		t.Errorf("plain login from 192.0.2.7: %d", w.Code)
	}
}

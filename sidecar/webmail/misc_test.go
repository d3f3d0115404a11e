package webmail

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/journal"
)

// panicJournal panics on Open: a bug in a handler must cost one 500, be
// counted, and leave the server serving.
type panicJournal struct{ journal.Journal }

func (panicJournal) Open(context.Context, journal.ID) (io.ReadCloser, error) { panic("injected") }

func TestPanicRecovered(t *testing.T) {
	f, plain, _, _ := stdFixture(t)
	e := start(t, f, false, func(o *Options) { o.Journal = panicJournal{f.j} })
	c := e.client(t)
	c.login("alice@example.com", "alice-pw")
	r := c.get("/mail/inbox/" + f.ref(t, "alice@example.com", plain) + "/raw")
	if r.StatusCode != http.StatusInternalServerError {
		t.Errorf("panicking handler: %d", r.StatusCode)
	}
	if n := counterValue(t, e.panics); n != 1 {
		t.Errorf("panics counted: %v", n)
	}
	if r := c.get("/mail/inbox"); r.StatusCode != 200 {
		t.Errorf("after a panic: %d", r.StatusCode)
	}
	if v := metricValue(t, e.reg, "lifeline_webmail_requests_total", map[string]string{"page": "raw", "code": "500"}); v != 1 {
		t.Errorf("requests_total{raw,500} = %v", v)
	}
	e.panics.Add(0)
	*e.expectedPanics = 1
}

// TestCatalog: every key a template uses exists in English and German.
func TestCatalog(t *testing.T) {
	keyRE := regexp.MustCompile(`\bt \$?\.?[A-Za-z]* ?"([a-z.]+)"`)
	var used []string
	ents, err := os.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile("templates/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			used = append(used, m[1])
		}
	}
	if len(used) < 30 {
		t.Fatalf("found only %d keys: the pattern is broken", len(used))
	}
	for _, k := range used {
		for _, lang := range []string{"en", "de"} {
			if _, ok := catalog[lang][k]; !ok {
				t.Errorf("%s: no %q", lang, k)
			}
		}
	}
	for k := range catalog["en"] {
		if _, ok := catalog["de"][k]; !ok {
			t.Errorf("de lacks %q", k)
		}
	}
}

func TestSecurityHeadersEverywhere(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	for _, p := range []string{"/login", "/nope", "/static/style.css", "/mail/inbox"} {
		r := c.get(p)
		if got := r.Header.Get("Content-Security-Policy"); got != pageCSP {
			t.Errorf("%s: CSP %q", p, got)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", p, r.Header)
		}
	}
	if r := c.get("/static/style.css"); !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Errorf("css content type %q", r.Header.Get("Content-Type"))
	}
}

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"a.txt", `attachment; filename="a.txt"`},
		{"Grüße.pdf", `attachment; filename="Gr__e.pdf"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.pdf`},
		{"../../etc/passwd", `attachment; filename=".._.._etc_passwd"`},
		{"a\"b\r\nSet-Cookie: x", `attachment; filename="a_b__Set-Cookie: x"; filename*=UTF-8''a%22b__Set-Cookie:%20x`},
	} {
		if got := contentDisposition("attachment", tc.name); got != tc.want {
			t.Errorf("%q: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"1-00112233445566778899aabbccddeeff", "0-00", "4294967296-00112233445566778899aabbccddeeff", "-", "", "1-zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := parseRef(s)
		if !ok {
			return
		}
		if r.UID == 0 {
			t.Fatalf("%q: UID 0 accepted", s)
		}
		back, ok := parseRef(r.String())
		if !ok || back != r {
			t.Fatalf("%q: round trip %v -> %q -> %v", s, r, r.String(), back)
		}
	})
}

func FuzzQuery(f *testing.F) {
	for _, s := range []string{"q=x&since=2024-01-02&before=2024-02-30", "page=-1&from=%ff", "since=99999-01-01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.NewRequest("GET", "/mail/inbox?"+raw, nil)
		if err != nil {
			return
		}
		q := parseQuery(req)
		if !q.Before.IsZero() && q.BeforeStr == "" || !q.Since.IsZero() && q.SinceStr == "" {
			t.Fatalf("%q: dates without their strings: %+v", raw, q)
		}
	})
}

// TestRemotePeer: behind a reverse proxy on this host the login limits see
// the browser's address, the one the proxy appended last to X-Forwarded-For;
// what the browser claims before it, and the header on any connection that is
// not loopback, are ignored.
func TestRemotePeer(t *testing.T) {
	for _, tc := range []struct {
		remote   string
		xff      []string
		loopback bool
		ip       string
	}{
		{"127.0.0.1:5555", nil, true, "127.0.0.1"},
		{"127.0.0.1:5555", []string{"203.0.113.7"}, true, "203.0.113.7"},
		{"[::1]:5555", []string{"10.9.9.9, 2001:db8::5"}, true, "2001:db8::5"},
		{"127.0.0.1:5555", []string{"10.9.9.9", "198.51.100.2 , 203.0.113.8"}, true, "203.0.113.8"},
		{"127.0.0.1:5555", []string{"not-an-address"}, true, "127.0.0.1"},
		{"192.0.2.1:5555", []string{"203.0.113.7"}, false, "192.0.2.1"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/login", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		loopback, ip := remotePeer(r)
		if loopback != tc.loopback || ip != tc.ip {
			t.Errorf("%s with X-Forwarded-For %q: loopback %v, ip %q; want %v, %q", tc.remote, tc.xff, loopback, ip, tc.loopback, tc.ip)
		}
	}
}

// TestForwardedHTTPS: behind a reverse proxy on this host that took the
// browser's HTTPS (X-Forwarded-Proto: https), the cookies are Secure with the
// __Host- prefix and HSTS is sent, as on webmail's own HTTPS; the header from
// a connection that is not loopback, or saying http, changes nothing.
func TestForwardedHTTPS(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	e := start(t, f, false, nil)
	c := e.client(t)
	login := func(proto string) *resp {
		t.Helper()
		req, err := http.NewRequest("GET", e.ts.URL+"/login", nil)
		if err != nil {
			t.Fatal(err)
		}
		if proto != "" {
			req.Header.Set("X-Forwarded-Proto", proto)
		}
		return c.do(req)
	}
	r := login("https")
	if r.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS behind an HTTPS proxy")
	}
	cookies := r.Cookies()
	if len(cookies) == 0 {
		t.Fatal("the login page sets no cookie")
	}
	for _, ck := range cookies {
		if !strings.HasPrefix(ck.Name, "__Host-") || !ck.Secure {
			t.Errorf("cookie %s behind an HTTPS proxy: Secure %v", ck.Name, ck.Secure)
		}
	}
	for _, proto := range []string{"", "http"} {
		r := login(proto)
		if r.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("X-Forwarded-Proto %q: HSTS on plain HTTP", proto)
		}
		for _, ck := range r.Cookies() {
			if strings.HasPrefix(ck.Name, "__Host-") || ck.Secure {
				t.Errorf("X-Forwarded-Proto %q: cookie %s Secure %v", proto, ck.Name, ck.Secure)
			}
		}
	}
	// From another address the header is ignored: plain HTTP stays refused.
	req := httptest.NewRequest(http.MethodGet, "/login", nil)
	req.RemoteAddr = "192.0.2.1:4242"
	req.Header.Set("X-Forwarded-Proto", "https")
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("plain HTTP from 192.0.2.1 claiming X-Forwarded-Proto https: %d, want 403", rec.Code)
	}
}

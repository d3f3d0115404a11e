package webmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium (package "chromium").
const chromiumPath = "/usr/bin/chromium"

// recorder is an HTTP proxy every request of the browser goes through,
// loopback included (--proxy-bypass-list=<-loopback>), so that it sees the
// requests of every frame and process: the network log of the tests.
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (p *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u := r.URL.String()
	if r.Method == http.MethodConnect {
		u = "https://" + r.Host + "/"
	}
	p.mu.Lock()
	p.urls = append(p.urls, u)
	p.mu.Unlock()
	if r.Method == http.MethodConnect || !r.URL.IsAbs() {
		http.Error(w, "not proxied", http.StatusForbidden)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	res, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(res.StatusCode)
	io.Copy(w, res.Body)
}

func (p *recorder) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.urls)
}

func serveOn(t testing.TB, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type tab struct {
	t     *testing.T
	ctx   context.Context
	proxy *recorder
	// requests are the URLs of the page target's Network.requestWillBeSent.
	mu       sync.Mutex
	requests []string
}

// newBrowser starts headless Chromium behind a recording proxy.
func newBrowser(t *testing.T) *tab {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; CI must install Debian's chromium package", chromiumPath)
		}
		t.Skipf("%s is missing (apt-get install chromium)", chromiumPath)
	}
	proxy := &recorder{}
	paddr := serveOn(t, "127.0.0.1:0", proxy)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.ProxyServer("http://"+paddr),
		chromedp.Flag("proxy-bypass-list", "<-loopback>"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		// Chromium's own traffic (updates, autofill, password checks) is
		// not the page's; turn off what can be.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,AutofillServerCommunication,PasswordLeakDetection,OptimizationHints,MediaRouter"),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	tb := &tab{t: t, ctx: ctx, proxy: proxy}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	events := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.requests = append(tb.requests, ev.Request.URL)
			tb.mu.Unlock()
		}
	}()
	return tb
}

func (b *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

func run[T any](b *tab, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

// clickAndLoad clicks sel and waits for the page load it causes.
func (b *tab) clickAndLoad(sel string) {
	b.t.Helper()
	run(b, chromedp.WaitEvent(cdppage.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel))))
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	return run(b, chromedp.Text(chromedp.CSS(sel)))
}

func (b *tab) location() string {
	b.t.Helper()
	return run(b, chromedp.Location())
}

func (b *tab) networkLog() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests)
}

// screenshot saves a full-page PNG at the given width into the test's
// directory and $LIFELINE_SCREENSHOTS when set.
func (b *tab) screenshot(name string, width, height int64, dir string) {
	b.t.Helper()
	b.do(chromedp.EmulateViewport(width, height))
	png := run(b, chromedp.FullScreenshot(100))
	dirs := []string{dir}
	if d := os.Getenv("LIFELINE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, fmt.Sprintf("%s-%dx%d.png", name, width, height))
		if err := os.WriteFile(p, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.t.Logf("screenshot %s", p)
	}
	b.do(chromedp.EmulateViewport(1280, 800))
}

func (b *tab) login(base, user, password string) {
	b.t.Helper()
	b.do(chromedp.Navigate(base+"/login"),
		chromedp.SendKeys(chromedp.CSS("#user"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password))
	b.clickAndLoad("#login")
}

const msgHTML = "From: Newsletter <news@example.org>\r\nTo: alice@example.com\r\nSubject: html news\r\n" +
	"Date: Thu, 12 Mar 2020 10:00:00 +0000\r\nMessage-ID: <html@t>\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/related; boundary=\"r1\"\r\n\r\n" +
	"--r1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><body><h1 style=\"color:#0b5cad\">Rendered HTML heading</h1><p>with <b>bold</b> text and a logo:</p>" +
	"<img src=\"cid:logo@t\" alt=\"logo\"><img src=\"http://REMOTE/track.png\" alt=\"remote\"></body></html>\r\n" +
	"--r1\r\nContent-Type: image/gif\r\nContent-ID: <logo@t>\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
	"R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==\r\n--r1--\r\n"

// TestBrowser drives the webmail in headless Chromium as a user would.
func TestBrowser(t *testing.T) {
	b := newBrowser(t)
	f, plain, attach, _ := stdFixture(t)
	remote := serveOn(t, "127.0.0.2:0", http.NotFoundHandler())
	htmlID := f.add(t, time.Date(2020, 3, 12, 11, 0, 0, 0, time.UTC), strings.ReplaceAll(msgHTML, "REMOTE", remote), "alice@example.com")
	sink := startSMTP(t, "")
	e := start(t, f, false, func(o *Options) { o.Relay.Addr = sink.addr; o.Relay.Timeout = 10 * time.Second })
	base := e.ts.URL
	shots := t.TempDir()

	// A wrong password, then the right one.
	b.login(base, "alice@example.com", "not-her-password")
	if s := b.text(".error"); !strings.Contains(s, "Wrong user name or password") {
		t.Fatalf("wrong password: %q", s)
	}
	b.login(base, "alice@example.com", "alice-pw")
	if loc := b.location(); loc != base+"/mail/inbox" {
		t.Fatalf("after login at %s", loc)
	}
	list := b.text(".messages")
	for _, want := range []string{"plain hello", "Grüße with file", "html news"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	b.screenshot("list", 1280, 800, shots)
	b.screenshot("list", 390, 844, shots)

	// Search through the form.
	b.do(chromedp.Click(chromedp.CSS("details.search summary")),
		chromedp.SendKeys(chromedp.CSS("#q"), "needle-in-body"))
	b.clickAndLoad("#search")
	if got := b.text(".messages"); !strings.Contains(got, "plain hello") || strings.Contains(got, "html news") {
		t.Errorf("search result:\n%s", got)
	}

	// A plain message.
	plainURL := base + "/mail/inbox/" + f.ref(t, "alice@example.com", plain)
	b.do(chromedp.Navigate(plainURL))
	if s := b.text("pre.text"); !strings.Contains(s, "needle-in-body") {
		t.Errorf("plain text: %q", s)
	}
	b.screenshot("message-plain", 1280, 800, shots)
	b.screenshot("message-plain", 390, 844, shots)

	b.htmlMessage(base+"/mail/inbox/"+f.ref(t, "alice@example.com", htmlID), remote, shots)

	// Download an attachment.
	dl := t.TempDir()
	progress := chromedp.Events(b.ctx, browser.DownloadProgress)
	b.do(chromedp.Navigate(base+"/mail/inbox/"+f.ref(t, "alice@example.com", attach)),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dl, EventsEnabled: ptrTo(true)})
			return err
		}),
		chromedp.Click(chromedp.CSS(".attachments a")))
	for ev, err := range progress {
		if err != nil {
			t.Fatal(err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download canceled")
		}
		if ev.State != browser.DownloadProgressStateCompleted {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dl, ev.GUID))
		if err != nil || string(got) != "hello binary world" {
			t.Errorf("downloaded %q, %v", got, err)
		}
		break
	}

	// Reply: it reaches the SMTP server and Sent.
	b.do(chromedp.Navigate(plainURL))
	b.clickAndLoad(".actions a.button") // Reply is the first action
	b.do(chromedp.SendKeys(chromedp.CSS("#body"), "Browser reply text. "))
	b.clickAndLoad("#send")
	if loc := b.location(); !strings.HasPrefix(loc, base+"/mail/sent") {
		t.Fatalf("after send at %s: %s", loc, b.text("main"))
	}
	if s := b.text(".messages"); !strings.Contains(s, "Re: plain hello") {
		t.Errorf("Sent list:\n%s", s)
	}
	got := sink.messages()
	if len(got) != 1 || !strings.Contains(string(got[0].data), "Browser reply text.") || !slices.Equal(got[0].rcpts, []string{"anne@example.org"}) {
		t.Errorf("relay got %+v", got)
	}

	// Delete.
	b.do(chromedp.Navigate(plainURL))
	b.clickAndLoad("#delete")
	if s := b.text("main"); strings.Contains(s, "plain hello") {
		t.Errorf("deleted message still listed:\n%s", s)
	}

	// Log out.
	b.clickAndLoad(".logout button")
	if loc := b.location(); loc != base+"/login" {
		t.Errorf("after logout at %s", loc)
	}
	b.do(chromedp.Navigate(base + "/mail/inbox"))
	if loc := b.location(); loc != base+"/login" {
		t.Errorf("inbox after logout at %s", loc)
	}

	// The rate limit: three failures lock the user out, even with the
	// right password.
	for range 3 {
		b.login(base, "alice@example.com", "guess")
	}
	b.login(base, "alice@example.com", "alice-pw")
	if s := b.text(".error"); !strings.Contains(s, "not possible right now") {
		t.Errorf("rate limit: %q", s)
	}
	t.Logf("screenshots in %s", shots)
}

func ptrTo[T any](v T) *T { return &v }

// TestBrowserHostile opens each hostile message of testdata/hostile in
// Chromium: no payload may run (the canary server, which every payload
// calls, sees nothing) and no request may leave for another host than the
// webmail's (the proxy's log and the page's network events). A control run
// of the same HTML unsanitized proves that the payloads are live.
func TestBrowserHostile(t *testing.T) {
	b := newBrowser(t)
	var canaryMu sync.Mutex
	var canaryHits []string
	canary := serveOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		canaryMu.Lock()
		canaryHits = append(canaryHits, r.URL.Path)
		canaryMu.Unlock()
		w.Header().Set("Content-Type", "image/gif")
		w.Write([]byte("GIF89a"))
	}))
	hits := func() []string { canaryMu.Lock(); defer canaryMu.Unlock(); return slices.Clone(canaryHits) }

	files, err := filepath.Glob("testdata/hostile/*.eml")
	if err != nil || len(files) < 7 {
		t.Fatalf("hostile set: %v %v", files, err)
	}
	// mailview's own hostile set too: its remote URLs are other hosts,
	// which the network checks below catch.
	more, err := filepath.Glob("mailview/testdata/hostile/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	f := newFixture(t)
	type hostile struct {
		name string
		raw  string
		ref  string
	}
	var set []hostile
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		raw := strings.ReplaceAll(string(b), "CANARY", canary)
		id := f.add(t, time.Time{}, raw, "alice@example.com")
		set = append(set, hostile{name: filepath.Base(p), raw: raw, ref: f.ref(t, "alice@example.com", id)})
		t.Logf("hostile %s", p)
	}
	e := start(t, f, false, nil)
	base := e.ts.URL
	b.login(base, "alice@example.com", "alice-pw")
	title := run(b, chromedp.Title())
	for _, h := range set {
		// Navigate returns after the load event, which waits for the
		// iframe's document and its images.
		b.do(chromedp.Navigate(base + "/mail/inbox/" + h.ref))
		if loc := b.location(); loc != base+"/mail/inbox/"+h.ref {
			t.Errorf("%s: the page navigated to %s", h.name, loc)
		}
		if got := run(b, chromedp.Title()); got == "PWNED" || !strings.Contains(got, "Lifeline") {
			t.Errorf("%s: title %q (was %q)", h.name, got, title)
		}
		// The body document on its own, top-level (as if a user opened
		// the frame in a tab): its CSP sandbox still holds.
		b.do(chromedp.Navigate(base + "/mail/inbox/" + h.ref + "/body"))
		visible := "visible-" + strings.TrimSuffix(h.name, ".eml") + "-text"
		if s := b.text("body"); strings.Contains(h.raw, visible) && !strings.Contains(s, visible) {
			t.Errorf("%s: body text %q lacks %q: the sanitized message was not shown", h.name, s, visible)
		}
	}
	// A last page load, so that anything a payload scheduled had its turn
	// in the event loop before the logs are read.
	b.do(chromedp.Navigate(base + "/mail/inbox"))
	if h := hits(); len(h) != 0 {
		t.Errorf("payloads ran or remote content loaded: canary got %v", h)
	}
	webmailHost := strings.TrimPrefix(base, "http://")
	check := func(what string, urls []string) {
		n := 0
		for _, u := range urls {
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme == "data" || pu.Scheme == "about" {
				continue
			}
			if h := pu.Hostname(); strings.HasSuffix(h, ".google.com") || strings.HasSuffix(h, ".googleapis.com") {
				continue // Chromium's own services, which no payload names
			}
			n++
			if pu.Host != webmailHost {
				t.Errorf("%s: request to another host: %s", what, u)
			}
		}
		if n == 0 {
			t.Errorf("%s: saw no request at all; the log is not working", what)
		}
	}
	check("proxy", b.proxy.log())
	check("network events", b.networkLog())

	// Control: the same HTML served as is, from another origin, does call
	// the canary: the payloads and the canary work.
	raw := set[0].raw
	for _, h := range set {
		if h.name == "remote.eml" {
			raw = h.raw
		}
	}
	_, html, _ := strings.Cut(raw, "\r\n\r\n")
	ctl := serveOn(t, "127.0.0.3:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, html)
	}))
	b.do(chromedp.Navigate("http://" + ctl + "/"))
	if len(hits()) == 0 {
		t.Error("control: the unsanitized HTML did not reach the canary; the test proves nothing")
	}
	_ = errors.New
}

// htmlMessage opens an HTML message: sanitized, in the sandboxed frame; the
// remote image is blocked, the inline one shown.
func (b *tab) htmlMessage(htmlURL, remote, shots string) {
	t := b.t
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(htmlURL), chromedp.WaitVisible(chromedp.CSS("iframe.body"))); err != nil {
		t.Errorf("HTML message shows no frame: %v", err)
		return
	}
	sandbox := run(b, chromedp.AttributeValue(chromedp.CSS("iframe.body"), "sandbox"))
	if !sandbox.Exists || strings.Contains(sandbox.Value, "allow-scripts") || strings.Contains(sandbox.Value, "allow-same-origin") {
		t.Errorf("iframe sandbox attribute %+v", sandbox)
	}
	if s := b.text("main"); !strings.Contains(s, "Remote images in this message were blocked") {
		t.Errorf("no remote-images note:\n%s", s)
	}
	b.screenshot("message-html", 1280, 800, shots)
	b.screenshot("message-html", 390, 844, shots)
	b.do(chromedp.Navigate(htmlURL + "/body"))
	if s := b.text("body"); !strings.Contains(s, "Rendered HTML heading") {
		t.Errorf("HTML body: %q", s)
	}
	// The inline image is embedded and loaded: its natural width is 1.
	if w := run(b, chromedp.Evaluate[int](`(document.querySelector('img[alt=logo]')||{}).naturalWidth||0`)); w != 1 {
		t.Errorf("inline image not shown (naturalWidth %d)", w)
	}
	for _, u := range b.proxy.log() {
		if strings.Contains(u, remote) {
			t.Errorf("a remote image was fetched before the user asked: %s", u)
		}
	}
	// "Show images" loads it.
	b.do(chromedp.Navigate(htmlURL))
	b.clickAndLoad("#show-images")
	if !slices.ContainsFunc(b.proxy.log(), func(u string) bool { return strings.Contains(u, remote+"/track.png") }) {
		t.Error("show images did not load the remote image")
	}
}

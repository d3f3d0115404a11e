package webmail

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// users is the test passwd-file: login name -> password; the mailbox is the
// login name.
type users map[string]string

func (u users) Verify(user, password string) (string, bool) {
	p, ok := u[strings.ToLower(user)]
	return strings.ToLower(user), ok && p == password
}

var testUsers = users{"alice@example.com": "alice-pw", "bob@example.com": "bob-pw", "postmaster@example.com": "pm-pw"}

// limitedAuth is what the daemon passes (daemon.loginAuth): auth's
// Authenticator, a rate limit being a temporary error.
type limitedAuth struct{ a *auth.Authenticator }

type tempErr struct{ error }

func (tempErr) Temporary() bool { return true }
func (e tempErr) Unwrap() error { return e.error }

func (l limitedAuth) Login(ctx context.Context, ip, user, password string) (string, error) {
	mb, err := l.a.Login(ctx, ip, user, password)
	if errors.Is(err, auth.ErrRateLimited) {
		return "", tempErr{err}
	}
	return mb, err
}

// newAuth returns an authenticator with a tight limit: 3 failures per user
// lock it out, without delays.
func newAuth() limitedAuth {
	pol := auth.LimitPolicy{FreeFailures: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, MaxFailures: 3,
		Window: time.Hour, Lockout: time.Hour}
	lim := auth.NewLimiter(auth.LimiterOptions{PerAddr: auth.DefaultAddrPolicy, PerUser: pol})
	return limitedAuth{auth.NewAuthenticator(testUsers, auth.AuthenticatorOptions{Limiter: lim,
		Sleep: func(context.Context, time.Duration) error { return nil }})}
}

type fixture struct {
	j     *badgerjournal.Journal
	store *userview.Store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	j, err := badgerjournal.Open(t.TempDir(), badgerjournal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	return &fixture{j: j, store: userview.New(j)}
}

// add journals a message for mailboxes and returns its ID.
func (f *fixture) add(t testing.TB, received time.Time, body string, mailboxes ...string) journal.ID {
	t.Helper()
	var rcpts []journal.Recipient
	for _, m := range mailboxes {
		rcpts = append(rcpts, journal.Recipient{Address: m, Mailboxes: []string{m}, State: journal.StateMTA})
	}
	res, err := f.j.Append(context.Background(), journal.Envelope{MailFrom: "sender@example.org", Recipients: rcpts, Received: received},
		strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// ref returns the URL ref of a journal message in a mailbox.
func (f *fixture) ref(t testing.TB, mailbox string, id journal.ID) string {
	t.Helper()
	msgs, err := f.store.Messages(context.Background(), mailbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.ID == id {
			return msgRef{UID: m.UID, ID: m.ID}.String()
		}
	}
	t.Fatalf("%s not in %s", id, mailbox)
	return ""
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	*fixture
	srv    *Server
	ts     *httptest.Server
	reg    *prometheus.Registry
	clock  *clock
	panics prometheus.Counter
	// expectedPanics is how many panics a test injected; any other fails it.
	expectedPanics *float64
}

// start serves f over a loopback httptest server (TLS when tlsOn).
func start(t testing.TB, f *fixture, tlsOn bool, mod func(*Options)) *env {
	t.Helper()
	e := &env{fixture: f, reg: prometheus.NewRegistry(), clock: &clock{t: time.Now()}, expectedPanics: new(float64)}
	e.panics = prometheus.NewCounter(prometheus.CounterOpts{Name: "test_panics"})
	o := Options{Store: f.store, Journal: f.j, Auth: newAuth(), Registerer: e.reg, Panics: e.panics, Now: e.clock.now,
		Admins: []string{"postmaster@example.com"}}
	if mod != nil {
		mod(&o)
	}
	ts := httptest.NewUnstartedServer(nil)
	if tlsOn {
		ts.StartTLS()
		o.TLSConfig = ts.TLS
	} else {
		ts.Start()
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	e.srv, e.ts = srv, ts
	t.Cleanup(func() {
		ts.Close()
		if n := counterValue(t, e.panics); n != *e.expectedPanics {
			t.Errorf("%v panics recovered", n)
		}
	})
	return e
}

// client is a browser: a cookie jar, no automatic redirects.
type client struct {
	t    testing.TB
	e    *env
	http *http.Client
}

func (e *env) client(t testing.TB) *client {
	jar, _ := cookiejar.New(nil)
	hc := e.ts.Client()
	c := &http.Client{Transport: hc.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	return &client{t: t, e: e, http: c}
}

type resp struct {
	*http.Response
	body string
}

func (c *client) do(req *http.Request) *resp {
	c.t.Helper()
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	return &resp{res, string(b)}
}

func (c *client) get(path string) *resp {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.e.ts.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.do(req)
}

func (c *client) post(path string, form url.Values) *resp {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.e.ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t testing.TB, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf token in page:\n%s", body)
	}
	return m[1]
}

// login logs in and returns the session's CSRF token.
func (c *client) login(user, password string) string {
	c.t.Helper()
	r := c.tryLogin(user, password)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/mail/inbox" {
		c.t.Fatalf("login %s: %d %s\n%s", user, r.StatusCode, r.Header.Get("Location"), r.body)
	}
	return csrfOf(c.t, c.get("/mail/inbox").body)
}

func (c *client) tryLogin(user, password string) *resp {
	c.t.Helper()
	tok := csrfOf(c.t, c.get("/login").body)
	return c.post("/login", url.Values{"csrf": {tok}, "user": {user}, "password": {password}})
}

func counterValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return -1
}

var _ = tls.VersionTLS12

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }

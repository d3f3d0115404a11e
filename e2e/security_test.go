package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSecurity checks the lifeline binary's security rules across its
// listeners in one place (issue 8): TLS 1.0 and 1.1 refused and 1.2 served
// on IMAPS, POP3S and webmail HTTPS; the admin API refusing requests without
// its token or with a wrong one; failed logins over IMAP locking the user
// out of POP3 and webmail too (one limiter); and alice unable to reach bob's
// message through webmail URLs, IMAP mailbox names or POP3.
func TestSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs lifeline serve")
	}
	alice, bob := "alice@"+DefaultDomain, "bob@"+DefaultDomain
	webPort, webTLSPort, lmtpPort := FreePort(t), FreePort(t), FreePort(t)
	ll := StartLifeline(t, LifelineOptions{
		// No LMTP address: no probe; serve = "always" opens the mailboxes.
		Servers: []LifelineServer{{Name: PrimaryServer, Domains: []string{DefaultDomain}}},
		Outage:  &OutageOptions{},
		Sidecar: &SidecarOptions{Serve: ServeAlways, TLS: true, Users: map[string]string{alice: "alice-pw", bob: "bob-pw"}},
		ExtraTOML: fmt.Sprintf("[webmail]\nenabled = true\nlisten = \"127.0.0.1:%d\"\nlisten_tls = \"127.0.0.1:%d\"\n"+
			"\n[ingest]\njournal_listen = \"tcp:127.0.0.1:%d\"\n"+
			"\n[auth.per_user]\nfree_failures = 0\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\nmax_failures = 3\nlockout = \"10m\"\n",
			webPort, webTLSPort, lmtpPort),
	})
	ctx := context.Background()
	webTLS := fmt.Sprintf("127.0.0.1:%d", webTLSPort)

	t.Run("TLS versions", func(t *testing.T) {
		pem, err := os.ReadFile(ll.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		for _, addr := range []string{ll.IMAPTLSAddr, ll.POP3TLSAddr, webTLS} {
			for _, v := range []struct {
				version uint16
				name    string
				ok      bool
			}{{tls.VersionTLS10, "1.0", false}, {tls.VersionTLS11, "1.1", false}, {tls.VersionTLS12, "1.2", true}, {tls.VersionTLS13, "1.3", true}} {
				conf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: v.version, MaxVersion: v.version}
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
				if err == nil {
					c.Close()
				}
				if (err == nil) != v.ok {
					t.Errorf("%s TLS %s: handshake error %v, want success %v", addr, v.name, err, v.ok)
				}
			}
		}
	})

	t.Run("admin API token", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, auth string
			want               int
		}{
			{"GET", "/v1/status", "", http.StatusUnauthorized},
			{"GET", "/v1/status", "Bearer wrong", http.StatusUnauthorized},
			{"GET", "/v1/status", "Basic " + ll.AdminToken, http.StatusUnauthorized},
			{"POST", "/v1/outage/start", "", http.StatusUnauthorized},
			{"POST", "/v1/outage/start", "Bearer " + ll.AdminToken + "x", http.StatusUnauthorized},
			{"GET", "/v1/status", "Bearer " + ll.AdminToken, http.StatusOK},
		} {
			req, err := http.NewRequestWithContext(ctx, tc.method, "http://"+ll.HTTPAddr+tc.path, strings.NewReader(`{"server":"`+PrimaryServer+`","reason":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s with %q: %s, want %d", tc.method, tc.path, tc.auth, resp.Status, tc.want)
			}
		}
		st, err := ll.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st[PrimaryServer].Outage {
			t.Error("an unauthenticated request started an outage")
		}
	})

	t.Run("isolation", func(t *testing.T) {
		msg := []byte("From: carol@remote.test\r\nTo: " + bob + "\r\nSubject: for bob only\r\nMessage-ID: <bob-secret@remote.test>\r\n\r\nbob's secret\r\n")
		if err := lmtpDeliver(ctx, fmt.Sprintf("127.0.0.1:%d", lmtpPort), "carol@remote.test", bob, msg); err != nil {
			t.Fatal(err)
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
		bw := webLogin(t, base, bob, "bob-pw")
		m := regexp.MustCompile(`href="/mail/inbox/([0-9]+-[0-9a-f]+)"`).FindStringSubmatch(bw.get(t, "/mail/inbox", http.StatusOK))
		if m == nil {
			t.Fatal("bob's message is not in his webmail list")
		}
		ref := m[1]
		if !strings.Contains(bw.get(t, "/mail/inbox/"+ref+"/raw", http.StatusOK), "bob's secret") {
			t.Fatal("bob cannot read his own message")
		}
		aw := webLogin(t, base, alice, "alice-pw")
		for _, p := range []string{"/mail/inbox/" + ref, "/mail/inbox/" + ref + "/raw", "/mail/inbox/" + ref + "/body", "/mail/inbox/" + ref + "/part/1"} {
			if body := aw.get(t, p, http.StatusNotFound); strings.Contains(body, "secret") {
				t.Errorf("alice got bob's text from %s", p)
			}
		}
		c, err := IMAPLogin(ll.IMAPAddr, nil, alice, "alice-pw")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, name := range []string{bob, "INBOX/../" + bob, "#users/bob", bob + "/Sent"} {
			if _, err := c.Select(name, nil).Wait(); err == nil {
				t.Errorf("alice could SELECT %q", name)
			}
		}
		if n, err := IMAPCount(ll.IMAPAddr, alice, "alice-pw"); err != nil || n != 0 {
			t.Errorf("alice's INBOX: %d messages, %v", n, err)
		}
	})

	t.Run("one limiter for every protocol", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if _, err := IMAPLogin(ll.IMAPAddr, nil, bob, "guess"); err == nil {
				t.Fatal("a wrong password logged in")
			}
		}
		if _, err := IMAPLogin(ll.IMAPAddr, nil, bob, "bob-pw"); err == nil {
			t.Error("IMAP: bob's right password works after the lockout")
		}
		if refusal, err := POP3Login(ll.POP3Addr, bob, "bob-pw"); err == nil && refusal == "" {
			t.Error("POP3: bob's right password works after IMAP locked him out")
		}
		w := &webClient{base: fmt.Sprintf("http://127.0.0.1:%d", webPort), c: &http.Client{Timeout: time.Minute}}
		if code := w.tryLogin(t, bob, "bob-pw"); code != http.StatusTooManyRequests && code != http.StatusUnauthorized {
			t.Errorf("webmail: bob's right password after the lockout: %d", code)
		}
		// alice is not affected by bob's lockout.
		c, err := IMAPLogin(ll.IMAPAddr, nil, alice, "alice-pw")
		if err != nil {
			t.Fatalf("alice: %v", err)
		}
		c.Close()
	})
}

// tryLogin posts the login form once, with a fresh CSRF token, and returns
// the status code (303 on success: redirects are not followed).
func (w *webClient) tryLogin(t *testing.T, user, password string) int {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	w.c.Jar = jar
	w.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(w.get(t, "/login", http.StatusOK))
	if m == nil {
		t.Fatal("no CSRF token on the login page")
	}
	resp, err := w.c.PostForm(w.base+"/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

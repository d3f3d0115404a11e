package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/config"
)

// TestWebmail runs the daemon with webmail on HTTPS and plain HTTP: a user
// of the passwd-file reads a message journaled through the milter; the
// admin starts an outage from the admin page, which the user's banner and
// the outage state show.
func TestWebmail(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	der := writeCert(t, certFile, keyFile)
	users := filepath.Join(dir, "passwd")
	writeUsers(t, users, map[string]string{"alice@example.com": "alice pw", "postmaster@example.com": "pm pw"})
	milterAddr, httpAddr, webAddr, websAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg, err := config.Parse(filepath.Join(dir, "lifeline.toml"), []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[http]
listen = %q
[mailbox_access]
serve = "always"
[imap]
enabled = false
[pop3]
enabled = false
[tls]
cert_file = %q
key_file = %q
[auth]
passwd_file = %q
[webmail]
enabled = true
listen = %q
listen_tls = %q
admins = ["postmaster@example.com"]
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, certFile, keyFile, users, webAddr, websAddr)))
	if err != nil {
		t.Fatal(err)
	}
	startDaemon(t, cfg)
	if act, _ := sendMilter(t, milterAddr, "m1", "alice@example.com"); act.Type != gomilter.ActionAccept {
		t.Fatalf("milter: %v", act)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	get := func(c *http.Client, u string) string {
		t.Helper()
		res, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	login := func(c *http.Client, base, user, pw string) string {
		t.Helper()
		m := csrf.FindStringSubmatch(get(c, base+"/login"))
		if m == nil {
			t.Fatal("no login form")
		}
		res, err := c.PostForm(base+"/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.Request.URL.Path != "/mail/inbox" {
			t.Fatalf("login %s at %s: %s", user, base, b)
		}
		return string(b)
	}
	for _, base := range []string{"https://" + websAddr, "http://" + webAddr} {
		page := login(client(), base, "alice@example.com", "alice pw")
		if !strings.Contains(page, "1 message<") {
			t.Errorf("%s inbox:\n%s", base, page)
		}
	}
	adm := client()
	page := login(adm, "https://"+websAddr, "postmaster@example.com", "pm pw")
	tok := csrf.FindStringSubmatch(page)[1]
	res, err := adm.PostForm("https://"+websAddr+"/admin/outage", url.Values{"csrf": {tok}, "server": {"dc"}, "action": {"start"}, "reason": {"test"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "outage since") {
		t.Fatalf("admin page after start: %d\n%s", res.StatusCode, b)
	}
	if !strings.Contains(get(adm, "https://"+websAddr+"/mail/inbox"), "unavailable since") {
		t.Error("no outage banner")
	}
}

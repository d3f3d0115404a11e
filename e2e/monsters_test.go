package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// monster is one hostile or oversized message for TestMonsters.
type monster struct {
	name  string
	rcpts []string // default: alice
	data  func(id string) []byte
}

// monsterHeader is the start of every monster: its test id, so that the
// copies in Dovecot and in Lifeline's IMAP can be told apart.
func monsterHeader(id, subject string) string {
	return fmt.Sprintf("From: Monster <monster@remote.test>\r\nTo: alice@%s\r\nSubject: %s\r\nMessage-ID: <%s@remote.test>\r\nX-Lifeline-Test-Id: %s\r\nDate: Fri, 27 Nov 2026 06:00:00 +0000\r\n",
		DefaultDomain, subject, id, id)
}

func monsters() []monster {
	rcpts := make([]string, 10000)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("r%05d@%s", i, DefaultDomain)
	}
	return []monster{
		{name: "100000 headers", data: func(id string) []byte {
			var b strings.Builder
			b.WriteString(monsterHeader(id, "100000 headers"))
			for i := 0; i < 100000; i++ {
				fmt.Fprintf(&b, "X-Monster-%d: %d\r\n", i, i)
			}
			b.WriteString("\r\nbody\r\n")
			return []byte(b.String())
		}},
		{name: "NUL bytes", data: func(id string) []byte {
			return []byte(monsterHeader(id, "NUL\x00bytes") + "Content-Type: text/plain; charset=us-ascii\r\n\r\nbefore\x00after\r\n\x00\x00\x00\r\n")
		}},
		{name: "bare CR", data: func(id string) []byte {
			return []byte(monsterHeader(id, "bare CR") + "Content-Type: text/plain\r\n\r\nline one\rstill one\r\nline\r\rtwo\r\n")
		}},
		{name: "nested 2000 deep", data: func(id string) []byte {
			var b strings.Builder
			b.WriteString(monsterHeader(id, "nested"))
			b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
			const depth = 2000
			for i := 0; i < depth; i++ {
				fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i, i+1)
			}
			fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n--b%d--\r\n", depth, depth)
			for i := depth - 1; i >= 0; i-- {
				fmt.Fprintf(&b, "--b%d--\r\n", i)
			}
			return []byte(b.String())
		}},
		{name: "invalid charsets", data: func(id string) []byte {
			return []byte(monsterHeader(id, "=?x-no-such-charset?B?w6TDtsO8?= =?utf-8?Q?broken=ZZ?= \xff\xfe raw") +
				"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n" +
				"--x\r\nContent-Type: text/plain; charset=\"x-no-such-charset\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E4=F6=FC=\r\n=ZZ\r\n" +
				"--x\r\nContent-Type: text/html; charset=utf-7\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n" +
				"--x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\x28 invalid UTF-8 \xf0\x28\x8c\x28\r\n--x--\r\n")
		}},
		{name: "10000 recipients", rcpts: rcpts, data: func(id string) []byte {
			return []byte(monsterHeader(id, "10000 recipients") + "\r\nto many\r\n")
		}},
		{name: "50 MB", data: func(id string) []byte {
			hdr := fmt.Sprintf("Message-ID: <%s@remote.test>\r\nX-Lifeline-Test-Id: %s\r\n", id, id)
			return append([]byte(hdr), MessageOfSize(50<<20, "alice@"+DefaultDomain)...)
		}},
	}
}

// TestMonsters sends hostile and oversized messages through Postfix and the
// milter (issue 8: 100,000 headers, NUL bytes, bare CR, deep nesting,
// invalid charsets, 10,000 recipients, 50 MB) and checks that none stops
// Lifeline or mail flow: each reaches Dovecot, each is in the journal, the
// continuity mailbox serves its ENVELOPE, BODYSTRUCTURE and body over IMAP
// and its page in webmail, and the journal verifies afterwards.
func TestMonsters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postfix, Dovecot and Lifeline")
	}
	ms := monsters()
	// The 10,000 recipients are aliases of alice: Postfix hands Dovecot one
	// copy, while the milter and the journal see every RCPT TO.
	aliases := map[string][]string{}
	for _, r := range ms[5].rcpts {
		aliases[r] = []string{"alice@" + DefaultDomain}
	}
	webPort := FreePort(t)
	env := Start(t, Options{
		Milter:  true,
		Aliases: aliases,
		Postfix: PostfixOptions{Main: map[string]string{"smtpd_recipient_limit": "10000", "in_flow_delay": "0",
			// Without it Postfix keeps one copy per original recipient.
			"enable_original_recipient": "no"}},
		Lifeline: LifelineOptions{
			// 10,000 RCPT events and 50 MB of body events without a reply
			// each: the unix-socket path of the milter (milter/server.go).
			MilterUnix: true,
			Sidecar:    &SidecarOptions{Serve: "always", Users: map[string]string{"alice@" + DefaultDomain: "pw"}},
			ExtraTOML:  fmt.Sprintf("[webmail]\nenabled = true\nlisten = \"127.0.0.1:%d\"\n", webPort),
		},
	})
	ctx := context.Background()
	ledger := NewLedger()
	ids := map[string]string{} // test id -> monster name
	for _, m := range ms {
		id := ledger.NewID()
		ids[id] = m.name
		ledger.Expect(id, "alice@"+DefaultDomain)
		to := m.rcpts
		if to == nil {
			to = []string{"alice@" + DefaultDomain}
		}
		start := time.Now()
		if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "monster@remote.test", To: to, Data: m.data(id)}); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		t.Logf("%s: accepted in %v", m.name, time.Since(start).Round(time.Millisecond))
		if resp, err := http.Get("http://" + env.Lifeline.HTTPAddr + "/healthz"); err != nil {
			t.Fatalf("after %s: Lifeline is gone: %v", m.name, err)
		} else {
			resp.Body.Close()
		}
	}
	rep, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("Dovecot: %v", rep)
	}
	if err := WaitIMAPCount(ctx, env.Lifeline.IMAPAddr, "alice@"+DefaultDomain, "pw", uint32(len(ms)), time.Minute); err != nil {
		t.Fatal(err)
	}

	// IMAP: every message's ENVELOPE, BODYSTRUCTURE and whole body; a panic
	// in the server would end the connection and fail the fetch.
	c, err := IMAPLogin(env.Lifeline.IMAPAddr, nil, "alice@"+DefaultDomain, "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for seq := uint32(1); seq <= uint32(len(ms)); seq++ {
		msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{
			Envelope:      true,
			BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
			BodySection:   []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("FETCH %d: %d messages, %v", seq, len(msgs), err)
		}
		m := msgs[0]
		if m.Envelope == nil || m.BodyStructure == nil {
			t.Errorf("FETCH %d: envelope %v, body structure %v", seq, m.Envelope, m.BodyStructure)
		}
		var body []byte
		for _, b := range m.BodySection {
			body = b.Bytes
		}
		id := TestIDOfBytes(body)
		if ids[id] == "" {
			t.Errorf("FETCH %d: a message without a known test id (%d bytes)", seq, len(body))
			continue
		}
		seen[id] = true
		t.Logf("IMAP %d: %s, %d bytes", seq, ids[id], len(body))
	}
	if len(seen) != len(ms) {
		t.Errorf("IMAP served %d of the %d monsters", len(seen), len(ms))
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}

	// Webmail: the list and every message page and body frame.
	web := webLogin(t, fmt.Sprintf("http://127.0.0.1:%d", webPort), "alice@"+DefaultDomain, "pw")
	list := web.get(t, "/mail/inbox", http.StatusOK)
	refs := regexp.MustCompile(`href="/mail/inbox/([0-9]+-[0-9a-f]+)"`).FindAllStringSubmatch(list, -1)
	got := map[string]bool{}
	for _, r := range refs {
		if got[r[1]] {
			continue
		}
		got[r[1]] = true
		web.get(t, "/mail/inbox/"+r[1], http.StatusOK)
		web.get(t, "/mail/inbox/"+r[1]+"/body", http.StatusOK)
	}
	if len(got) != len(ms) {
		t.Errorf("webmail lists %d of the %d monsters", len(got), len(ms))
	}

	// Nothing recorded a panic, and the journal is consistent.
	page, err := env.Lifeline.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := MetricSum(page, "lifeline_panics_total"); n != 0 {
		t.Errorf("%v panics recorded", n)
	}
	if err := env.Lifeline.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Lifeline.Verify(ctx); err != nil {
		t.Fatalf("journal verify: %v\n%s", err, out)
	}
}

// webClient is a logged-in webmail session.
type webClient struct {
	base string
	c    *http.Client
}

// webLogin logs in through the login form (its CSRF token is a
// double-submit cookie).
func webLogin(t *testing.T, base, user, password string) *webClient {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &webClient{base: base, c: &http.Client{Jar: jar, Timeout: 2 * time.Minute}}
	page := w.get(t, "/login", http.StatusOK)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the login page:\n%s", page)
	}
	resp, err := w.c.PostForm(base+"/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("/mail/inbox")) {
		t.Fatalf("login: %s\n%s", resp.Status, body)
	}
	return w
}

func (w *webClient) get(t *testing.T, path string, want int) string {
	t.Helper()
	resp, err := w.c.Get(w.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s, want %d\n%.2000s", path, resp.Status, want, body)
	}
	return string(body)
}

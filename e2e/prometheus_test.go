package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// contribFile is a file under contrib/ of the module.
func contribFile(t *testing.T, parts ...string) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root, "contrib"}, parts...)...)
}

// rulesForTest copies contrib/prometheus/alerts.yml with every "for:" set
// to 0s, so that an alert fires at the first evaluation after its condition
// holds: the test's outage lasts seconds, not the minute the real rule waits.
func rulesForTest(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(contribFile(t, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^(\s+for:\s*)\S+`)
	if len(re.FindAll(b, -1)) < 8 {
		t.Fatalf("alerts.yml has fewer than 8 for: lines")
	}
	path := filepath.Join(t.TempDir(), "alerts.yml")
	if err := os.WriteFile(path, re.ReplaceAll(b, []byte("${1}0s")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// firing reports whether alertname is firing for server.
func firing(ctx context.Context, p *Prometheus, alertname, server string) (bool, error) {
	alerts, err := p.Alerts(ctx)
	if err != nil {
		return false, err
	}
	for _, a := range alerts {
		if a.Labels["alertname"] == alertname && a.Labels["server"] == server && a.State == "firing" {
			return true, nil
		}
	}
	return false, nil
}

// TestPrometheusDashboardAndAlerts runs Lifeline through normal mail, an
// outage (Dovecot stopped; mail into custody; an IMAP login to the
// continuity mailbox) and the recovery with its replay, scraped by a real
// Prometheus that loads contrib/prometheus/alerts.yml. LifelineOutageActive
// fires during the outage and is resolved after it. Then every query of
// contrib/grafana/lifeline-dashboard.json, its variables filled in from
// their own label_values() queries, returns at least one series, and every
// metric a dashboard query or an alert rule names is one Lifeline exports.
// The webmail, the LMTP ingest listeners and the policy service are on, and
// the scenario uses each once (a failed and a good webmail login during the
// outage; after it, a message to the journal listener, a Postfix policy
// request and an Exim state line), so that their panels have series too.
func TestPrometheusDashboardAndAlerts(t *testing.T) {
	requireE2E(t)
	RequirePrometheus(t)
	alice := qualify("alice", DefaultDomain)
	const password = "alice-Secret-1"
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", FreePort(t)) }
	webmailAddr, journalAddr, custodyAddr, policyAddr := addr(), addr(), addr(), addr()
	env := Start(t, Options{
		Milter: true,
		Users:  []string{"alice", "bob"},
		Lifeline: LifelineOptions{
			Outage:  &OutageOptions{},
			Sidecar: &SidecarOptions{Users: map[string]string{alice: password}},
			ExtraTOML: fmt.Sprintf("[webmail]\nenabled = true\nlisten = %q\n\n[ingest]\njournal_listen = %q\ncustody_listen = %q\n\n[policy]\nlisten = %q\n",
				webmailAddr, "tcp:"+journalAddr, "tcp:"+custodyAddr, "tcp:"+policyAddr),
		},
	})
	ll := env.Lifeline
	prom := StartPrometheus(t, PrometheusOptions{Targets: []string{ll.HTTPAddr}, RuleFiles: []string{rulesForTest(t)}})
	ctx := context.Background()

	err := Poll(ctx, 60*time.Second, func() (bool, error) {
		s, err := prom.Query(ctx, `up{job="lifeline"} == 1`)
		return len(s) == 1, err
	})
	if err != nil {
		t.Fatalf("Prometheus does not scrape Lifeline: %v\n%s", err, tail(prom.LogPath, 4096))
	}
	rules, err := prom.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 8 {
		t.Errorf("Prometheus loaded %d rules, want 8", len(rules))
	}

	ledger := NewLedger()
	send := func(to string) string {
		t.Helper()
		id := ledger.NewID()
		data := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\nFrom: sender@example.net\nTo: %s\nSubject: %s\n\nmessage %s\n", id, to, id, id)
		if _, err := Send(ctx, env.Postfix.SMTPAddr, Mail{From: "sender@example.net", To: []string{to}, Data: WithTestID(id, []byte(data))}); err != nil {
			t.Fatalf("sending %s: %v", id, err)
		}
		return id
	}

	// Normal mail.
	for _, u := range []string{"alice", "bob", "alice"} {
		ledger.Expect(send(qualify(u, DefaultDomain)), qualify(u, DefaultDomain))
	}
	if r, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil || !r.OK() {
		t.Fatalf("normal mail: %v %v", r, err)
	}
	if on, err := firing(ctx, prom, "LifelineOutageActive", PrimaryServer); err != nil || on {
		t.Fatalf("LifelineOutageActive firing before the outage (%v)", err)
	}

	// The outage: Dovecot stops, mail goes into custody, alice reads it.
	if err := env.Dovecot.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ll.WaitOutage(ctx, PrimaryServer, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var custody []string
	for _, u := range []string{"alice", "bob"} {
		id := send(qualify(u, DefaultDomain))
		custody = append(custody, id)
		ledger.Expect(id, qualify(u, DefaultDomain))
	}
	if _, err := ll.WaitStatus(ctx, PrimaryServer, 30*time.Second, func(s ServerStatus) bool { return s.Backlog >= 2 }); err != nil {
		t.Fatalf("the mail sent during the outage is not in custody: %v", err)
	}
	err = Poll(ctx, 30*time.Second, func() (bool, error) {
		c, err := IMAPLogin(ll.IMAPAddr, nil, alice, password)
		if err != nil {
			return false, err
		}
		return true, errors.Join(c.Logout().Wait(), c.Close())
	})
	if err != nil {
		t.Errorf("IMAP login during the outage: %v", err)
	}
	// The webmail serves only during an outage (the default
	// [mailbox_access] rule), so it is tried now.
	if err := webmailLogins(ctx, "http://"+webmailAddr, alice, password); err != nil {
		t.Errorf("webmail during the outage: %v", err)
	}
	start := time.Now()
	err = Poll(ctx, 30*time.Second, func() (bool, error) { return firing(ctx, prom, "LifelineOutageActive", PrimaryServer) })
	if err != nil {
		t.Fatalf("LifelineOutageActive not firing during the outage: %v", err)
	}
	t.Logf("LifelineOutageActive firing %v after the outage was seen in the status", time.Since(start).Round(time.Millisecond))
	if s, err := prom.Query(ctx, `ALERTS{alertname="LifelineOutageActive", alertstate="firing", server="dovecot"}`); err != nil || len(s) != 1 {
		t.Errorf("ALERTS during the outage: %v %v", s, err)
	}

	// Recovery and replay.
	env.Dovecot.Restart(t)
	if _, _, err := ll.WaitOutage(ctx, PrimaryServer, false, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := ll.WaitBacklog(ctx, PrimaryServer, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if r, err := WaitDelivered(ctx, env.Postfix, env.Dovecot, ledger, time.Minute); err != nil || !r.OK() {
		t.Errorf("after the replay: %v %v", r, err)
	}
	err = Poll(ctx, 30*time.Second, func() (bool, error) {
		on, err := firing(ctx, prom, "LifelineOutageActive", PrimaryServer)
		return !on, err
	})
	if err != nil {
		t.Errorf("LifelineOutageActive still firing after the outage: %v", err)
	}
	err = Poll(ctx, 30*time.Second, func() (bool, error) {
		s, err := prom.Query(ctx, `sum(lifeline_replay_recipients_total{result="delivered"}) >= 2`)
		return len(s) == 1, err
	})
	if err != nil {
		t.Errorf("Prometheus did not see the replay: %v", err)
	}
	for _, bad := range []string{"LifelinePanic", "LifelineJournalWriteErrors", "LifelineReplayFailures", "LifelineDown"} {
		alerts, err := prom.Alerts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == bad {
				t.Errorf("%s is %s: %v", bad, a.State, a.Labels)
			}
		}
	}

	// The ingest listener and the policy service, each once, after the
	// outage: the journal copy (state mta) does not change the backlog and
	// replay the assertions above are about, and the policy answers are
	// those of a server that is up.
	if err := WaitGreeting(ctx, journalAddr, "220 ", 30*time.Second); err != nil {
		t.Fatalf("the journal LMTP listener: %v", err)
	}
	id := ledger.NewID()
	msg := fmt.Sprintf("Message-ID: <%s@e2e.lifeline.test>\r\nFrom: sender@example.net\r\nTo: %s\r\nSubject: %s\r\n\r\nLMTP %s\r\n", id, alice, id, id)
	if err := lmtpDeliver(ctx, journalAddr, "sender@example.net", alice, []byte(msg)); err != nil {
		t.Errorf("LMTP to the journal listener: %v", err)
	}
	if got, err := policyPostfix(ctx, policyAddr, alice); err != nil || got != "action=DUNNO" {
		t.Errorf("Postfix policy request for %s = %q, %v; want action=DUNNO", alice, got, err)
	}
	if got, err := policyExim(ctx, policyAddr, alice); err != nil || got != "up" {
		t.Errorf("Exim state request for %s = %q, %v; want up", alice, got, err)
	}
	// Each of those was counted with the labels the dashboard groups by.
	for _, expr := range []string{
		`lifeline_logins_total{protocol="webmail", result="failure"} >= 1`,
		`lifeline_logins_total{protocol="webmail", result="success"} >= 1`,
		`lifeline_webmail_requests_total{page="login", code="303"} >= 1`,
		`lifeline_webmail_requests_total{page="list", code="200"} >= 1`,
		`lifeline_webmail_sessions >= 1`,
		`lifeline_ingest_messages_total{listener="journal", result="stored"} == 1`,
		`lifeline_policy_requests_total{protocol="postfix", action="dunno"} == 1`,
		`lifeline_policy_requests_total{protocol="exim", action="up"} == 1`,
	} {
		err := Poll(ctx, 30*time.Second, func() (bool, error) {
			s, err := prom.Query(ctx, expr)
			return len(s) == 1, err
		})
		if err != nil {
			t.Errorf("Prometheus: %s: %v", expr, err)
		}
	}

	checkDashboard(t, ctx, prom, ll.HTTPAddr)
	checkRuleMetrics(t, ctx, prom)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// webmailLogins does what a browser does: GET /login for the form's CSRF
// token and its double-submit cookie, POST a wrong password (401, a new
// form), POST the right one (303 to the inbox, a session cookie), and open
// the inbox with that session.
func webmailLogins(ctx context.Context, base, user, password string) error {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	client := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		// The test checks each redirect itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(method, path string, form url.Values, want int) (string, *http.Response, error) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, body)
		if err != nil {
			return "", nil, err
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if resp.StatusCode != want {
			return "", nil, fmt.Errorf("%s %s: %s, want %d: %.300s", method, path, resp.Status, want, b)
		}
		return string(b), resp, nil
	}
	token := func(page string) (string, error) {
		m := csrfRE.FindStringSubmatch(page)
		if m == nil {
			return "", fmt.Errorf("no csrf field in the login form: %.300s", page)
		}
		return html.UnescapeString(m[1]), nil
	}
	// The listener may still be opening when /healthz is already up.
	var page string
	err = Poll(ctx, 30*time.Second, func() (bool, error) {
		page, _, err = do(http.MethodGet, "/login", nil, http.StatusOK)
		return err == nil, err
	})
	if err != nil {
		return err
	}
	csrf, err := token(page)
	if err != nil {
		return err
	}
	page, _, err = do(http.MethodPost, "/login", url.Values{"csrf": {csrf}, "user": {user}, "password": {password + "-wrong"}}, http.StatusUnauthorized)
	if err != nil {
		return fmt.Errorf("wrong password: %w", err)
	}
	if csrf, err = token(page); err != nil {
		return err
	}
	_, resp, err := do(http.MethodPost, "/login", url.Values{"csrf": {csrf}, "user": {user}, "password": {password}}, http.StatusSeeOther)
	if err != nil {
		return fmt.Errorf("right password: %w", err)
	}
	loc := resp.Header.Get("Location")
	if loc != "/mail/inbox" {
		return fmt.Errorf("login redirects to %q, want /mail/inbox", loc)
	}
	_, _, err = do(http.MethodGet, loc, nil, http.StatusOK)
	return err
}

// lmtpDeliver sends one message over LMTP (RFC 2033) and requires the
// recipient's own 250 after the data.
func lmtpDeliver(ctx context.Context, addr, from, to string, msg []byte) error {
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		conn.Close()
		return err
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("e2e.lifeline.test"); err != nil {
		return fmt.Errorf("LHLO: %w", err)
	}
	if err := c.Mail(from, nil); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	// With one recipient, a reply other than 2xx is an LMTPDataError.
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

// policyPostfix sends one request of Postfix's access-policy delegation
// protocol (SMTPD_POLICY_README: name=value lines, an empty line) and
// returns the answer's action line.
func policyPostfix(ctx context.Context, addr, rcpt string) (string, error) {
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
		"client_address=127.0.0.1\nsender=sender@example.net\nrecipient=" + rcpt + "\n\n"
	var action string
	err := policyExchange(ctx, addr, req, func(r *bufio.Reader) error {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("policy answer %q: %w", action, err)
			}
			line = strings.TrimRight(line, "\n")
			if line == "" {
				return nil
			}
			if action == "" {
				action = line
			}
		}
	})
	return action, err
}

// policyExim sends Exim's "state <address>" line and returns the one-line
// answer, which the server ends by closing the connection.
func policyExim(ctx context.Context, addr, rcpt string) (string, error) {
	var answer string
	err := policyExchange(ctx, addr, "state "+rcpt+"\n", func(r *bufio.Reader) error {
		b, err := io.ReadAll(r)
		answer = strings.TrimRight(string(b), "\n")
		return err
	})
	return answer, err
}

func policyExchange(ctx context.Context, addr, req string, read func(*bufio.Reader) error) error {
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	return read(bufio.NewReader(conn))
}

// checkDashboard fills the dashboard's variables from their queries and
// requires every query to return a series and to name only exported metrics.
func checkDashboard(t *testing.T, ctx context.Context, prom *Prometheus, instance string) {
	t.Helper()
	queries, vars, err := ReadDashboard(contribFile(t, "grafana", "lifeline-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) < 30 {
		t.Fatalf("the dashboard has %d queries", len(queries))
	}
	names, err := prom.LabelValues(ctx, "__name__", "")
	if err != nil {
		t.Fatal(err)
	}
	// The variables, in order (a later one may use an earlier one).
	values := map[string]string{"datasource": "prometheus"}
	for _, v := range vars {
		sel, label, ok := ParseLabelValues(v.Query)
		if !ok {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, v.Query)
			continue
		}
		sel, err := ExpandVariables(sel, values)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		queries = append(queries, DashboardQuery{Where: "variable " + v.Name, Expr: sel})
		got, err := prom.LabelValues(ctx, label, sel)
		if err != nil || len(got) == 0 {
			t.Errorf("variable %s: label_values(%s, %s) = %v, %v", v.Name, sel, label, got, err)
			continue
		}
		t.Logf("variable %s = %v", v.Name, got)
		// Fill in one value, as a user picking it would; the instance is
		// the one Lifeline the test runs.
		pick := got[0]
		if v.Name == "instance" {
			if !slices.Contains(got, instance) {
				t.Errorf("variable instance: %v lacks %s", got, instance)
			}
			pick = instance
		}
		if v.Name == "server" && slices.Contains(got, PrimaryServer) {
			pick = PrimaryServer
		}
		// As Grafana writes a value into =~"…": regex-escaped, and the
		// backslashes escaped again for the PromQL string.
		values[v.Name] = strings.ReplaceAll(regexp.QuoteMeta(pick), `\`, `\\`)
	}
	for _, want := range []string{"instance", "server"} {
		if _, ok := values[want]; !ok {
			t.Errorf("the dashboard lacks the %s variable", want)
		}
	}

	type check struct {
		where, expr string
		series      int
		err         error
	}
	var checks []*check
	for _, q := range queries {
		for _, name := range MetricNames(q.Expr) {
			if !slices.Contains(names, name) {
				t.Errorf("%s names %s, which Lifeline does not export: %s", q.Where, name, q.Expr)
			}
		}
		expr, err := ExpandVariables(q.Expr, values)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		checks = append(checks, &check{where: q.Where, expr: expr})
	}
	// A series can appear a scrape or a journal statistics refresh (15 s)
	// late: poll until every query has one, then report those that do not.
	pending := func() []*check {
		var out []*check
		for _, c := range checks {
			if c.series == 0 {
				out = append(out, c)
			}
		}
		return out
	}
	_ = Poll(ctx, 45*time.Second, func() (bool, error) {
		for _, c := range checks {
			if c.series > 0 {
				continue
			}
			s, err := prom.Query(ctx, c.expr)
			c.series, c.err = len(s), err
		}
		return len(pending()) == 0, nil
	})
	for _, c := range pending() {
		t.Errorf("%s returns no series (err %v): %s", c.where, c.err, c.expr)
	}
	t.Logf("%d dashboard queries checked against Prometheus", len(checks))
}

// checkRuleMetrics requires every metric an alert rule names to be exported
// (a rule on a misspelt metric never fires) and every rule to be healthy.
func checkRuleMetrics(t *testing.T, ctx context.Context, prom *Prometheus) {
	t.Helper()
	names, err := prom.LabelValues(ctx, "__name__", "")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := prom.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Health == "err" {
			t.Errorf("rule %s: %s", r.Name, r.Error)
		}
		for _, n := range MetricNames(r.Query) {
			if !slices.Contains(names, n) {
				t.Errorf("rule %s names %s, which is not exported: %s", r.Name, n, r.Query)
			}
		}
	}
}

// TestPromtoolChecks runs promtool on the contrib files: the rules, their
// unit tests (alerts_test.yml) and the example configuration (with its
// rule_files pointed at the real file).
func TestPromtoolChecks(t *testing.T) {
	RequirePrometheus(t)
	rules := contribFile(t, "prometheus", "alerts.yml")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(PromtoolBin, args...)
		cmd.Dir = filepath.Dir(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", rules)
	run("test", "rules", "alerts_test.yml")
	b, err := os.ReadFile(contribFile(t, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	const installed = "/etc/prometheus/lifeline-alerts.yml"
	if !strings.Contains(string(b), installed) {
		t.Fatalf("prometheus.yml does not load %s", installed)
	}
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(b), installed, rules)), 0o644); err != nil {
		t.Fatal(err)
	}
	run("check", "config", cfg)
}

// TestMetricNames checks the PromQL name extraction the dashboard test
// relies on.
func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (result) (rate(lifeline_milter_messages_total{instance=~"$instance"}[$__rate_interval]))`:   "lifeline_milter_messages_total",
		`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m])))`:                                 "a_bucket",
		`time() - (lifeline_journal_oldest_timestamp_seconds > 0)`:                                          "lifeline_journal_oldest_timestamp_seconds",
		`x / on (instance) group_left(version) y * 1e3 and z offset 5m`:                                     "x y z",
		`up{job="lifeline"} == 0 or absent(up{job="lifeline"})`:                                             "up",
		`max by (instance, server) (a) > 3600 and on (instance, server) max by (instance, server) (b) == 0`: "a b",
		`deriv(j[1h]) * 86400`:                   "j",
		`sum(increase(p{c="by (x)"}[$__range]))`: "p",
	} {
		if got := strings.Join(MetricNames(expr), " "); got != want {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
	got, err := ExpandVariables(`a{i=~"$instance", s=~"${server}"}[$__rate_interval]`, map[string]string{"instance": "h:1", "server": "dc"})
	if err != nil || got != `a{i=~"h:1", s=~"dc"}[1m]` {
		t.Errorf("ExpandVariables = %q, %v", got, err)
	}
	if _, err := ExpandVariables(`a{x="$nope"}`, nil); err == nil {
		t.Error("unknown variable accepted")
	}
	if sel, label, ok := ParseLabelValues(`label_values(m{instance=~"$instance"}, server)`); !ok || sel != `m{instance=~"$instance"}` || label != "server" {
		t.Errorf("ParseLabelValues = %q %q %v", sel, label, ok)
	}
}

// FuzzMetricNames: the name extraction never panics, and what it returns are
// identifiers that occur in the expression.
func FuzzMetricNames(f *testing.F) {
	for _, s := range []string{
		`sum by (result) (rate(lifeline_milter_messages_total{instance=~"$instance"}[$__rate_interval]))`,
		`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y\"}"}[5m])))`,
		`x / on (instance) group_left(version) y * 1e3 and z offset 5m`,
		"a{b=`c}`} or d",
		`time() - (m > 0)`,
	} {
		f.Add(s)
	}
	ident := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	f.Fuzz(func(t *testing.T, expr string) {
		for _, n := range MetricNames(expr) {
			if !ident.MatchString(n) || !strings.Contains(expr, n) {
				t.Fatalf("MetricNames(%q) returned %q", expr, n)
			}
		}
		_, _ = ExpandVariables(expr, map[string]string{"instance": "x"})
		_, _, _ = ParseLabelValues(expr)
	})
}

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/config"
)

// TestOutageConfigParses checks that the config the harness writes for the
// outage tests is one Lifeline's strict config loader accepts: two servers
// with probes, a window, [replay] and the admin token.
func TestOutageConfigParses(t *testing.T) {
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	no := false
	l := &Lifeline{JournalDir: "/tmp/j", MilterAddr: "tcp:127.0.0.1:1", HTTPAddr: "127.0.0.1:2", AdminToken: "tok"}
	text := l.config(LifelineOptions{
		Retention: "90d", OnJournalError: "accept", LogLevel: "info",
		Servers: []LifelineServer{
			{Name: PrimaryServer, Domains: []string{"a.test"}, LMTPAddr: "127.0.0.1:24", Canary: "c@a.test"},
			{Name: SecondServer, Domains: []string{"b.test"}, LMTPAddr: "127.0.0.1:25"},
		},
		Outage: &OutageOptions{
			Windows: []Window{{Server: PrimaryServer, Start: start, End: start.Add(time.Hour), Reason: "upgrade"}},
			Replay:  ReplayOptions{Concurrency: 4, Rate: 100, DSN: &no},
		},
	})
	for _, want := range []string{`admin_token = "tok"`, "[[server.probe]]", `canary = "c@a.test"`, "start = 2026-12-01T02:00:00Z", "rate = 100", `interval = "200ms"`} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if _, err := config.Parse("e2e.toml", []byte(text)); err != nil {
		t.Errorf("config.Parse: %v\n%s", err, text)
	}
}

func TestParseStatus(t *testing.T) {
	for _, in := range []string{
		`{"servers":[{"name":"dovecot","outage":true,"since":"2026-11-26T23:00:00.5Z","cause":"probe","backlog":12,"oldest":"2026-11-26T23:00:01Z","extra":{"x":1}},{"name":"dovecot2","outage":false,"since":null,"backlog":0}]}`,
		`[{"name":"dovecot","outage":true,"since":1795734000.5,"cause":"probe","backlog":12},{"name":"dovecot2"}]`,
	} {
		st, err := parseStatus([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		a, b := st[PrimaryServer], st[SecondServer]
		if !a.Outage || a.Cause != "probe" || a.Backlog != 12 || a.Since.IsZero() || b.Outage || b.Backlog != 0 || !b.Since.IsZero() {
			t.Errorf("%s: parsed %+v %+v", in, a, b)
		}
	}
	if _, err := parseStatus([]byte("dovecot: up")); err == nil {
		t.Errorf("text status parsed as JSON")
	}
}

package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleUncommented is the example file with the commented section that
// starts with header (e.g. "#[ingest]") uncommented, up to its blank line.
func exampleUncommented(t *testing.T, s, header string) string {
	t.Helper()
	i := strings.Index(s, header)
	if i < 0 {
		t.Fatalf("no commented %s section in the example", header)
	}
	j := strings.Index(s[i:], "\n\n")
	if j < 0 {
		t.Fatalf("%s section does not end", header)
	}
	sec := regexp.MustCompile(`(?m)^#([a-z_\[])`).ReplaceAllString(s[i:i+j], "$1")
	return s[:i] + sec + s[i+j:]
}

func TestIngestPolicyExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s := exampleUncommented(t, string(b), "#[ingest]")
	s = exampleUncommented(t, s, "#[policy]")
	c, err := Parse("example", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	i, p := c.Ingest, c.Policy
	if !i.On() || i.JournalListen != "tcp:127.0.0.1:2424" || i.CustodyListen != "tcp:127.0.0.1:2425" || i.MaxMessageSize != 64<<20 ||
		i.MaxRecipients != 1000 || i.ReadTimeout.D() != 5*time.Minute || i.WriteTimeout.D() != 5*time.Minute {
		t.Errorf("ingest %+v", i)
	}
	if p.Listen != "tcp:127.0.0.1:10040" || !*p.RejectUnknown || p.KnownRecipientsFile != "" || p.DeferAbove != 95 || p.Timeout.D() != time.Minute {
		t.Errorf("policy %+v", p)
	}
}

func TestIngestPolicyDefaultsOff(t *testing.T) {
	c, err := Load(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ingest.On() || c.Policy.Listen != "" {
		t.Errorf("on by default: %+v %+v", c.Ingest, c.Policy)
	}
	if c.Ingest.MaxMessageSize != DefaultIngestMaxMessageSize || !*c.Policy.RejectUnknown || c.Policy.DeferAbove != 95 {
		t.Errorf("defaults: %+v %+v", c.Ingest, c.Policy)
	}
}

func TestIngestPolicyValues(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("x", append(slices.Clone(base), []byte("\n[policy]\nlisten = \"unix:/run/l/policy.sock\"\nreject_unknown = false\ndefer_above = 80.5\ntimeout = \"5s\"\n")...))
	if err != nil {
		t.Fatal(err)
	}
	if *c.Policy.RejectUnknown || c.Policy.DeferAbove != 80.5 || c.Policy.Timeout.D() != 5*time.Second {
		t.Errorf("policy %+v", c.Policy)
	}
}

func TestIngestPolicyErrors(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ section, want string }{
		{"[ingest]\njournal_listen = \"nope\"", "ingest.journal_listen"},
		{"[ingest]\ncustody_listen = \"unix:relative\"", "ingest.custody_listen"},
		{"[ingest]\njournal_listen = \"tcp:127.0.0.1:2424\"\ncustody_listen = \"tcp:127.0.0.1:2424\"", "ingest.custody_listen"},
		{"[ingest]\nmax_recipients = 10", "ingest.max_recipients"},
		{"[ingest]\nmax_message_size = \"10B\"", "ingest.max_message_size"},
		{"[ingest]\nread_timeout = \"10ms\"", "ingest.read_timeout"},
		{"[ingest]\nbogus = 1", "bogus"},
		{"[policy]\nlisten = \"127.0.0.1:8894\"", "policy.listen: 127.0.0.1:8894 is already milter.listen"},
		{"[policy]\ndefer_above = \"101%\"", "policy.defer_above"},
		{"[policy]\ndefer_above = \"lots\"", "policy.defer_above"},
		{"[policy]\ntimeout = \"0s\"", ""}, // 0 is the default
		{"[policy]\ntimeout = \"100ms\"", "policy.timeout"},
	} {
		_, err := Parse("x", append(slices.Clone(base), []byte("\n"+tc.section+"\n")...))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.section, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.section, err, tc.want)
		}
	}
}

package addrmap

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const aliases = `# comment
example.net              anything
sales@example.com        alice@example.com, Bob@Example.com
support@example.com      sales@example.com
                         carol@example.com
loop1@example.com        loop2@example.com
loop2@example.com        loop1@example.com
keep@example.com         keep@example.com, alice@example.com
@catchall.example.com    dave@example.com
ext@example.com          erin+folder@example.com
outside@example.com      someone@elsewhere.org
`

func testMap(t *testing.T, strip bool) *Map {
	t.Helper()
	a, err := ParseAliases(strings.NewReader(aliases))
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{
		Servers: []Server{
			{Name: "dovecot", Domains: []string{"Example.com", "catchall.example.com"}, LMTP: "tcp:127.0.0.1:24"},
			{Name: "exchange", Domains: []string{"other.org"}, LMTP: "tcp:10.0.0.5:2525"},
		},
		StripDetail: strip,
		Aliases:     a,
	})
}

func TestResolve(t *testing.T) {
	m := testMap(t, true)
	cases := []struct {
		rcpt, mailer, host string
		boxes              []string
		server             string
	}{
		{"Alice@Example.COM", "", "", []string{"alice@example.com"}, "dovecot"},
		{"alice+news@example.com", "", "", []string{"alice@example.com"}, "dovecot"},
		{"sales@example.com", "", "", []string{"alice@example.com", "bob@example.com"}, "dovecot"},
		{"sales+x@example.com", "", "", []string{"alice@example.com", "bob@example.com"}, "dovecot"},
		{"support@example.com", "", "", []string{"alice@example.com", "bob@example.com", "carol@example.com"}, "dovecot"},
		{"keep@example.com", "", "", []string{"alice@example.com", "keep@example.com"}, "dovecot"},
		{"x@catchall.example.com", "", "", []string{"dave@example.com"}, "dovecot"},
		{"ext@example.com", "", "", []string{"erin@example.com"}, "dovecot"},
		{"user@other.org", "", "", []string{"user@other.org"}, "exchange"},
		{"user@foreign.net", "", "", nil, ""},
		{"outside@example.com", "", "", nil, ""},
		{"not-an-address", "", "", nil, ""},
		{"", "", "", nil, ""},
		// Postfix's resolved next hop names the server's LMTP address.
		{"user@foreign.net", "lmtp", "inet:[127.0.0.1]:24", nil, "dovecot"},
		{"user@other.org", "lmtp", "127.0.0.1:24", []string{"user@other.org"}, "dovecot"},
		{"user@other.org", "smtp", "127.0.0.1:24", []string{"user@other.org"}, "exchange"},
	}
	for _, c := range cases {
		boxes, server := m.Resolve(c.rcpt, c.mailer, c.host)
		if !reflect.DeepEqual(boxes, c.boxes) || server != c.server {
			t.Errorf("Resolve(%q, %q, %q) = %v %q, want %v %q", c.rcpt, c.mailer, c.host, boxes, server, c.boxes, c.server)
		}
	}
}

func TestLoopTerminates(t *testing.T) {
	boxes, _ := testMap(t, true).Resolve("loop1@example.com", "", "")
	if len(boxes) != 1 || boxes[0] != "loop1@example.com" {
		t.Fatalf("loop expansion = %v", boxes)
	}
}

func TestNoStrip(t *testing.T) {
	boxes, _ := testMap(t, false).Resolve("alice+news@example.com", "", "")
	if !reflect.DeepEqual(boxes, []string{"alice+news@example.com"}) {
		t.Fatalf("got %v", boxes)
	}
}

func TestMultipleDelimiters(t *testing.T) {
	m := New(Options{Servers: []Server{{Name: "s", Domains: []string{"x.org"}}}, StripDetail: true, DetailDelimiter: "+-"})
	for _, in := range []string{"a-b@x.org", "a+b@x.org", "a@x.org"} {
		if boxes, _ := m.Resolve(in, "", ""); !reflect.DeepEqual(boxes, []string{"a@x.org"}) {
			t.Errorf("%s -> %v", in, boxes)
		}
	}
	// A leading delimiter is part of the name, not an extension.
	if boxes, _ := m.Resolve("+a@x.org", "", ""); !reflect.DeepEqual(boxes, []string{"+a@x.org"}) {
		t.Errorf("+a -> %v", boxes)
	}
}

func TestParseAliasesErrors(t *testing.T) {
	for _, bad := range []string{"lonely@example.com\n", "  continuation@first\n"} {
		if _, err := ParseAliases(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestLoadAliases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "virtual")
	if err := os.WriteFile(p, []byte(aliases), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := LoadAliases(p)
	if err != nil || len(m["sales@example.com"]) != 2 {
		t.Fatalf("LoadAliases = %v, %v", m, err)
	}
	if _, err := LoadAliases(p + ".missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzParseAliases(f *testing.F) {
	f.Add(aliases)
	f.Add("a@b c@d,e@f\n\tg@h\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseAliases(strings.NewReader(s))
		if err != nil {
			return
		}
		r := New(Options{Servers: []Server{{Name: "s", Domains: []string{"example.com"}}}, StripDetail: true, Aliases: m})
		for k := range m {
			r.Resolve(k, "", "")
		}
	})
}

func TestServerOf(t *testing.T) {
	m := testMap(t, true)
	for in, want := range map[string]string{
		"alice@example.com": "dovecot", " Bob@EXAMPLE.com ": "dovecot", "x@other.org": "exchange",
		"x@catchall.example.com": "dovecot", "x@elsewhere.org": "", "alice": "", "@example.com": "", "a@": "",
	} {
		got, ok := m.ServerOf(in)
		if got != want || ok != (want != "") {
			t.Errorf("ServerOf(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

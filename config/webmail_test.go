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

// exampleWithWebmail is the example file with its [webmail] section
// uncommented.
func exampleWithWebmail(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n[webmail]\n") + 1 // the example turns webmail on, other keys commented
	if i == 0 {
		t.Fatal("no [webmail] section in the example")
	}
	j := strings.Index(s[i:], "\n\n")
	if j < 0 {
		t.Fatal("no end of the [webmail] section in the example")
	}
	sec := regexp.MustCompile(`(?m)^#([a-z_\[])`).ReplaceAllString(s[i:i+j], "$1")
	return s[:i] + sec + s[i+j:]
}

func TestWebmailExample(t *testing.T) {
	s := exampleWithWebmail(t)
	// listen_tls needs a certificate: the example has none.
	if _, err := Parse("example", []byte(s)); err == nil || !strings.Contains(err.Error(), "webmail.listen_tls: needs a certificate") {
		t.Fatalf("without [tls]: %v", err)
	}
	s = strings.Replace(s, `listen_tls = "0.0.0.0:8443"`, `listen_tls = ""`, 1)
	c, err := Parse("example", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Webmail
	if !w.On() || w.PlainAddr() != "127.0.0.1:8080" || w.SMTP != "127.0.0.1:25" || !slices.Equal(w.Admins, []string{"postmaster@example.com"}) ||
		w.SessionIdle.D() != 30*time.Minute || w.SessionMax.D() != 12*time.Hour || w.MaxUpload != 25<<20 {
		t.Errorf("webmail %+v", w)
	}
}

// exampleWithoutWebmail is the example file without its [webmail] section.
func exampleWithoutWebmail(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n[webmail]\n") + 1
	j := strings.Index(s[i:], "\n\n")
	if i == 0 || j < 0 {
		t.Fatal("no [webmail] section in the example")
	}
	return []byte(s[:i] + s[i+j:])
}

func TestWebmailDefaultsOff(t *testing.T) {
	c, err := Parse("example", exampleWithoutWebmail(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Webmail.On() {
		t.Error("webmail on by default")
	}
	// The example itself turns it on, for `make run`.
	c, err = Load(filepath.Join("..", "contrib", "lifeline.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Webmail.On() || c.Webmail.PlainAddr() != "127.0.0.1:8080" {
		t.Errorf("the example's webmail: %+v", c.Webmail)
	}
}

func TestWebmailErrors(t *testing.T) {
	base := exampleWithoutWebmail(t)
	for _, tc := range []struct{ section, want string }{
		{"enabled = true\nsmtp_user = \"u\"", "webmail.smtp_password"},
		{"enabled = true\nsmtp = \"unix:/x\"", "webmail.smtp"},
		{"enabled = true\nlisten = \"\"", "webmail.listen: is off"},
		{"enabled = true\nsession_idle = \"10s\"", "webmail.session_idle"},
		{"enabled = true\nlisten = \"127.0.0.1:1143\"", "webmail.listen: 127.0.0.1:1143 is already imap.listen"},
		{"enabled = true\nbogus = 1", "bogus"},
	} {
		_, err := Parse("x", append(slices.Clone(base), []byte("\n[webmail]\n"+tc.section+"\n")...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.section, err, tc.want)
		}
	}
}

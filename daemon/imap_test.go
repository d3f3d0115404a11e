package daemon

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/sidecar/serving"
)

// TestIMAPImaplib runs the daemon with IMAP on a plain and an implicit-TLS
// listener and reads a message journaled through the milter with Python's
// imaplib, over STARTTLS and IMAPS; with serve = "outage" and the server up,
// the login is refused with the text that tells the user to use their server.
func TestIMAPImaplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	for _, serve := range []string{config.ServeAlways, config.ServeOutage} {
		t.Run(serve, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			writeCert(t, certFile, keyFile)
			users := filepath.Join(dir, "passwd")
			writeUsers(t, users, map[string]string{"alice@example.com": "alice pw"})
			milterAddr, httpAddr, imapAddr, imapsAddr := freePort(t), freePort(t), freePort(t), freePort(t)
			cfg, err := config.Parse(filepath.Join(dir, "lifeline.toml"), []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[http]
listen = %q
[mailbox_access]
serve = %q
[imap]
listen = %q
listen_tls = %q
[pop3]
enabled = false
[tls]
cert_file = %q
key_file = %q
[auth]
passwd_file = %q
[[server]]
name = "dc"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, serve, imapAddr, imapsAddr, certFile, keyFile, users)))
			if err != nil {
				t.Fatal(err)
			}
			startDaemon(t, cfg)
			if act, _ := sendMilter(t, milterAddr, "m1", "alice@example.com"); act.Type != gomilter.ActionAccept {
				t.Fatalf("milter: %v", act)
			}
			host, port, _ := net.SplitHostPort(imapAddr)
			_, sport, _ := net.SplitHostPort(imapsAddr)
			script := `
import imaplib, ssl, sys
host, port, sport, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
def fetch(m):
    try:
        m.login('alice@example.com', 'alice pw')
    except imaplib.IMAP4.error as e:
        sys.stdout.write('LOGIN-REFUSED ' + str(e))
        sys.exit(0)
    typ, data = m.select('INBOX')
    assert typ == 'OK' and data[0] == b'1', (typ, data)
    typ, data = m.fetch('1', '(RFC822)')
    assert typ == 'OK', (typ, data)
    m.logout()
    return data[0][1]
m = imaplib.IMAP4(host, port, timeout=20)
m.starttls(ctx)
a = fetch(m)
b = fetch(imaplib.IMAP4_SSL('localhost', sport, ssl_context=ctx, timeout=20))
assert a == b, (a, b)
sys.stdout.buffer.write(a)
`
			out, err := exec.Command(py, "-c", script, host, port, sport, certFile).CombinedOutput()
			if err != nil {
				t.Fatalf("imaplib: %v\n%s", err, out)
			}
			if serve == config.ServeOutage {
				if !bytes.Contains(out, []byte("LOGIN-REFUSED")) || !bytes.Contains(out, []byte(serving.TextServerUp)) {
					t.Errorf("login while the server is up: %s", out)
				}
				return
			}
			for _, want := range []string{"Subject: m1", "body m1"} {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("fetched message lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

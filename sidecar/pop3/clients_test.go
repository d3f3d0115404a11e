package pop3

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPoplib drives the server with Python's poplib, an independent client.
func TestPoplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	f := newFixture(t)
	ts := startServer(t, f, "stls", nil, nil)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(certFile, testCert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(ts.addr, ":")
	script := `
import poplib, ssl, sys
poplib._MAXLINE = 1 << 20  # message 3 has a 100,000-octet line (RFC 5322 allows up to 998; the journal keeps what arrived)
host, port, ca, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=20)
caps = p.capa()
assert 'STLS' in caps and 'UIDL' in caps and 'TOP' in caps, caps
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
p.stls(ctx)
p.user('alice')
p.pass_('alice-pw')
count, size = p.stat()
assert count == 3, count
resp, listing, _ = p.list()
assert len(listing) == 3, listing
resp, uids, _ = p.uidl()
assert len(uids) == 3, uids
for i in range(1, count + 1):
    resp, lines, octets = p.retr(i)
    with open('%s/%d.eml' % (out, i), 'wb') as f:
        f.write(b'\r\n'.join(lines) + b'\r\n')
resp, lines, _ = p.top(1, 0)
assert lines[-1] == b'' and lines[0].startswith(b'From:'), lines
p.dele(1)
print(p.quit())
p = poplib.POP3(host, port, timeout=20)
p.stls(ctx)
p.user('alice')
p.pass_('alice-pw')
assert p.stat()[0] == 2
p.quit()
`
	cmd := exec.Command(py, "-c", script, host, port, certFile, dir)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, outb)
	}
	for i, want := range f.msgs["alice"] {
		got, err := os.ReadFile(filepath.Join(dir, []string{"1", "2", "3"}[i]+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("poplib RETR %d differs from the journal copy (%d vs %d bytes)", i+1, len(got), len(want))
		}
	}
	ms, _ := f.store.Messages(context.Background(), "alice")
	if len(ms) != 2 || ms[0].UID != 2 {
		t.Errorf("after poplib DELE+QUIT: %+v", ms)
	}
}

// TestCurl fetches over POP3 with STLS and over POP3S with curl.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	f := newFixture(t)
	plain := startServer(t, f, "stls", nil, nil)
	implicit := startServer(t, f, "implicit", nil, nil)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testCert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	fetch := func(url string, extra ...string) []byte {
		t.Helper()
		args := append([]string{"-sS", "--max-time", "20", "--cacert", ca, "--user", "bob:" + users["bob"], url}, extra...)
		out, err := exec.Command(curl, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("curl %s: %v %s", url, err, stderr)
		}
		return out
	}
	port := func(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }
	// curl connects to "localhost" so that the certificate's name matches.
	got := fetch("pop3://localhost:"+port(plain.addr)+"/1", "--ssl-reqd")
	if !bytes.Equal(got, f.msgs["bob"][0]) {
		t.Errorf("curl pop3 STLS RETR 1: %q", got)
	}
	got = fetch("pop3s://localhost:" + port(implicit.addr) + "/2")
	if !bytes.Equal(got, f.msgs["bob"][1]) {
		t.Errorf("curl pop3s RETR 2: %q", got)
	}
	list := string(fetch("pop3s://localhost:" + port(implicit.addr) + "/"))
	if !strings.HasPrefix(list, "1 ") || strings.Count(list, "\n") != 2 {
		t.Errorf("curl LIST: %q", list)
	}
}

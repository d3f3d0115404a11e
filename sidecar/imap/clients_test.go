package imap

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// lookTool finds an external client, or skips the test, unless CI=true asks
// for the full suite.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true needs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// TestImaplib drives the server with Python's imaplib, an independent client:
// STARTTLS, LOGIN, LIST, SELECT, SEARCH, FETCH, STORE, APPEND, EXPUNGE.
func TestImaplib(t *testing.T) {
	py := lookTool(t, "python3")
	f := newFixture(t)
	ts := startServer(t, f, "stls", nil, nil)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testCert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(ts.addr, ":")
	script := `
import imaplib, ssl, sys, re
host, port, ca, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = imaplib.IMAP4(host, port, timeout=20)
assert 'STARTTLS' in m.capabilities, m.capabilities
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
m.starttls(ctx)
typ, _ = m.login('alice', 'alice-pw')
assert typ == 'OK'
typ, boxes = m.list()
assert typ == 'OK' and len(boxes) == 2, boxes
assert b'\\Sent' in boxes[1] and boxes[1].endswith(b'"Sent"'), boxes
typ, st = m.status('INBOX', '(MESSAGES UNSEEN UIDVALIDITY)')
assert typ == 'OK' and b'MESSAGES 3' in st[0], st
typ, data = m.select('INBOX')
assert typ == 'OK' and data == [b'3'], data
typ, data = m.search(None, 'UNSEEN')
assert data == [b'1 2 3'], data
typ, data = m.search(None, '(SUBJECT "shared")')
assert data == [b'2'], data
typ, data = m.uid('SEARCH', None, 'BODY', '"hello world"')
assert data == [b'1'], data
for i in (1, 2, 3):
    typ, data = m.fetch(str(i), '(RFC822)')
    assert typ == 'OK', data
    with open('%s/%d.eml' % (out, i), 'wb') as f:
        f.write(data[0][1])
typ, data = m.fetch('1:3', '(FLAGS)')
assert all(b'\\Seen' in d for d in data), data
typ, data = m.store('2', '+FLAGS', '(\\Flagged $Work)')
assert typ == 'OK' and b'$Work' in data[0] and b'\\Flagged' in data[0], data
typ, data = m.uid('FETCH', '2', '(UID FLAGS)')
assert b'UID 2' in data[0] and b'\\Flagged' in data[0], data
typ, data = m.search(None, 'FLAGGED')
assert data == [b'2'], data
typ, data = m.append('Sent', '(\\Seen)', None, b'Subject: sent by imaplib\r\n\r\nhi\r\n')
assert typ == 'OK' and b'APPENDUID' in data[0], data
typ, data = m.append('INBOX', None, None, b'Subject: nope\r\n\r\nx\r\n')
assert typ == 'NO', data
m.store('1', '+FLAGS', '\\Deleted')
typ, data = m.expunge()
assert data == [b'1'], data
typ, data = m.select('Sent', readonly=True)
assert data == [b'1'], data
typ, data = m.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
assert data[0][1].strip() == b'Subject: sent by imaplib', data
m.close()
m.logout()
print('ok')
`
	out, err := exec.Command(py, "-c", script, host, port, ca, dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	for i, want := range f.msgs["alice"] {
		got, err := os.ReadFile(filepath.Join(dir, []string{"1", "2", "3"}[i]+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("imaplib RFC822 %d differs from the journal copy (%d vs %d bytes)", i+1, len(got), len(want))
		}
	}
	ms, _ := f.store.Messages(context.Background(), "alice")
	if len(ms) != 2 || ms[0].UID != 2 || !slices.Contains(ms[0].Flags, "$Work") {
		t.Errorf("after imaplib: %+v", ms)
	}
}

// TestCurl fetches messages with curl over IMAPS (implicit TLS) and over
// IMAP with STARTTLS.
func TestCurl(t *testing.T) {
	curl := lookTool(t, "curl")
	f := newFixture(t)
	implicit := startServer(t, f, "implicit", nil, nil)
	plain := startServer(t, f, "stls", nil, nil)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testCert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	port := func(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }
	fetch := func(user, url string, extra ...string) []byte {
		t.Helper()
		args := append([]string{"-sS", "--max-time", "20", "--cacert", ca, "--user", user + ":" + users[user], url}, extra...)
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
	// curl connects to "localhost" so that the certificate's name matches.
	for i, want := range f.msgs["alice"] {
		got := fetch("alice", "imaps://localhost:"+port(implicit.addr)+"/INBOX;UID="+itoa(i+1), "--resolve", "localhost:"+port(implicit.addr)+":127.0.0.1")
		if !bytes.Equal(got, want) {
			t.Errorf("curl imaps UID=%d: %q", i+1, got)
		}
	}
	got := fetch("bob", "imap://localhost:"+port(plain.addr)+"/INBOX;UID=2", "--ssl-reqd", "--resolve", "localhost:"+port(plain.addr)+":127.0.0.1")
	if !bytes.Equal(got, f.msgs["bob"][1]) {
		t.Errorf("curl imap STARTTLS: %q", got)
	}
	list := string(fetch("bob", "imaps://localhost:"+port(implicit.addr)+"/", "--resolve", "localhost:"+port(implicit.addr)+":127.0.0.1"))
	if !strings.Contains(list, "INBOX") || !strings.Contains(list, "Sent") {
		t.Errorf("curl LIST: %q", list)
	}
	// A UID of another user's message gives nothing of it.
	out, _ := exec.Command(curl, "-sS", "--max-time", "20", "--cacert", ca, "--user", "alice:alice-pw",
		"--resolve", "localhost:"+port(implicit.addr)+":127.0.0.1",
		"imaps://localhost:"+port(implicit.addr)+"/INBOX;UID=4").Output()
	if len(out) != 0 {
		t.Errorf("curl UID=4 as alice: %q", out)
	}
}

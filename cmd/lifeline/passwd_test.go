package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/auth"
)

// TestMain lets a test run the command itself (on a terminal, for passwd).
func TestMain(m *testing.M) {
	if os.Getenv("LIFELINE_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func runStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// Every scheme `lifeline passwd` offers produces a hash that verifies (the
// line end read with it is not part of the password).
func TestPasswdSchemes(t *testing.T) {
	pw := "correct horse battery staple"
	for _, scheme := range append(auth.HashSchemes(), "") {
		args := []string{"passwd", "--stdin"}
		if scheme != "" {
			args = append(args, "--scheme", strings.ToLower(scheme))
		}
		code, out, errs := runStdin(t, pw+"\r\n", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		h := strings.TrimSuffix(out, "\n")
		want := scheme
		if want == "" {
			// The default: what Dovecot's documentation suggests.
			if !strings.HasPrefix(h, "{BLF-CRYPT}$2y$10$") {
				t.Errorf("default scheme: %q", h)
			}
			continue // verified above as BLF-CRYPT; bcrypt is slow under -race
		}
		if !strings.HasPrefix(h, "{"+want+"}") || strings.Contains(h, "\n") {
			t.Errorf("%v: output %q, want one {%s} line", args, out, want)
		}
		if ok, err := auth.VerifyHash(h, pw); !ok || err != nil {
			t.Errorf("%s: VerifyHash(%q) = %v, %v", want, h, ok, err)
		}
		if want == auth.SchemeSHA256Crypt {
			if ok, _ := auth.VerifyHash(h, pw+"x"); ok {
				t.Errorf("%s: a wrong password verifies", want)
			}
		}
	}
}

func TestPasswdUserLine(t *testing.T) {
	code, out, errs := runStdin(t, "s3cret", "passwd", "--stdin", "--scheme", "SHA256-CRYPT", "--user", "alice@example.com")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := auth.NewFile(path, auth.FileOptions{})
	if err != nil {
		t.Fatalf("the printed line is not a passwd-file line: %v\n%s", err, out)
	}
	if mb, ok := f.Verify("Alice@Example.com", "s3cret"); !ok || mb != "alice@example.com" {
		t.Errorf("Verify = %q, %v", mb, ok)
	}
}

func TestPasswdErrors(t *testing.T) {
	for _, c := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"", []string{"passwd", "--stdin"}, 1, "no password"},
		{"\n", []string{"passwd", "--stdin"}, 1, "empty password"},
		{"x", []string{"passwd", "--stdin", "--scheme", "MD5-CRYPT"}, 1, "BLF-CRYPT, SHA512-CRYPT"},
		{"x", []string{"passwd", "--stdin", "--user", "a:b"}, 2, "cannot contain"},
		{"x", []string{"passwd"}, 2, "--stdin"}, // standard input is not a terminal
		{"x", []string{"passwd", "extra"}, 2, "unexpected argument"},
	} {
		code, _, errs := runStdin(t, c.stdin, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
}

// TestPasswdTerminal runs `lifeline passwd` on a pseudo-terminal (Python's pty
// module): it asks twice, does not echo the password, and prints the hash.
func TestPasswdTerminal(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	if _, err := exec.LookPath("stty"); err != nil {
		t.Skip("stty not installed")
	}
	script := `
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execve(sys.argv[1], [sys.argv[1], 'passwd', '--scheme', 'sha512-crypt', '--user', 'bob@example.com'], dict(os.environ, LIFELINE_TEST_MAIN='1'))
out = b''
def expect(what):
    global out
    deadline = time.time() + 20
    while what not in out:
        if time.time() > deadline:
            sys.exit('timeout waiting for %r, got %r' % (what, out))
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
expect(b'Enter new password: ')
os.write(fd, b'pty-secret\n')
expect(b'Retype new password: ')
os.write(fd, b'pty-secret\n')
expect(b'bob@example.com:')
expect(b'\n')
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
`
	out, err := exec.Command(py, "-c", script, os.Args[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if bytes.Contains(out, []byte("pty-secret")) {
		t.Fatalf("the password was echoed:\n%s", out)
	}
	i := bytes.Index(out, []byte("bob@example.com:"))
	line := strings.TrimSpace(string(out[i+len("bob@example.com:"):]))
	if ok, err := auth.VerifyHash(line, "pty-secret"); !ok || err != nil {
		t.Errorf("VerifyHash(%q) = %v, %v\n%s", line, ok, err, out)
	}
}

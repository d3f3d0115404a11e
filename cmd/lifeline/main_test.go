package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckConfigExample(t *testing.T) {
	code, out, errs := runCmd(t, "check-config", "-c", filepath.Join("..", "..", "contrib", "lifeline.example.toml"))
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
}

func TestCheckConfigReportsEveryError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(p, []byte("[journal]\nretention = \"x\"\nnope = 1\n[milter]\non_journal_error = \"drop\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "check-config", "-c", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"line 2: journal.retention", "line 3: journal.nope: unknown key", "line 5: milter.on_journal_error", "journal.path: is required"} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}
}

func TestCheckConfigMissingAliasFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte("[journal]\npath = \"j\"\n[mapping]\nalias_file = \"/nonexistent/virtual\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, "check-config", "-c", p); code != 1 || !strings.Contains(errs, "alias_file") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"journal"}, {"journal", "x"}, {"export", "-c", "x"}, {"export", "--mailbox", "a@b", "--format", "zip"}, {"serve", "extra"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, out, _ := runCmd(t, "version"); code != 0 || !strings.HasPrefix(out, "lifeline ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestParseTime(t *testing.T) {
	if _, err := parseTime("2026-11-01"); err != nil {
		t.Error(err)
	}
	if _, err := parseTime("2026-11-01T10:00:00Z"); err != nil {
		t.Error(err)
	}
	if _, err := parseTime("yesterday"); err == nil {
		t.Error("accepted 'yesterday'")
	}
}

// check-config reads the files the config names: a missing passwd-file (when
// IMAP or POP3 runs) and an unreadable certificate are errors, all at once; a
// non-loopback listener without TLS is a warning.
func TestCheckConfigMailAccessFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(p, []byte("[journal]\npath = \"j\"\n[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "check-config", "-c", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errs)
	}
	for _, want := range []string{"[tls]: tls: loading /nonexistent/cert.pem", "auth.passwd_file: open " + filepath.Join(dir, "users"), "lifeline passwd"} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}

	// The passwd-file is not needed when neither server runs.
	if err := os.WriteFile(p, []byte("[journal]\npath = \"j\"\n[imap]\nenabled = false\n[pop3]\nenabled = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCmd(t, "check-config", "-c", p); code != 0 || strings.Contains(out, "users") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}

	if err := os.WriteFile(filepath.Join(dir, "users"), []byte("alice@example.com:{PLAIN}x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("[journal]\npath = \"j\"\n[pop3]\nlisten = \"0.0.0.0:1110\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "check-config", "-c", p)
	if code != 0 || !strings.Contains(out, "1 users in "+filepath.Join(dir, "users")) || !strings.Contains(errs, "warning: pop3.listen 0.0.0.0:1110 is not loopback") {
		t.Fatalf("exit %d:\n%s%s", code, out, errs)
	}

	// A malformed passwd-file is an error, with its line.
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte("alice@example.com:{PLAIN}x\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, "check-config", "-c", p); code != 1 || !strings.Contains(errs, "users:2:") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

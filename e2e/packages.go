package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"sort"
	"strings"
	"sync"
)

// debPackage is a Debian package the harness needs and a file that shows it
// is installed.
type debPackage struct {
	name  string
	probe string
}

var debPackages = []debPackage{
	{"postfix", "/usr/sbin/postfix"},
	{"postfix", "/usr/sbin/postqueue"},
	{"postfix", "/usr/sbin/smtp-source"},
	{"dovecot-core", "/usr/sbin/dovecot"},
	{"dovecot-core", "/usr/bin/doveadm"},
	{"dovecot-imapd", "/usr/lib/dovecot/imap"},
	{"dovecot-lmtpd", "/usr/lib/dovecot/lmtp"},
	{"dovecot-pop3d", "/usr/lib/dovecot/pop3"},
	// mbsync, the independent IMAP client that syncs a continuity mailbox
	// into a maildir (sidecar_test.go).
	{"isync", "/usr/bin/mbsync"},
}

// PackageNames lists the Debian packages the harness needs.
func PackageNames() []string {
	seen := map[string]bool{}
	var names []string
	for _, p := range debPackages {
		if !seen[p.name] {
			seen[p.name] = true
			names = append(names, p.name)
		}
	}
	return names
}

// MailUser is the system user that owns Dovecot's mail.
const MailUser = "vmail"

// InCI reports whether the run asks for the full suite (CI=true): then a
// missing component fails instead of skipping.
func InCI() bool { return os.Getenv("CI") == "true" }

var (
	requireMu  sync.Mutex
	requireErr error
	requireOK  bool
)

// Require makes sure the Debian packages and the vmail user exist, installing
// them when running as root. Without root it skips the test with a message
// that names the packages (Postfix and Dovecot need root to run privately
// anyway), or fails it when CI=true.
func Require(tb TB) {
	tb.Helper()
	requireMu.Lock()
	defer requireMu.Unlock()
	if requireOK {
		return
	}
	if requireErr == nil {
		requireErr = require()
	}
	if requireErr != nil {
		if InCI() {
			tb.Fatalf("e2e: %v", requireErr)
		}
		tb.Skipf("e2e: skipped: %v", requireErr)
	}
	requireOK = true
}

func require() error {
	missing := missingPackages()
	if os.Geteuid() != 0 {
		if len(missing) > 0 {
			return fmt.Errorf("needs root to install the Debian packages %s (missing) and to run Postfix and Dovecot privately; run as root or: apt-get install -y %s",
				strings.Join(missing, ", "), strings.Join(PackageNames(), " "))
		}
		return fmt.Errorf("needs root to run private Postfix and Dovecot instances (Debian packages %s)", strings.Join(PackageNames(), ", "))
	}
	if len(missing) > 0 {
		if err := aptInstall(missing); err != nil {
			return err
		}
		if still := missingPackages(); len(still) > 0 {
			return fmt.Errorf("apt-get install left %s missing", strings.Join(still, ", "))
		}
	}
	return ensureMailUser()
}

func missingPackages() []string {
	seen := map[string]bool{}
	var missing []string
	for _, p := range debPackages {
		if _, err := os.Stat(p.probe); err != nil && !seen[p.name] {
			seen[p.name] = true
			missing = append(missing, p.name)
		}
	}
	sort.Strings(missing)
	return missing
}

// aptInstall installs pkgs non-interactively. Postfix is preseeded with "No
// configuration": the harness never uses /etc/postfix/main.cf.
func aptInstall(pkgs []string) error {
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	preseed := exec.Command("debconf-set-selections")
	preseed.Stdin = strings.NewReader("postfix postfix/main_mailer_type select No configuration\n")
	preseed.Env = env
	if out, err := preseed.CombinedOutput(); err != nil {
		return fmt.Errorf("debconf-set-selections: %v: %s", err, out)
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil {
		// A fresh container has no package lists yet.
		upd := exec.Command("apt-get", "update")
		upd.Env = env
		if uout, uerr := upd.CombinedOutput(); uerr != nil {
			return fmt.Errorf("apt-get install %s: %v: %s; apt-get update: %v: %s", strings.Join(pkgs, " "), err, lastLines(out, 5), uerr, lastLines(uout, 5))
		}
		if out, err = install(); err != nil {
			return fmt.Errorf("apt-get install %s: %v: %s", strings.Join(pkgs, " "), err, lastLines(out, 10))
		}
	}
	return nil
}

// ensureMailUser creates the vmail system user if it does not exist.
func ensureMailUser() error {
	if _, err := user.Lookup(MailUser); err == nil {
		return nil
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", MailUser).CombinedOutput()
	if err != nil {
		// Another process may have created it meanwhile.
		if _, lerr := user.Lookup(MailUser); lerr == nil {
			return nil
		}
		return fmt.Errorf("useradd %s: %v: %s", MailUser, err, out)
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

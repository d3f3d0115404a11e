package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultPassword is every Dovecot test user's password.
const DefaultPassword = "lifeline-e2e"

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	Domain   string   // default DefaultDomain
	Users    []string // local parts or addresses; at least one
	Password string   // default DefaultPassword
}

// Dovecot is a private Dovecot 2.3 instance: passwd-file users, maildir
// storage owned by the vmail user, LMTP, IMAP and POP3 on loopback ports.
type Dovecot struct {
	Domain     string
	Dir        string
	ConfigPath string
	LogPath    string // Dovecot's log_path
	OutPath    string // the master's stdout and stderr
	MailRoot   string // maildirs are MailRoot/DOMAIN/LOCAL/Maildir
	LMTPAddr   string // 127.0.0.1:PORT
	IMAPAddr   string
	POP3Addr   string
	Password   string

	users []string
	proc  *process
}

// StartDovecot writes a standalone config (nothing from /etc/dovecot) and
// starts `dovecot -F -c CONFIG`, ready when LMTP, IMAP and POP3 greet.
func StartDovecot(tb TB, opts DovecotOptions) *Dovecot {
	tb.Helper()
	Require(tb)
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.Password == "" {
		opts.Password = DefaultPassword
	}
	if len(opts.Users) == 0 {
		tb.Fatalf("e2e: StartDovecot needs at least one user")
	}
	vmail, err := user.Lookup(MailUser)
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	uid, _ := strconv.Atoi(vmail.Uid)
	gid, _ := strconv.Atoi(vmail.Gid)

	dir := filepath.Join(SharedDir(tb), "dovecot")
	d := &Dovecot{
		Domain:     opts.Domain,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "dovecot.conf"),
		LogPath:    filepath.Join(dir, "dovecot.log"),
		OutPath:    filepath.Join(dir, "dovecot.out"),
		MailRoot:   filepath.Join(dir, "mail"),
		LMTPAddr:   fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		IMAPAddr:   fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		POP3Addr:   fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		Password:   opts.Password,
	}
	for _, u := range opts.Users {
		d.users = append(d.users, qualify(u, opts.Domain))
	}
	mkdirs(tb, dir, filepath.Join(dir, "state"), d.MailRoot)
	if err := os.Chown(d.MailRoot, uid, gid); err != nil {
		tb.Fatalf("e2e: %v", err)
	}

	// Dovecot's unix sockets live in base_dir; a socket path longer than
	// 107 bytes cannot be bound, and t.TempDir() paths can be long.
	baseDir := filepath.Join(dir, "run")
	if len(baseDir) > 70 {
		short, err := os.MkdirTemp("", "dc")
		if err != nil {
			tb.Fatalf("e2e: %v", err)
		}
		tb.Cleanup(func() { os.RemoveAll(short) })
		baseDir = short
	}

	var users strings.Builder
	for _, u := range d.users {
		fmt.Fprintf(&users, "%s:{PLAIN}%s::::::\n", u, opts.Password)
	}
	usersPath := filepath.Join(dir, "users")
	writeFile(tb, usersPath, users.String(), 0o640)
	dovecotGroup, err := user.LookupGroup("dovecot")
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	dgid, _ := strconv.Atoi(dovecotGroup.Gid)
	if err := os.Chown(usersPath, 0, dgid); err != nil {
		tb.Fatalf("e2e: %v", err)
	}

	conf := dovecotConf{
		Instance: "e2e-" + portOf(d.LMTPAddr),
		BaseDir:  baseDir,
		Dir:      dir,
		LogPath:  d.LogPath,
		MailRoot: d.MailRoot,
		UsersP:   usersPath,
		UID:      uid,
		GID:      gid,
		LMTP:     portOf(d.LMTPAddr),
		IMAP:     portOf(d.IMAPAddr),
		POP3:     portOf(d.POP3Addr),
		Domain:   opts.Domain,
	}
	writeFile(tb, d.ConfigPath, conf.String(), 0o644)

	dumpLogsOnFailure(tb, "dovecot", d.OutPath, d.LogPath)
	d.start(tb)
	tb.Cleanup(func() {
		if err := d.Stop(); err != nil {
			tb.Errorf("e2e: stopping dovecot: %v", err)
		}
	})
	return d
}

func (d *Dovecot) start(tb TB) {
	tb.Helper()
	p, err := startProcess("dovecot", d.OutPath, os.Environ(), "/usr/sbin/dovecot", "-F", "-c", d.ConfigPath)
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	d.proc = p
	ctx := context.Background()
	for _, g := range []struct{ addr, prefix string }{
		{d.LMTPAddr, "220 "}, {d.IMAPAddr, "* OK"}, {d.POP3Addr, "+OK"},
	} {
		err := Poll(ctx, 30*time.Second, func() (bool, error) {
			if gone, err := p.exited(); gone {
				return true, err
			}
			return WaitGreeting(ctx, g.addr, g.prefix, 2*time.Second) == nil, nil
		})
		if err != nil {
			tb.Fatalf("e2e: dovecot not ready on %s: %v\n%s\n%s", g.addr, err, tail(d.OutPath, 4096), tail(d.LogPath, 8192))
		}
	}
}

// Stop ends Dovecot (SIGTERM to its master) and waits for it; an outage test
// calls it, then Restart.
func (d *Dovecot) Stop() error {
	if d.proc == nil {
		return nil
	}
	err := d.proc.stop(20 * time.Second)
	d.proc = nil
	return err
}

// Restart starts a stopped Dovecot again with the same config and ports.
func (d *Dovecot) Restart(tb TB) {
	tb.Helper()
	if err := d.Stop(); err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	d.start(tb)
}

// Pid is the Dovecot master's process id (0 when stopped).
func (d *Dovecot) Pid() int {
	if d.proc == nil {
		return 0
	}
	return d.proc.Pid()
}

// Users returns the mailbox addresses Dovecot knows.
func (d *Dovecot) Users() []string { return append([]string(nil), d.users...) }

// Maildir returns the maildir of a mailbox address (user@domain).
func (d *Dovecot) Maildir(mailbox string) string {
	local, domain, _ := strings.Cut(strings.ToLower(mailbox), "@")
	return filepath.Join(d.MailRoot, domain, local, "Maildir")
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}

type dovecotConf struct {
	Instance, BaseDir, Dir, LogPath, MailRoot, UsersP string
	UID, GID                                          int
	LMTP, IMAP, POP3                                  string
	Domain                                            string
}

func (c dovecotConf) String() string {
	return fmt.Sprintf(`# Generated by Lifeline's e2e harness. Standalone: includes nothing from /etc/dovecot.
instance_name = %[1]s
base_dir = %[2]s
state_dir = %[3]s/state
listen = 127.0.0.1
protocols = imap pop3 lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = %[4]s
info_log_path = %[4]s
default_internal_user = dovecot
default_login_user = dovenull

mail_location = maildir:%[5]s/%%d/%%n/Maildir
mail_uid = %[7]d
mail_gid = %[8]d
first_valid_uid = %[7]d
last_valid_uid = %[7]d
first_valid_gid = %[8]d
mail_privileged_group =

# user+detail@ is delivered to user's folder "detail", created on demand
# (what a restore into a folder such as "Restored" relies on).
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
postmaster_address = postmaster@%[12]s

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%Lu %[6]s
}
userdb {
  driver = passwd-file
  args = username_format=%%Lu %[6]s
  default_fields = uid=%[7]d gid=%[8]d home=%[5]s/%%d/%%n
}

service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[9]s
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[10]s
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[11]s
  }
  inet_listener pop3s {
    port = 0
  }
}
`, c.Instance, c.BaseDir, c.Dir, c.LogPath, c.MailRoot, c.UsersP, c.UID, c.GID, c.LMTP, c.IMAP, c.POP3, c.Domain)
}

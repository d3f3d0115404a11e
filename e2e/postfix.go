package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PostfixOptions configures StartPostfix.
type PostfixOptions struct {
	Domain    string   // virtual_mailbox_domains (default DefaultDomain)
	Users     []string // mailbox addresses (virtual_mailbox_maps)
	LMTPAddr  string   // Dovecot's LMTP listener, 127.0.0.1:PORT (virtual_transport)
	AliasFile string   // virtual(5) text file for virtual_alias_maps; "" for none
	// MilterAddr is Lifeline's milter ("tcp:127.0.0.1:PORT", "inet:…" or
	// "127.0.0.1:PORT"); "" runs Postfix without a milter.
	MilterAddr string
	// Transports routes further virtual mailbox domains each to its own
	// LMTP server (domain → 127.0.0.1:PORT), through transport_maps; Domain
	// keeps virtual_transport (LMTPAddr).
	Transports map[string]string
	// Main overrides or adds main.cf parameters, e.g. {"in_flow_delay": "0"}.
	Main map[string]string
}

// Postfix is a private Postfix instance (`postfix -c DIR start`) with its own
// config, queue and data directories, smtpd on its own loopback port, and
// everything in the test domain delivered over LMTP to Dovecot.
type Postfix struct {
	Dir       string
	ConfigDir string // -c DIR: main.cf, master.cf
	QueueDir  string
	LogPath   string // maillog_file
	OutPath   string // output of the postfix commands the harness runs
	SMTPAddr  string // smtpd, 127.0.0.1:PORT
	// Milter is the smtpd_milters value ("" without milter).
	Milter string

	stopped bool
}

// StartPostfix writes main.cf and master.cf, starts Postfix and waits until
// smtpd greets.
func StartPostfix(tb TB, opts PostfixOptions) *Postfix {
	tb.Helper()
	Require(tb)
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.LMTPAddr == "" {
		tb.Fatalf("e2e: StartPostfix needs the LMTP address of the mailbox server")
	}
	dir := filepath.Join(SharedDir(tb), "postfix")
	p := &Postfix{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		QueueDir:  filepath.Join(dir, "queue"),
		LogPath:   filepath.Join(dir, "log", "postfix.log"),
		OutPath:   filepath.Join(dir, "log", "commands.out"),
		SMTPAddr:  fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
	}
	dataDir := filepath.Join(dir, "data")
	mkdirs(tb, p.ConfigDir, p.QueueDir, dataDir, filepath.Join(dir, "log"))
	// data_directory belongs to mail_owner (postfix set-permissions does the
	// queue directory, not this one).
	pfx, err := user.Lookup("postfix")
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	puid, _ := strconv.Atoi(pfx.Uid)
	pgid, _ := strconv.Atoi(pfx.Gid)
	if err := os.Chown(dataDir, puid, pgid); err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	// postlogd (root) would create the log 0644 root, but postsuper, which
	// postfix start runs, drops to mail_owner and writes its warnings (a
	// "bogus file name" left in incoming/ by a killed smtpd) to the same file
	// itself: not writable, it dies and postfix start fails. Owned by
	// mail_owner, both can append.
	writeFile(tb, p.LogPath, "", 0o644)
	if err := os.Chown(p.LogPath, puid, pgid); err != nil {
		tb.Fatalf("e2e: %v", err)
	}

	var vmb strings.Builder
	for _, u := range opts.Users {
		fmt.Fprintf(&vmb, "%s OK\n", strings.ToLower(u))
	}
	vmbPath := filepath.Join(p.ConfigDir, "vmailbox")
	writeFile(tb, vmbPath, vmb.String(), 0o644)

	main := map[string]string{
		"compatibility_level":     "3.6",
		"queue_directory":         p.QueueDir,
		"data_directory":          filepath.Join(dir, "data"),
		"mail_owner":              "postfix",
		"setgid_group":            "postdrop",
		"myhostname":              "mx.lifeline.test",
		"mydomain":                "lifeline.test",
		"myorigin":                "$myhostname",
		"inet_interfaces":         "127.0.0.1",
		"inet_protocols":          "ipv4",
		"mynetworks":              "127.0.0.0/8",
		"mydestination":           "",
		"relay_domains":           "",
		"alias_maps":              "",
		"alias_database":          "",
		"local_recipient_maps":    "",
		"virtual_mailbox_domains": opts.Domain,
		"virtual_mailbox_maps":    "texthash:" + vmbPath,
		"virtual_transport":       "lmtp:inet:" + opts.LMTPAddr,
		"recipient_delimiter":     "+",
		// Never send anything off this machine: bounces to the (made-up)
		// senders and anything not for the test domain end in error(8), and
		// no DNS lookups are made.
		"default_transport":      "error:outbound mail is disabled in the e2e harness",
		"relay_transport":        "error:outbound mail is disabled in the e2e harness",
		"local_transport":        "error:local delivery is disabled in the e2e harness",
		"smtp_dns_support_level": "disabled",
		"lmtp_host_lookup":       "native",
		"smtpd_peername_lookup":  "no",
		"smtputf8_enable":        "yes",
		"biff":                   "no",
		"smtpd_banner":           "$myhostname ESMTP Postfix (lifeline e2e)",
		"maillog_file":           p.LogPath,
		"maillog_file_prefixes":  filepath.Dir(p.LogPath),
		"message_size_limit":     strconv.Itoa(64 << 20),
		"mailbox_size_limit":     "0",
		// Deferred mail (an outage test) is retried within seconds, not
		// after the default 300 s.
		"queue_run_delay":      "2s",
		"minimal_backoff_time": "2s",
		"maximal_backoff_time": "10s",
	}
	if opts.AliasFile != "" {
		main["virtual_alias_maps"] = "texthash:" + opts.AliasFile
	}
	if len(opts.Transports) > 0 {
		// transport(5): "domain  lmtp:inet:HOST:PORT" takes precedence over
		// virtual_transport for that domain.
		doms := make([]string, 0, len(opts.Transports))
		for d := range opts.Transports {
			doms = append(doms, d)
		}
		sort.Strings(doms)
		var tm strings.Builder
		for _, d := range doms {
			fmt.Fprintf(&tm, "%s lmtp:inet:%s\n", strings.ToLower(d), opts.Transports[d])
		}
		tmPath := filepath.Join(p.ConfigDir, "transport")
		writeFile(tb, tmPath, tm.String(), 0o644)
		main["transport_maps"] = "texthash:" + tmPath
		main["virtual_mailbox_domains"] = strings.Join(append([]string{opts.Domain}, doms...), ", ")
	}
	if opts.MilterAddr != "" {
		// The lines contrib/postfix/main.cf recommends: mail flow never
		// depends on Lifeline (default_action=accept), the journal write at
		// end of message has content_timeout, protocol 6 for macros and
		// progress.
		addr := opts.MilterAddr
		for _, pre := range []string{"tcp:", "inet:"} {
			addr = strings.TrimPrefix(addr, pre)
		}
		kind := "inet"
		if path, ok := strings.CutPrefix(addr, "unix:"); ok {
			// Relative to the queue directory, which is every Postfix
			// daemon's working directory, chrooted or not: the form
			// contrib/postfix/main.cf gives (unix:lifeline/milter.sock).
			rel, err := filepath.Rel(p.QueueDir, path)
			if err != nil {
				tb.Fatalf("e2e: milter socket %s: %v", path, err)
			}
			kind, addr = "unix", rel
		}
		p.Milter = fmt.Sprintf("{ %s:%s, default_action=accept, connect_timeout=10s, command_timeout=30s, content_timeout=300s }", kind, addr)
		main["smtpd_milters"] = p.Milter
		main["non_smtpd_milters"] = p.Milter
		main["milter_default_action"] = "accept"
		main["milter_protocol"] = "6"
		main["milter_rcpt_macros"] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}"
	}
	for k, v := range opts.Main {
		main[k] = v
	}
	keys := make([]string, 0, len(main))
	for k := range main {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var mc strings.Builder
	mc.WriteString("# Generated by Lifeline's e2e harness.\n")
	for _, k := range keys {
		fmt.Fprintf(&mc, "%s = %s\n", k, main[k])
	}
	writeFile(tb, filepath.Join(p.ConfigDir, "main.cf"), mc.String(), 0o644)
	writeFile(tb, filepath.Join(p.ConfigDir, "master.cf"), masterCF(p.SMTPAddr), 0o644)
	// Postfix commands pause (~1.8 s) when main.cf changed less than a
	// couple of seconds ago, to let an editor finish; the harness wrote it
	// in one go, so date it back.
	old := time.Now().Add(-time.Minute)
	for _, f := range []string{"main.cf", "master.cf", "vmailbox", "transport"} {
		if _, err := os.Stat(filepath.Join(p.ConfigDir, f)); os.IsNotExist(err) {
			continue
		}
		if err := os.Chtimes(filepath.Join(p.ConfigDir, f), old, old); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
	}

	dumpLogsOnFailure(tb, "postfix", p.OutPath, p.LogPath)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := p.Command(ctx, "postfix", "start"); err != nil {
		tb.Fatalf("e2e: postfix -c %s start: %v\n%s\n%s", p.ConfigDir, err, out, tail(p.LogPath, 8192))
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("e2e: stopping postfix: %v", err)
		}
	})
	if err := WaitGreeting(ctx, p.SMTPAddr, "220 ", 30*time.Second); err != nil {
		tb.Fatalf("e2e: postfix: %v\n%s", err, tail(p.LogPath, 8192))
	}
	return p
}

// masterCF is Debian's master.cf without chroot (a private queue directory
// has no /etc/hosts and such inside), without the pipe(8) services, and with
// smtpd on its own loopback port.
func masterCF(smtpAddr string) string {
	return `# Generated by Lifeline's e2e harness.
# service type  private unpriv  chroot  wakeup  maxproc command + args
` + smtpAddr + ` inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
}

// Command runs one of Postfix's commands (postfix, postqueue, postsuper,
// postconf, …) with -c ConfigDir and returns its standard output. Standard
// error goes to OutPath too.
func (p *Postfix) Command(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "/usr/sbin/"+name, append([]string{"-c", p.ConfigDir}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// postfix start leaves the master running; it must not inherit a pipe
	// that Wait would then wait on.
	if name == "postfix" {
		f, err := os.OpenFile(p.OutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout = f
		cmd.Stderr = f
	}
	err := cmd.Run()
	if stderr.Len() > 0 {
		if f, ferr := os.OpenFile(p.OutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
			fmt.Fprintf(f, "%s %s: %s", name, strings.Join(args, " "), stderr.Bytes())
			f.Close()
		}
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// MasterPid returns the pid in the master's pid file, 0 if there is none.
func (p *Postfix) MasterPid() int {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// alive reports whether pid runs; a zombie (exited, not yet reaped by its
// parent, which for a daemon is init) does not count.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "PID (COMM) STATE …"; COMM may contain spaces and parentheses.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// Stop ends Postfix and waits until its master has exited: SIGTERM to the
// master, which is what `postfix stop` sends (the command then polls in 1 s
// steps; polling here is faster). If the master is still there after 30 s,
// `postfix abort`, then SIGKILL.
func (p *Postfix) Stop() error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	pid := p.MasterPid()
	if !alive(pid) {
		return fmt.Errorf("postfix master (pid file %d) is not running", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM postfix master %d: %w", pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gone := func() (bool, error) { return !alive(pid), nil }
	if err := Poll(ctx, 30*time.Second, gone); err == nil {
		// The master is gone; its children (smtpd, qmgr, postlogd, …) end
		// on the SIGTERM it passed on. Wait for them too, so that nothing
		// writes into the directories the test is about to remove.
		return waitNoProcessIn(ctx, p.QueueDir, 20*time.Second)
	}
	_, _ = p.Command(ctx, "postfix", "abort")
	if err := Poll(ctx, 10*time.Second, gone); err == nil {
		return fmt.Errorf("postfix master (pid %d) ignored SIGTERM for 30 s; postfix abort ended it", pid)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("postfix master (pid %d) survived SIGTERM and abort; killed", pid)
}

// waitNoProcessIn polls until no process has its working directory in dir
// (Postfix's daemons chdir to the queue directory).
func waitNoProcessIn(ctx context.Context, dir string, timeout time.Duration) error {
	var left []string
	err := Poll(ctx, timeout, func() (bool, error) {
		left = left[:0]
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return false, err
		}
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
			if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) && alive(pid) {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				left = append(left, fmt.Sprintf("%d(%s)", pid, bytes.TrimSpace(comm)))
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("postfix processes still running in %s: %v", dir, left)
	}
	return nil
}

// QueueEntry is one message in Postfix's queue, as `postqueue -j` shows it.
type QueueEntry struct {
	QueueName  string `json:"queue_name"`
	QueueID    string `json:"queue_id"`
	Sender     string `json:"sender"`
	Size       int64  `json:"message_size"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// Queue lists the messages in Postfix's queues (incoming, active, deferred,
// hold).
func (p *Postfix) Queue(ctx context.Context) ([]QueueEntry, error) {
	out, err := p.Command(ctx, "postqueue", "-j")
	if err != nil {
		return nil, err
	}
	var q []QueueEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("postqueue -j: %w: %q", err, sc.Bytes())
		}
		q = append(q, e)
	}
	return q, sc.Err()
}

// Flush asks Postfix to retry deferred mail now (postqueue -f).
func (p *Postfix) Flush(ctx context.Context) error {
	_, err := p.Command(ctx, "postqueue", "-f")
	return err
}

// WaitQueueEmpty polls until Postfix's queue is empty.
func (p *Postfix) WaitQueueEmpty(ctx context.Context, timeout time.Duration) error {
	var last []QueueEntry
	err := Poll(ctx, timeout, func() (bool, error) {
		q, err := p.Queue(ctx)
		if err != nil {
			return false, err
		}
		last = q
		return len(q) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("postfix queue not empty: %w; %s", err, describeQueue(last))
	}
	return nil
}

func describeQueue(q []QueueEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d queued", len(q))
	for i, e := range q {
		if i == 5 {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; %s %s %d bytes", e.QueueName, e.QueueID, e.Size)
		for _, r := range e.Recipients {
			if r.DelayReason != "" {
				fmt.Fprintf(&b, " [%s: %s]", r.Address, r.DelayReason)
			}
		}
	}
	return b.String()
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Exim cannot be installed beside Postfix on Debian (both packages provide
// mail-transport-agent and conflict). The harness therefore never installs
// it: it downloads Debian's exim4-daemon-light package (and the shared
// libraries it needs that are not installed) with `apt-get download`,
// unpacks them with `dpkg -x` into a cache directory, and runs the binary
// from there with LD_LIBRARY_PATH pointing at the unpacked libraries.
//
// Running it privately, measured with Debian 12's 4.96:
//   - The binary is built with EXIM_USER=Debian-exim looked up at start (it
//     exits "failed to find uid for user name" without the user), so the
//     harness creates that system user as exim4-base's postinst would.
//   - -C FILE is honoured with root privilege kept when the caller is root
//     (Exim drops privilege for -C only when the caller is neither root nor
//     the Exim user and FILE is not in TRUSTED_CONFIG_LIST,
//     /etc/exim4/trusted_configs). The harness runs as root, like the
//     Postfix and Dovecot instances; nothing under /etc/exim4 is needed.
//   - The daemon binds the port as root and delivers as exim_user, so the
//     spool and log directories belong to Debian-exim.
//   - No syslog: log_file_path points at files in the instance directory.

// EximVersion is the Exim release the harness and contrib/exim are written
// for (Debian 12's).
const EximVersion = "4.96"

// EximUser is the user Debian's exim4 binary runs deliveries as.
const EximUser = "Debian-exim"

// eximLibs maps a shared library the binary may miss to its Debian package.
var eximLibs = map[string]string{
	"libidn.so.12": "libidn12",
}

// EximCacheDir is where the unpacked packages are kept between runs:
// $LIFELINE_EXIM_DIR, or /var/cache/lifeline-e2e/exim.
func EximCacheDir() string {
	if d := os.Getenv("LIFELINE_EXIM_DIR"); d != "" {
		return d
	}
	return "/var/cache/lifeline-e2e/exim"
}

var (
	eximMu  sync.Mutex
	eximBin string
	eximErr error
)

// RequireExim returns the path of a runnable private exim4 binary (and
// skips, or fails under CI=true, when there can be none).
func RequireExim(tb TB) string {
	tb.Helper()
	Require(tb)
	eximMu.Lock()
	defer eximMu.Unlock()
	if eximBin == "" && eximErr == nil {
		eximBin, eximErr = prepareExim(EximCacheDir())
	}
	if eximErr != nil {
		if InCI() {
			tb.Fatalf("e2e: exim: %v", eximErr)
		}
		tb.Skipf("e2e: skipped: exim: %v", eximErr)
	}
	return eximBin
}

// eximEnv is the environment exim runs with: its unpacked libraries first.
func eximEnv(root string) []string {
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	env := []string{"LD_LIBRARY_PATH=" + lib}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LD_LIBRARY_PATH=") {
			env = append(env, e)
		}
	}
	return env
}

// prepareExim unpacks exim4-daemon-light into dir/root (once; later runs
// find it there), creates the Debian-exim user and checks that the binary
// runs and is the expected version.
func prepareExim(dir string) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("needs root to download and run a private Exim")
	}
	root := filepath.Join(dir, "root")
	bin := filepath.Join(root, "usr/sbin/exim4")
	if err := ensureEximUser(); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		if err := unpackDebs(dir, root, []string{"exim4-daemon-light"}); err != nil {
			return "", err
		}
	}
	// Debian ships exim4 setuid root. The harness runs it as root and
	// never needs the bit; with it, a delivery process that has switched to
	// Debian-exim and re-executes the binary would gain root again, and the
	// dynamic loader would then ignore LD_LIBRARY_PATH (secure-execution
	// mode) and miss the unpacked libraries.
	if err := os.Chmod(bin, 0o755); err != nil {
		return "", err
	}
	missing, err := missingLibs(bin, root)
	if err != nil {
		return "", err
	}
	if len(missing) > 0 {
		var pkgs []string
		for _, lib := range missing {
			pkg, ok := eximLibs[lib]
			if !ok {
				return "", fmt.Errorf("%s needs %s, which is not installed and not known to the harness (add it to eximLibs)", bin, lib)
			}
			pkgs = append(pkgs, pkg)
		}
		if err := unpackDebs(dir, root, pkgs); err != nil {
			return "", err
		}
		if still, err := missingLibs(bin, root); err != nil {
			return "", err
		} else if len(still) > 0 {
			return "", fmt.Errorf("%s still misses %s after unpacking %s", bin, strings.Join(still, ", "), strings.Join(pkgs, " "))
		}
	}
	// -bV without -C reads Debian's default config, which does not exist
	// here; the version line comes first either way.
	cmd := exec.Command(bin, "-bV")
	cmd.Env = eximEnv(root)
	out, _ := cmd.CombinedOutput()
	if !bytes.Contains(out, []byte("Exim version "+EximVersion)) {
		return "", fmt.Errorf("%s -bV: not Exim %s: %s", bin, EximVersion, lastLines(out, 5))
	}
	return bin, nil
}

// unpackDebs downloads Debian packages into dir with `apt-get download` and
// unpacks them into root with `dpkg -x` (no maintainer scripts, nothing
// registered with dpkg, no conflict with the installed Postfix).
func unpackDebs(dir, root string, pkgs []string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	download := func() ([]byte, error) {
		// apt's sandbox user _apt cannot write to a root-owned directory.
		cmd := exec.Command("apt-get", append([]string{"download", "-o", "APT::Sandbox::User=root"}, pkgs...)...)
		cmd.Dir = dir
		return cmd.CombinedOutput()
	}
	out, err := download()
	if err != nil {
		// A fresh container has no package lists yet.
		if uout, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
			return fmt.Errorf("apt-get download %s: %v: %s; apt-get update: %v: %s", strings.Join(pkgs, " "), err, lastLines(out, 5), uerr, lastLines(uout, 5))
		}
		if out, err = download(); err != nil {
			return fmt.Errorf("apt-get download %s: %v: %s", strings.Join(pkgs, " "), err, lastLines(out, 10))
		}
	}
	for _, pkg := range pkgs {
		debs, err := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
		if err != nil || len(debs) == 0 {
			return fmt.Errorf("apt-get download %s left no %s_*.deb in %s", pkg, pkg, dir)
		}
		for _, deb := range debs {
			if out, err := exec.Command("dpkg", "-x", deb, root).CombinedOutput(); err != nil {
				return fmt.Errorf("dpkg -x %s: %v: %s", deb, err, lastLines(out, 5))
			}
		}
	}
	return nil
}

var lddMissing = regexp.MustCompile(`(?m)^\s*(\S+) => not found`)

// missingLibs lists the shared libraries bin cannot find, with the unpacked
// ones on the library path.
func missingLibs(bin, root string) ([]string, error) {
	cmd := exec.Command("ldd", bin)
	cmd.Env = eximEnv(root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, lastLines(out, 5))
	}
	var libs []string
	for _, m := range lddMissing.FindAllSubmatch(out, -1) {
		libs = append(libs, string(m[1]))
	}
	return libs, nil
}

// ensureEximUser creates the Debian-exim system user if it does not exist.
func ensureEximUser() error {
	if _, err := user.Lookup(EximUser); err == nil {
		return nil
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", EximUser).CombinedOutput()
	if err != nil {
		if _, lerr := user.Lookup(EximUser); lerr == nil {
			return nil
		}
		return fmt.Errorf("useradd %s: %v: %s", EximUser, err, out)
	}
	return nil
}

// EximOptions configures StartExim.
type EximOptions struct {
	// Domains are the protected domains (LIFELINE_DOMAINS); default
	// DefaultDomain.
	Domains []string
	// DovecotLMTP is Dovecot's LMTP, 127.0.0.1:PORT.
	DovecotLMTP string
	// JournalAddr, CustodyAddr and PolicyAddr are Lifeline's [ingest] and
	// [policy] listeners, 127.0.0.1:PORT (they need not be listening).
	JournalAddr, CustodyAddr, PolicyAddr string
	// CopyMaxAge is LIFELINE_COPY_MAX_AGE (default: the contrib default).
	CopyMaxAge time.Duration
	// Retry is LIFELINE_RETRY_RULE; default "F,1h,1s", so that a deferred
	// delivery is retried by the next queue run (-q1s).
	Retry string
}

// Exim is a private Exim daemon running contrib/exim/lifeline.conf: a
// generated file sets the instance's directories, ports and the macros, and
// then .includes the contrib file unchanged.
type Exim struct {
	Bin        string
	Dir        string
	ConfigPath string
	MainLog    string
	PanicLog   string
	RejectLog  string
	OutPath    string // the daemon's stdout and stderr
	SMTPAddr   string // 127.0.0.1:PORT

	env  []string
	proc *process
}

// StartExim writes the config and starts `exim4 -C CONFIG -bdf -q1s`,
// ready when it greets on SMTPAddr. The test's cleanup stops it.
func StartExim(tb TB, opts EximOptions) *Exim {
	tb.Helper()
	bin := RequireExim(tb)
	if len(opts.Domains) == 0 {
		opts.Domains = []string{DefaultDomain}
	}
	if opts.Retry == "" {
		opts.Retry = "F,1h,1s"
	}
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	contrib := filepath.Join(root, "contrib", "exim", "lifeline.conf")
	if _, err := os.Stat(contrib); err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	eu, err := user.Lookup(EximUser)
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	uid, _ := strconv.Atoi(eu.Uid)
	gid, _ := strconv.Atoi(eu.Gid)

	dir := filepath.Join(SharedDir(tb), "exim")
	e := &Exim{
		Bin:        bin,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "exim.conf"),
		MainLog:    filepath.Join(dir, "log", "mainlog"),
		PanicLog:   filepath.Join(dir, "log", "paniclog"),
		RejectLog:  filepath.Join(dir, "log", "rejectlog"),
		OutPath:    filepath.Join(dir, "exim.out"),
		SMTPAddr:   fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		env:        eximEnv(filepath.Dir(filepath.Dir(filepath.Dir(bin)))),
	}
	spool := filepath.Join(dir, "spool")
	logDir := filepath.Join(dir, "log")
	mkdirs(tb, dir, spool, logDir)
	for _, d := range []string{spool, logDir} {
		if err := os.Chown(d, uid, gid); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
	}
	hostPort := func(what, addr string) (string, string) {
		h, p, ok := strings.Cut(addr, ":")
		if !ok || h == "" || p == "" {
			tb.Fatalf("e2e: exim: %s %q is not HOST:PORT", what, addr)
		}
		return h, p
	}
	lifelineHost, journalPort := hostPort("journal", opts.JournalAddr)
	custodyHost, custodyPort := hostPort("custody", opts.CustodyAddr)
	if custodyHost != lifelineHost {
		tb.Fatalf("e2e: exim: the contrib config has one LIFELINE_HOST; journal %s and custody %s differ", opts.JournalAddr, opts.CustodyAddr)
	}
	dcHost, dcPort := hostPort("dovecot", opts.DovecotLMTP)

	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by Lifeline's e2e harness: a private instance of\n# %s.\n\n", contrib)
	macro := func(name, value string) { fmt.Fprintf(&b, "%s = %s\n", name, value) }
	macro("LIFELINE_DOMAINS", strings.Join(opts.Domains, " : "))
	macro("LIFELINE_POLICY_SOCKET", "inet:"+opts.PolicyAddr)
	macro("LIFELINE_HOST", lifelineHost)
	macro("LIFELINE_JOURNAL_PORT", journalPort)
	macro("LIFELINE_CUSTODY_PORT", custodyPort)
	macro("DOVECOT_LMTP_HOST", dcHost)
	macro("DOVECOT_LMTP_PORT", dcPort)
	if opts.CopyMaxAge > 0 {
		macro("LIFELINE_COPY_MAX_AGE", strconv.Itoa(int(opts.CopyMaxAge/time.Second)))
	}
	macro("LIFELINE_RETRY_RULE", opts.Retry)
	// The re-executed binary (deliveries, queue runs) needs the unpacked
	// libraries too; Exim passes on only the variables kept here.
	macro("MAIN_KEEP_ENVIRONMENT", "LD_LIBRARY_PATH")
	fmt.Fprintf(&b, `
# The instance: its own spool, logs, pid file and port; nothing from
# /etc/exim4 or /var/spool/exim4.
primary_hostname = exim.e2e.lifeline.test
qualify_domain = %[1]s
local_interfaces = 127.0.0.1
daemon_smtp_ports = %[2]s
spool_directory = %[3]s
log_file_path = %[4]s/%%slog
pid_file_path = %[5]s/exim.pid
exim_user = %[6]s
exim_group = %[6]s
# Exim re-executes itself for deliveries and queue runs: at the unpacked
# binary, not the compiled-in /usr/sbin/exim4.
exim_path = %[8]s
# Loopback only, no certificate: no STARTTLS.
tls_advertise_hosts =
log_selector = +received_recipients +delivery_size +deliver_time +retry_defer +address_rewrite
# A test sends many messages per connection and wants each delivered at
# once, not left for the queue runner.
smtp_accept_queue_per_connection = 0
remote_max_parallel = 8

.include %[7]s
`, opts.Domains[0], portOf(e.SMTPAddr), spool, logDir, dir, EximUser, contrib, bin)
	writeFile(tb, e.ConfigPath, b.String(), 0o644)

	dumpLogsOnFailure(tb, "exim", e.OutPath, e.MainLog, e.PanicLog)
	e.start(tb)
	tb.Cleanup(func() {
		if err := e.Stop(); err != nil {
			tb.Errorf("e2e: stopping exim: %v", err)
		}
	})
	return e
}

func (e *Exim) start(tb TB) {
	tb.Helper()
	// -bdf: the daemon in the foreground (the harness's child); -q1s: a
	// queue runner every second, so that deferred deliveries are retried
	// within the test (with the 1 s retry rule).
	p, err := startProcess("exim", e.OutPath, e.env, e.Bin, "-C", e.ConfigPath, "-bdf", "-q1s")
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	e.proc = p
	ctx := context.Background()
	err = Poll(ctx, 30*time.Second, func() (bool, error) {
		if gone, err := p.exited(); gone {
			return true, err
		}
		return WaitGreeting(ctx, e.SMTPAddr, "220 ", 2*time.Second) == nil, nil
	})
	if err != nil {
		tb.Fatalf("e2e: exim not ready on %s: %v\n%s\n%s\n%s", e.SMTPAddr, err, tail(e.OutPath, 4096), tail(e.MainLog, 8192), tail(e.PanicLog, 4096))
	}
}

// Stop ends the daemon (SIGTERM) and waits for it. Delivery processes it
// forked finish on their own.
func (e *Exim) Stop() error {
	if e.proc == nil {
		return nil
	}
	err := e.proc.stop(20 * time.Second)
	e.proc = nil
	return err
}

// Exec runs the instance's binary with -C CONFIG and args (e.g. "-bpc",
// "-qff", "-bt", address) and returns its output.
func (e *Exim) Exec(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, e.Bin, append([]string{"-C", e.ConfigPath}, args...)...)
	cmd.Env = e.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("exim %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// QueueCount is the number of messages in the queue (`exim -bpc`).
func (e *Exim) QueueCount(ctx context.Context) (int, error) {
	out, err := e.Exec(ctx, "-bpc")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("exim -bpc: %q: %w", out, err)
	}
	return n, nil
}

// Queue is the queue listing (`exim -bp`), for failure messages.
func (e *Exim) Queue(ctx context.Context) string {
	out, err := e.Exec(ctx, "-bp")
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// Flush delivers everything queued now, ignoring retry times (`exim -qff`,
// frozen messages included).
func (e *Exim) Flush(ctx context.Context) error {
	_, err := e.Exec(ctx, "-qff")
	return err
}

// EximLog is what the main log says about failures.
type EximLog struct {
	Bounced []string // "**" lines: a recipient failed for good, a bounce follows
	// CopyFailed are "**" lines of the journal copy (router lifeline_copy):
	// its errors_to = "" drops them without a bounce ("error ignored").
	CopyFailed []string
	Frozen     []string // messages frozen
	Panics     []string // the panic log's lines
}

// Problems returns the log lines a test must not see: bounces, frozen
// messages and panics.
func (l EximLog) Problems() []string {
	var p []string
	p = append(p, l.Bounced...)
	p = append(p, l.Frozen...)
	return append(p, l.Panics...)
}

// eximPrivilegeNote is what Exim writes to the main and panic logs each time
// a process running as Debian-exim re-executes the binary with -C: the
// re-executed process keeps running as Debian-exim, which is all a
// configuration with only smtp transports needs. Not a problem here.
const eximPrivilegeNote = "exim user lost privilege for using -C option"

// Log reads the main and panic logs.
func (e *Exim) Log() (EximLog, error) {
	var l EximLog
	b, err := os.ReadFile(e.MainLog)
	if err != nil && !os.IsNotExist(err) {
		return l, fmt.Errorf("reading exim's main log: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, " ** ") && strings.Contains(line, " R=lifeline_copy "):
			l.CopyFailed = append(l.CopyFailed, line)
		case strings.Contains(line, " ** "):
			l.Bounced = append(l.Bounced, line)
		case strings.Contains(strings.ToLower(line), "frozen"):
			l.Frozen = append(l.Frozen, line)
		}
	}
	p, err := os.ReadFile(e.PanicLog)
	if err != nil && !os.IsNotExist(err) {
		return l, fmt.Errorf("reading exim's panic log: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if line != "" && !strings.Contains(line, eximPrivilegeNote) {
			l.Panics = append(l.Panics, line)
		}
	}
	return l, nil
}

// CountLog counts main log lines containing every one of subs.
func (e *Exim) CountLog(subs ...string) (int, error) {
	b, err := os.ReadFile(e.MainLog)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all && line != "" {
			n++
		}
	}
	return n, nil
}

// WaitQueueEmpty polls until Exim's queue is empty.
func (e *Exim) WaitQueueEmpty(ctx context.Context, timeout time.Duration) error {
	n := -1
	err := Poll(ctx, timeout, func() (bool, error) {
		c, err := e.QueueCount(ctx)
		if err != nil {
			return false, err
		}
		n = c
		return c == 0, nil
	})
	if err != nil {
		return fmt.Errorf("exim queue not empty (%d messages): %w\n%s", n, err, e.Queue(ctx))
	}
	return nil
}

// DebianSplitConfig builds what Debian's exim4-config makes of its split
// configuration (/etc/exim4/conf.d) with contrib/exim/conf.d added: Debian's
// own conf.d and update-exim4.conf (packages exim4-config and exim4-base,
// unpacked beside the binary, never installed), run with --confdir on a copy
// in a temporary directory. localMacros is written to
// conf.d/main/000_localmacros, where Debian reads site macros first; the
// other settings are a plain "internet site" whose local domains are domains.
// It returns the generated file, for `exim4 -C FILE -bV` or `-bt`.
func DebianSplitConfig(tb TB, domains []string, localMacros string) string {
	tb.Helper()
	bin := RequireExim(tb)
	root := filepath.Dir(filepath.Dir(filepath.Dir(bin)))
	script := filepath.Join(root, "usr/sbin/update-exim4.conf")
	confd := filepath.Join(root, "etc/exim4/conf.d")
	eximMu.Lock()
	_, err1 := os.Stat(script)
	_, err2 := os.Stat(confd)
	var err error
	if err1 != nil || err2 != nil {
		err = unpackDebs(filepath.Dir(root), root, []string{"exim4-base", "exim4-config"})
	}
	eximMu.Unlock()
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	mod, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	dir := tb.TempDir()
	etc := filepath.Join(dir, "etc")
	mkdirs(tb, filepath.Join(etc, "conf.d"))
	for _, src := range []string{confd, filepath.Join(mod, "contrib", "exim", "conf.d")} {
		// src/. merges src's contents into conf.d.
		if out, err := exec.Command("cp", "-r", src+"/.", filepath.Join(etc, "conf.d")).CombinedOutput(); err != nil {
			tb.Fatalf("e2e: cp -r %s: %v: %s", src, err, out)
		}
	}
	writeFile(tb, filepath.Join(etc, "update-exim4.conf.conf"), fmt.Sprintf(`dc_eximconfig_configtype='internet'
dc_other_hostnames='%s'
dc_local_interfaces='127.0.0.1'
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets=''
dc_smarthost=''
CFILEMODE='644'
dc_use_split_config='true'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='maildir_home'
`, strings.Join(domains, ":")), 0o644)
	writeFile(tb, filepath.Join(etc, "conf.d", "main", "000_localmacros"), localMacros, 0o644)
	out := filepath.Join(dir, "exim4.conf")
	// The script checks its output with /usr/sbin/exim4 -bV only if that
	// exists (it does not here); the caller runs the private binary.
	cmd := exec.Command("bash", script, "--confdir", etc, "--output", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("e2e: update-exim4.conf: %v: %s", err, b)
	}
	return out
}

// EximExec runs the private exim4 binary with args (e.g. "-C", FILE, "-bt",
// ADDRESS) outside any instance.
func EximExec(tb TB, args ...string) ([]byte, error) {
	tb.Helper()
	bin := RequireExim(tb)
	cmd := exec.Command(bin, args...)
	cmd.Env = eximEnv(filepath.Dir(filepath.Dir(filepath.Dir(bin))))
	return cmd.CombinedOutput()
}

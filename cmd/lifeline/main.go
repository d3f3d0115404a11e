// Command lifeline is Lifeline's one binary: `lifeline serve` runs the service,
// the other subcommands are operator tools. This file only parses flags and
// hands over to the packages that do the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/daemon"
	"github.com/lifelinemail/lifeline/export"
	"github.com/lifelinemail/lifeline/internal/faultclock"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/tlsconf"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const defaultConfig = "/etc/lifeline/lifeline.toml"

const usage = `usage: lifeline COMMAND [flags]

commands:
  serve -c FILE             run Lifeline (milter, IMAP, POP3, metrics); SIGHUP
                            re-reads the config (probe settings, log level),
                            the TLS certificate and the passwd-file
  check-config -c FILE      validate a configuration file, list every error
                            (and the TLS certificate, alias and passwd files)
  journal stats -c FILE     messages, mailboxes, bytes on disk, oldest entry
  journal verify -c FILE    check the journal's consistency (exit 1 on problems)
  export -c FILE --mailbox ADDR [--since T] [--until T] --format mbox|eml [--output PATH]
                            write a mailbox's journaled mail as .eml files or an mbox
  status -c FILE [--json | --nagios]
                            each mailbox server's state, custody backlog, replay
                            progress, journal size and retention horizon; exit 0
                            all fine, 2 an outage is active, 3 replay recipients
                            failed, 1 Lifeline unreachable or a usage error
                            (--json: the same, and "state"; --nagios: one line,
                            0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)
  outage start -c FILE --server NAME --reason TEXT
                            declare an outage by hand (probes do not end it)
  outage end -c FILE --server NAME
                            end an outage; replay starts
  outage history -c FILE [--server NAME]
                            the outage transitions (time, cause, reason)
  window add -c FILE --server NAME --start T --end T [--reason TEXT]
  window remove -c FILE --id ID
                            schedule or cancel a maintenance window
  restore -c FILE --mailbox ADDR --since T [--until T] [--folder NAME] [--dry-run]
                            deliver journaled mail of a mailbox back over LMTP
  passwd [--scheme S] [--user ADDR] [--stdin]
                            hash a password for the passwd-file (asked twice on
                            the terminal, or one line of standard input)
  version                   print the version

The journal commands and export open the journal directly: stop 'lifeline serve'
first (the embedded journal allows one process at a time). status, outage,
window and restore talk to the running 'lifeline serve' through its admin API
([http] listen, with the token from admin_token or admin_token_file).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = cmdServe(rest, stderr)
	case "check-config":
		err = cmdCheckConfig(rest, stdout, stderr)
	case "journal":
		err = cmdJournal(rest, stdout, stderr)
	case "export":
		err = cmdExport(rest, stdout, stderr)
	case "status":
		err = cmdStatus(rest, stdout, stderr)
	case "outage":
		err = cmdOutage(rest, stdout, stderr)
	case "window":
		err = cmdWindow(rest, stdout, stderr)
	case "restore":
		err = cmdRestore(rest, stdout, stderr)
	case "passwd":
		err = cmdPasswd(rest, stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "lifeline", getVersion())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "lifeline: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "lifeline: %v\n", err)
			return 2
		}
		var ex exitError
		if errors.As(err, &ex) {
			return int(ex)
		}
		fmt.Fprintf(stderr, "lifeline: %v\n", err)
		return 1
	}
	return 0
}

type usageError struct{ error }

// exitError ends the program with a status after the command printed its report.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func getVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := fs.String("c", defaultConfig, "configuration file")
	return fs, c
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// newLogger returns the logger of serve and its level, which SIGHUP can
// change.
func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.Log.Level)); err == nil {
		level.Set(l)
	}
	hopts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts)), level
	}
	return slog.New(slog.NewTextHandler(w, hopts)), level
}

func cmdServe(args []string, stderr io.Writer) error {
	fs, cfgPath := newFlags("serve", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log, level := newLogger(cfg, stderr)
	// go-milter reports protocol oddities through a package variable; send
	// them to the one structured log instead of the standard log package.
	gomilter.LogWarning = func(format string, v ...any) {
		log.Warn("go-milter: "+fmt.Sprintf(format, v...), "component", "milter")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP re-reads the config, the certificate and the passwd-file, as
	// it does for Dovecot and Postfix (and no longer ends the process); the
	// daemon applies what can change while serving and logs the rest.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			select {
			case reload <- struct{}{}:
			default: // one reload pending is enough
			}
		}
	}()
	go func() {
		// A second signal during the graceful phase ends the process at once;
		// Postfix's default_action=accept covers the messages in flight.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		log.Warn("second signal: exiting immediately")
		os.Exit(1)
	}()
	if path := os.Getenv("LIFELINE_CPUPROFILE"); path != "" {
		// A debugging aid for benchmarks: profile the whole serve run.
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("LIFELINE_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return errors.Join(fmt.Errorf("LIFELINE_CPUPROFILE: %w", err), f.Close())
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				log.Error("writing CPU profile", "err", err)
			}
		}()
	}
	// A fault-injection hook for the e2e suite (TestFaultClockJump), not an
	// operator feature: the wall clock runs at the offset written in the
	// file, so that the test makes it jump without touching the machine's.
	var clock func() time.Time
	if path := os.Getenv(faultclock.EnvVar); path != "" {
		fc, err := faultclock.New(path, log.With("component", "faultclock"))
		if err != nil {
			return fmt.Errorf("%s: %w", faultclock.EnvVar, err)
		}
		log.Warn("fault injection: the wall clock follows the offset in "+faultclock.EnvVar+"; never set it in production",
			"file", path, "offset", fc.Offset().String())
		clock = fc.Now
	}
	return daemon.Run(ctx, daemon.Options{Config: cfg, Logger: log, Version: getVersion(), Reload: reload,
		ReloadConfig: func() (*config.Config, error) { return config.Load(*cfgPath) }, LogLevel: level, Clock: clock})
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("check-config", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	// The files the config names, each problem at once, as for the config.
	var errs []error
	if _, err := daemon.NewResolver(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.TLS.Configured() {
		if _, err := tlsconf.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, nil); err != nil {
			errs = append(errs, fmt.Errorf("[tls]: %w", err))
		}
	}
	users := -1
	if cfg.IMAP.On() || cfg.POP3.On() {
		// serve starts without a readable passwd-file (the milter must run),
		// but then nobody can log in: that is worth an exit status here.
		f, err := auth.NewFile(cfg.Auth.PasswdFile, auth.FileOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.passwd_file: %w (create it with `lifeline passwd --user ADDR >> FILE`)", err))
		} else {
			users = f.Users()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok (%d mailbox servers, journal %s, retention %s",
		*cfgPath, len(cfg.Servers), cfg.Journal.Path, cfg.Journal.Retention.D())
	if users >= 0 {
		fmt.Fprintf(stdout, ", %d users in %s, serve %s", users, cfg.Auth.PasswdFile, cfg.MailboxAccess.Serve)
	}
	fmt.Fprintln(stdout, ")")
	return nil
}

func cmdJournal(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("journal: want 'stats' or 'verify'")}
	}
	sub := args[0]
	if sub != "stats" && sub != "verify" {
		return usageError{fmt.Errorf("journal: unknown subcommand %q", sub)}
	}
	fs, cfgPath := newFlags("journal "+sub, stderr)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	j, err := openJournal(*cfgPath, stderr)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if sub == "stats" {
		err = printStats(ctx, j, stdout)
	} else {
		err = verify(ctx, j, stdout)
	}
	return errors.Join(err, j.Close())
}

// openJournal opens the journal a config file names, for the operator
// commands that read it directly (only warnings are logged).
func openJournal(cfgPath string, stderr io.Writer) (journal.Journal, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	return daemon.OpenJournal(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func printStats(ctx context.Context, j journal.Journal, w io.Writer) error {
	st, err := j.Stats(ctx)
	if err != nil {
		return err
	}
	oldest := "-"
	if !st.Oldest.IsZero() {
		oldest = st.Oldest.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "messages: %d\nmailboxes: %d\nbytes_raw: %d\nbytes_on_disk: %d\noldest: %s\n",
		st.Messages, st.Mailboxes, st.BytesRaw, st.BytesOnDisk, oldest)
	return nil
}

func verify(ctx context.Context, j journal.Journal, w io.Writer) error {
	problems, err := j.Verify(ctx)
	if err != nil {
		return err
	}
	for _, p := range problems {
		if p.ID.IsZero() {
			fmt.Fprintf(w, "problem: %s\n", p.Detail)
		} else {
			fmt.Fprintf(w, "problem: %s: %s\n", p.ID, p.Detail)
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "journal verify: %d problem(s)\n", len(problems))
		return exitError(1)
	}
	fmt.Fprintln(w, "journal verify: ok")
	return nil
}

func cmdExport(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("export", stderr)
	mailbox := fs.String("mailbox", "", "continuity mailbox (address) to export")
	since := fs.String("since", "", "only mail received at or after this time (RFC 3339 or YYYY-MM-DD)")
	until := fs.String("until", "", "only mail received before this time (RFC 3339 or YYYY-MM-DD)")
	format := fs.String("format", "mbox", "mbox (one file, or standard output) or eml (one file per message in a directory)")
	output := fs.String("output", "", "output file (mbox; default standard output) or directory (eml, required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *mailbox == "" {
		return usageError{errors.New("export: --mailbox is required")}
	}
	f := export.Filter{Mailbox: strings.ToLower(*mailbox)}
	var err error
	if f.Since, err = parseTime(*since); err != nil {
		return usageError{fmt.Errorf("export: --since: %w", err)}
	}
	if f.Until, err = parseTime(*until); err != nil {
		return usageError{fmt.Errorf("export: --until: %w", err)}
	}
	if *format != "mbox" && *format != "eml" {
		return usageError{fmt.Errorf("export: --format %q: want mbox or eml", *format)}
	}
	if *format == "eml" && *output == "" {
		return usageError{errors.New("export: --format eml needs --output DIR")}
	}
	j, err := openJournal(*cfgPath, stderr)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var n int
	if *format == "eml" {
		n, err = export.EML(ctx, j, f, *output)
	} else {
		n, err = exportMbox(ctx, j, f, *output, stdout)
	}
	if err == nil {
		fmt.Fprintf(stderr, "exported %d message(s)\n", n)
	}
	return errors.Join(err, j.Close())
}

func exportMbox(ctx context.Context, j journal.Journal, f export.Filter, path string, stdout io.Writer) (int, error) {
	if path == "" {
		return export.Mbox(ctx, j, f, stdout)
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := export.Mbox(ctx, j, f, out)
	return n, errors.Join(err, out.Close())
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.ParseInLocation("2006-01-02", s, time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor YYYY-MM-DD", s)
	}
	return t, nil
}

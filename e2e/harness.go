package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB the harness uses. *testing.T and *testing.B
// satisfy it; Main implements it for programs.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	Failed() bool
	TempDir() string
}

// DefaultDomain is the mail domain the private Postfix and Dovecot serve.
const DefaultDomain = "example.test"

// Options configures Start.
type Options struct {
	// Domain is the virtual mailbox domain (default DefaultDomain).
	Domain string
	// Users are the mailboxes Dovecot knows, as local parts or full addresses
	// in Domain (default "alice", "bob", "carol", "dave").
	Users []string
	// Aliases maps an alias address to its member addresses. They are written
	// to one file in Postfix virtual(5) text format, which Postfix uses as
	// virtual_alias_maps and Lifeline as [mapping] alias_file.
	Aliases map[string][]string
	// SecondDomain starts a second Dovecot serving that domain, with
	// SecondUsers (default "dave", "erin"); Postfix routes the domain to its
	// LMTP through transport_maps and Lifeline's config gets a second
	// [[server]] (SecondServer): two mailbox servers, one of which can fail.
	SecondDomain string
	SecondUsers  []string
	// Milter starts Lifeline and hooks Postfix to its milter. Without it,
	// Postfix delivers straight to Dovecot (a baseline).
	Milter bool
	// Lifeline tunes Lifeline's config when Milter is set.
	Lifeline LifelineOptions
	// Postfix tunes the Postfix instance.
	Postfix PostfixOptions
}

// Env is a running Postfix → (Lifeline) → Dovecot setup.
type Env struct {
	Domain    string
	Dir       string
	AliasFile string // virtual(5) text file shared by Postfix and Lifeline; "" without aliases
	Dovecot   *Dovecot
	Dovecot2  *Dovecot // serves Options.SecondDomain; nil without one
	Postfix   *Postfix
	Lifeline  *Lifeline // nil unless Options.Milter
}

// Start installs what is missing, then starts Dovecot, Lifeline (if
// opts.Milter) and Postfix, in that order, each ready when Start returns.
// The test's cleanups stop them all.
func Start(tb TB, opts Options) *Env {
	tb.Helper()
	Require(tb)
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if len(opts.Users) == 0 {
		opts.Users = []string{"alice", "bob", "carol", "dave"}
	}
	env := &Env{Domain: opts.Domain, Dir: SharedDir(tb)}
	if len(opts.Aliases) > 0 {
		env.AliasFile = filepath.Join(env.Dir, "virtual")
		if err := WriteAliasFile(env.AliasFile, opts.Aliases); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
	}
	outage := opts.Milter && opts.Lifeline.Outage != nil
	users := opts.Users
	if outage {
		// The address the health probes' LMTP RCPT TO asks for: it must
		// exist, and is never delivered to (the probe ends with RSET).
		users = append(users[:len(users):len(users)], CanaryUser)
	}
	env.Dovecot = StartDovecot(tb, DovecotOptions{Domain: opts.Domain, Users: users})
	po := opts.Postfix
	po.Domain = opts.Domain
	po.Users = env.Dovecot.Users()
	po.LMTPAddr = env.Dovecot.LMTPAddr
	po.AliasFile = env.AliasFile
	if opts.SecondDomain != "" {
		users2 := opts.SecondUsers
		if len(users2) == 0 {
			users2 = []string{"dave", "erin"}
		}
		if outage {
			users2 = append(users2[:len(users2):len(users2)], CanaryUser)
		}
		env.Dovecot2 = StartDovecot(tb, DovecotOptions{Domain: opts.SecondDomain, Users: users2})
		po.Users = append(po.Users, env.Dovecot2.Users()...)
		po.Transports = map[string]string{opts.SecondDomain: env.Dovecot2.LMTPAddr}
		for k, v := range opts.Postfix.Transports {
			po.Transports[k] = v
		}
	}
	if opts.Milter {
		lo := opts.Lifeline
		lo.Domains = []string{opts.Domain}
		lo.LMTPAddr = env.Dovecot.LMTPAddr
		lo.AliasFile = env.AliasFile
		if len(lo.Servers) == 0 {
			for _, d := range env.Dovecots() {
				name := PrimaryServer
				if d == env.Dovecot2 {
					name = SecondServer
				}
				srv := LifelineServer{Name: name, Domains: []string{d.Domain}, LMTPAddr: d.LMTPAddr}
				if outage {
					srv.Canary = qualify(CanaryUser, d.Domain)
				}
				lo.Servers = append(lo.Servers, srv)
			}
		}
		env.Lifeline = StartLifeline(tb, lo)
		po.MilterAddr = env.Lifeline.MilterAddr
	}
	env.Postfix = StartPostfix(tb, po)
	return env
}

// Dovecots returns the running mailbox servers: Dovecot, then Dovecot2 if
// there is one.
func (e *Env) Dovecots() []*Dovecot {
	if e.Dovecot2 != nil {
		return []*Dovecot{e.Dovecot, e.Dovecot2}
	}
	return []*Dovecot{e.Dovecot}
}

// Addr returns local@Domain, or local unchanged when it has a domain.
func (e *Env) Addr(local string) string { return qualify(local, e.Domain) }

func qualify(local, domain string) string {
	if strings.Contains(local, "@") {
		return strings.ToLower(local)
	}
	return strings.ToLower(local) + "@" + domain
}

// SharedDir returns a fresh directory under tb.TempDir() that unprivileged
// daemons (postfix, dovecot, vmail) can traverse: testing creates temporary
// directories with mode 0700, which would lock them out.
func SharedDir(tb TB) string {
	tb.Helper()
	dir := tb.TempDir()
	// testing.T.TempDir returns ROOT/NNN inside a per-test ROOT; open both.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := addMode(d, 0o711); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
	}
	for p := filepath.Dir(filepath.Dir(dir)); p != "/"; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			tb.Fatalf("e2e: %v", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			tb.Fatalf("e2e: %s (mode %v) is not traversable by the postfix, dovecot and vmail users; set TMPDIR to a directory below one that is (e.g. /tmp)", p, st.Mode().Perm())
		}
	}
	return dir
}

func addMode(path string, mode os.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&mode == mode {
		return nil
	}
	return os.Chmod(path, st.Mode().Perm()|mode)
}

// mkdirs creates each directory with mode 0755.
func mkdirs(tb TB, dirs ...string) {
	tb.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
	}
}

func writeFile(tb TB, path, content string, mode os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		tb.Fatalf("e2e: %v", err)
	}
}

// Free loopback ports. A port is free when the kernel hands it out for
// 127.0.0.1:0; the harness remembers what it gave out so two components of
// one process never get the same one between probe and bind.
var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on.
func FreePort(tb TB) int {
	tb.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("e2e: no free loopback port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if err := ln.Close(); err != nil {
			tb.Fatalf("e2e: %v", err)
		}
		if !given[port] {
			given[port] = true
			return port
		}
	}
	tb.Fatalf("e2e: no free loopback port after 50 tries")
	return 0
}

// Poll calls cond until it reports done, returns an error, or timeout passes.
// The interval grows from 5 ms to 250 ms so that fast conditions are seen at
// once and slow ones do not burn the CPU the system under test needs.
func Poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	return PollUpTo(ctx, timeout, 250*time.Millisecond, cond)
}

// PollUpTo is Poll with another longest interval, for a measurement that
// must see the condition soon after it holds.
func PollUpTo(ctx context.Context, timeout, maxInterval time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 5 * time.Millisecond
	var last error
	for {
		done, err := cond()
		if done {
			return err
		}
		if err != nil {
			last = err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*3/2, maxInterval)
	}
}

// errNotYet is the usual error a Poll condition returns while waiting.
var errNotYet = errors.New("not yet")

// WaitGreeting polls addr until it accepts a connection and sends a line that
// starts with prefix (e.g. "220 " for SMTP and LMTP, "* OK" for IMAP).
func WaitGreeting(ctx context.Context, addr, prefix string, timeout time.Duration) error {
	err := Poll(ctx, timeout, func() (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return false, err
		}
		buf := make([]byte, 512)
		n, err := io.ReadAtLeast(c, buf, len(prefix))
		if err != nil {
			return false, err
		}
		if !strings.HasPrefix(string(buf[:n]), prefix) {
			return false, fmt.Errorf("greeting %q", buf[:n])
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %q greeting on %s: %w", prefix, addr, err)
	}
	return nil
}

// logTailBytes is how much of each log the harness copies into a failed
// test's output.
const logTailBytes = 64 << 10

// dumpLogsOnFailure registers a cleanup that copies the tail of each log file
// into the test output when the test has failed. Register it before the
// cleanup that stops the component: cleanups run last-in first-out, so the
// logs are read after the component has written its last line.
func dumpLogsOnFailure(tb TB, name string, files ...string) {
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		for _, f := range files {
			tb.Logf("----- %s log %s -----\n%s", name, f, tail(f, logTailBytes))
		}
	})
}

// tail returns up to n bytes from the end of the file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(%v)", err)
	}
	prefix := ""
	if off > 0 {
		prefix = fmt.Sprintf("[… %d bytes before]\n", off)
	}
	return prefix + string(b)
}

// WriteAliasFile writes aliases (alias → members) in Postfix virtual(5) text
// format, "alias  member1, member2", which Postfix reads as texthash: and
// Lifeline as [mapping] alias_file.
func WriteAliasFile(path string, aliases map[string][]string) error {
	keys := make([]string, 0, len(aliases))
	for k := range aliases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Generated by Lifeline's e2e harness (Postfix virtual(5) format).\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s\t%s\n", strings.ToLower(k), strings.Join(aliases[k], ", "))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

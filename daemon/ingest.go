package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/addrmap"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/ingest"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/policy"
)

// ingestServers are the [ingest] LMTP listeners and the [policy] server, each
// nil when off.
type ingestServers struct {
	log  *slog.Logger
	list []ingestListener
}

type ingestListener struct {
	name string
	ln   net.Listener
	srv  interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	}
}

// newIngest builds and binds what [ingest] and [policy] turn on.
// monitor says which servers are in outage for custody (custodyOutage: only
// those replay delivers to), for the policy server's answers to Exim and
// Postfix and for waking replay after a late custody.
func newIngest(cfg *config.Config, j journal.Journal, resolver *addrmap.Map, monitor policy.OutageChecker,
	wake func(server string), log *slog.Logger, reg prometheus.Registerer, m *metrics, clock func() time.Time) (_ *ingestServers, err error) {
	x := &ingestServers{log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, x.close())
		}
	}()
	for _, l := range []struct {
		key, addr string
		mode      ingest.Mode
	}{
		{"ingest.journal_listen", cfg.Ingest.JournalListen, ingest.Journal},
		{"ingest.custody_listen", cfg.Ingest.CustodyListen, ingest.Custody},
	} {
		if l.addr == "" {
			continue
		}
		srv, err := ingest.New(ingest.Options{
			Mode: l.mode, Journal: j, Resolver: resolver,
			Logger: log.With("component", "ingest"), Registerer: reg, Panics: m.panics.WithLabelValues("ingest"),
			MaxMessageSize: int64(cfg.Ingest.MaxMessageSize), MaxRecipients: cfg.Ingest.MaxRecipients,
			ReadTimeout: cfg.Ingest.ReadTimeout.D(), WriteTimeout: cfg.Ingest.WriteTimeout.D(),
			SpoolThreshold: int64(cfg.Milter.SpoolThreshold), SpoolDir: cfg.Milter.SpoolDir,
			Clock: clock,
			OnCustody: func(server string) {
				if !monitor.InOutage(server) {
					wake(server)
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.key, err)
		}
		ln, err := listen(log, l.key, l.addr)
		if err != nil {
			return nil, err
		}
		x.list = append(x.list, ingestListener{name: "ingest " + l.mode.String(), ln: ln, srv: srv})
	}
	if cfg.Policy.Listen != "" {
		known := newKnownRecipients(cfg, log.With("component", "policy"))
		srv, err := policy.New(policy.Options{
			Resolver: resolver, Outage: monitor,
			Known: known.Has, RejectUnknown: *cfg.Policy.RejectUnknown,
			CanTakeCustody: func() error {
				return canTakeCustody(cfg.Journal.Path, float64(cfg.Policy.DeferAbove), int64(cfg.Journal.MinFree))
			},
			Logger: log.With("component", "policy"), Registerer: reg, Panics: m.panics.WithLabelValues("policy"),
			IdleTimeout: cfg.Policy.Timeout.D(),
		})
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		ln, err := listen(log, "policy.listen", cfg.Policy.Listen)
		if err != nil {
			return nil, err
		}
		x.list = append(x.list, ingestListener{name: "policy", ln: ln, srv: srv})
	}
	return x, nil
}

// listeners is how many Serve goroutines serve starts (serveErr's capacity).
func (x *ingestServers) listeners() int { return len(x.list) }

// serve starts every listener.
func (x *ingestServers) serve(wg *sync.WaitGroup, serveErr chan<- error) {
	for _, l := range x.list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.srv.Serve(l.ln); err != nil && !isClosed(err) {
				serveErr <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
		x.log.Info("listening", "listener", l.name, "addr", l.ln.Addr().String())
	}
}

// shutdown stops them all side by side, letting transactions in flight end
// until ctx does.
func (x *ingestServers) shutdown(ctx context.Context) error {
	errs := make([]error, len(x.list))
	var wg sync.WaitGroup
	for i, l := range x.list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.srv.Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", l.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// close releases the listeners of servers that never served.
func (x *ingestServers) close() error {
	var errs []error
	for _, l := range x.list {
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isIngestClosed(err error) bool {
	return errors.Is(err, ingest.ErrServerClosed) || errors.Is(err, policy.ErrServerClosed)
}

// canTakeCustody is the policy server's check of the journal's disk: custody
// is refused above deferAbove percent full, or below the journal's own
// reserve (where its appends fail with journal.ErrDiskFull anyway). The fill
// level is df's: used over size, with the root reserve counted as used.
func canTakeCustody(dir string, deferAbove float64, minFree int64) error {
	free, size, err := diskSpace(dir)
	if err != nil {
		return err
	}
	if free < minFree {
		return fmt.Errorf("%w: %d bytes free, %d kept in reserve", journal.ErrDiskFull, free, minFree)
	}
	if size > 0 {
		if fill := 100 * float64(size-free) / float64(size); fill > deferAbove {
			return fmt.Errorf("journal filesystem %.1f%% full, above policy.defer_above %.1f%%", fill, deferAbove)
		}
	}
	return nil
}

// knownRecipients is the policy server's list of known mailboxes: the
// passwd-file's accounts, the alias map's keys and targets, and the lines of
// [policy] known_recipients_file. The files are read again when they change,
// checked at most once per knownCheckInterval. An entry without a domain (a
// Dovecot users file for auth_username_format = %n) is a local part, known in
// every domain. With no entry at all (no list readable yet) every address is
// known: rejecting then would bounce every recipient of a server in outage.
type knownRecipients struct {
	log   *slog.Logger
	files []knownFile

	mu        sync.Mutex
	set       map[string]bool // addresses and bare local parts, lower case
	lastCheck time.Time
	warnedNil bool // the empty list was logged
}

type knownFile struct {
	key, path string
	parse     func(path string) ([]string, error)
	mtime     time.Time
	size      int64
	loaded    bool
	entries   []string
}

const knownCheckInterval = time.Second

func newKnownRecipients(cfg *config.Config, log *slog.Logger) *knownRecipients {
	k := &knownRecipients{log: log}
	k.files = append(k.files, knownFile{key: "auth.passwd_file", path: cfg.Auth.PasswdFile, parse: passwdUsers})
	if cfg.Mapping.AliasFile != "" {
		k.files = append(k.files, knownFile{key: "mapping.alias_file", path: cfg.Mapping.AliasFile, parse: aliasAddresses})
	}
	if cfg.Policy.KnownRecipientsFile != "" {
		k.files = append(k.files, knownFile{key: "policy.known_recipients_file", path: cfg.Policy.KnownRecipientsFile, parse: addressLines})
	}
	k.mu.Lock()
	k.refreshLocked(time.Now())
	k.mu.Unlock()
	return k
}

// Has reports whether addr is in one of the lists (ASCII case ignored).
func (k *knownRecipients) Has(addr string) bool {
	k.mu.Lock()
	if now := time.Now(); now.Sub(k.lastCheck) >= knownCheckInterval {
		k.refreshLocked(now)
	}
	set := k.set
	k.mu.Unlock()
	if len(set) == 0 {
		return true
	}
	addr = strings.ToLower(strings.TrimSpace(addr))
	if set[addr] {
		return true
	}
	local, _, ok := strings.Cut(addr, "@")
	return ok && local != "" && set[local]
}

// refreshLocked re-reads the files that changed. A file that cannot be read
// keeps its last entries (a missing passwd-file at start: none), and is logged.
func (k *knownRecipients) refreshLocked(now time.Time) {
	k.lastCheck = now
	changed := k.set == nil
	for i := range k.files {
		f := &k.files[i]
		fi, err := os.Stat(f.path)
		if err == nil && f.loaded && fi.ModTime().Equal(f.mtime) && fi.Size() == f.size {
			continue
		}
		var entries []string
		if err == nil {
			entries, err = f.parse(f.path)
		}
		if err != nil {
			if f.loaded || !errors.Is(err, os.ErrNotExist) || f.key != "auth.passwd_file" {
				k.log.Warn("cannot read a list of known recipients; keeping the last one", "key", f.key, "path", f.path, "err", err)
			}
			f.loaded = true // not logged again until it changes
			if fi != nil {
				f.mtime, f.size = fi.ModTime(), fi.Size()
			}
			continue
		}
		f.entries, f.mtime, f.size, f.loaded = entries, fi.ModTime(), fi.Size(), true
		changed = true
	}
	if !changed {
		return
	}
	set := map[string]bool{}
	for _, f := range k.files {
		for _, e := range f.entries {
			if e = strings.ToLower(strings.TrimSpace(e)); e != "" {
				set[e] = true
			}
		}
	}
	k.set = set
	if len(set) == 0 && !k.warnedNil {
		k.warnedNil = true
		k.log.Warn("policy: no known recipients (no readable list has an entry): unknown recipients are not rejected until one has",
			"passwd_file", k.files[0].path)
	}
}

// passwdUsers returns a passwd-file's user names (the first field), never
// looking at the rest of the line, which holds the hash.
func passwdUsers(path string) ([]string, error) {
	return readLines(path, func(line string) (string, bool) {
		user, _, ok := strings.Cut(line, ":")
		return user, ok && user != ""
	})
}

// addressLines returns a file's addresses, one per line; '#' starts a comment.
func addressLines(path string) ([]string, error) {
	return readLines(path, func(line string) (string, bool) { return line, true })
}

// aliasAddresses returns every key and target of a virtual(5) alias table.
func aliasAddresses(path string) ([]string, error) {
	a, err := addrmap.LoadAliases(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for k, ts := range a {
		out = append(out, k)
		out = append(out, ts...)
	}
	return out, nil
}

func readLines(path string, field func(string) (string, bool)) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if v, ok := field(line); ok {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A passwd-file in Dovecot's format
// (https://doc.dovecot.org/configuration_manual/authentication/passwd_file/):
//
//	user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
//
// Only the first two fields matter here; the others may be absent or empty. Blank lines
// and lines starting with '#' are skipped. User names may be full addresses and are matched
// without regard to case.
//
// Replace the file by renaming a new one over it (as `install`, config management and most
// editors do): a file rewritten in place can be read between its truncation and its new
// content, which leaves the users of the part not yet written unknown until the next check.

// FileOptions configures a File. The zero value is usable.
type FileOptions struct {
	// Logger receives load errors, reloads and a warning for every cleartext password.
	// Nil discards.
	Logger *slog.Logger
	// Clock gives the time that paces the checks for a changed file. Nil is time.Now.
	Clock func() time.Time
	// CheckInterval is how often Verify looks at the file's size, mtime and inode.
	// Zero is DefaultCheckInterval.
	CheckInterval time.Duration
}

// DefaultCheckInterval is how often a File checks whether it changed: at most once a second,
// and only when a login asks.
const DefaultCheckInterval = time.Second

// File is a Dovecot passwd-file, re-read when it changes. It is safe for concurrent use.
type File struct {
	path  string
	opts  FileOptions
	log   *slog.Logger
	table atomic.Pointer[passwdTable]

	lastCheck atomic.Int64 // Clock().UnixNano() of the last look at the file
	reloadMu  sync.Mutex   // one reload at a time
	seen      fileStamp    // of the file last read, good or bad; under reloadMu
	lastErr   string       // the last reload error logged; under reloadMu
}

// passwdTable is one parsed version of the file.
type passwdTable struct {
	users map[string]credential // by lower-cased user name
	// dummy is verified for an unknown user: a random password with the cost parameters
	// most users of the table have, so an unknown user takes as long as a known one.
	dummy credential
}

// fileStamp identifies a version of the file the way a cheap stat can: size, mtime, and
// where the platform has them, inode and device (a file replaced by rename).
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
	dev   uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	s.ino, s.dev = inode(fi)
	return s
}

// NewFile reads the passwd-file at path. Every malformed line is reported in the error at
// once, each with its line number and never with its hash; a cleartext ({PLAIN}) password
// is accepted with a warning in the log.
func NewFile(path string, opts FileOptions) (*File, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	f := &File{path: path, opts: opts, log: opts.Logger.With("passwd_file", path)}
	t, stamp, err := f.read()
	for try := 0; errors.Is(err, errChangedWhileRead) && try < 3; try++ {
		time.Sleep(10 * time.Millisecond)
		t, stamp, err = f.read()
	}
	if err != nil {
		return nil, err
	}
	f.table.Store(t)
	f.seen = stamp
	f.lastCheck.Store(opts.Clock().UnixNano())
	f.log.Info("passwd-file loaded", "users", len(t.users))
	return f, nil
}

// Verify reports whether password is user's, and the user's canonical (lower-case) name.
// An unknown user costs the same work as a known one with a wrong password. Before looking,
// it re-reads the file if its size, mtime or inode changed, checking at most once per
// CheckInterval.
func (f *File) Verify(user, password string) (canonicalUser string, ok bool) {
	f.maybeReload()
	t := f.table.Load()
	name := strings.ToLower(user)
	c, found := t.users[name]
	if !found {
		verifyCredential(t.dummy, password)
		return "", false
	}
	if _, off := c.(disabled); off {
		verifyCredential(t.dummy, password)
		return "", false
	}
	if !verifyCredential(c, password) {
		return "", false
	}
	return name, true
}

// Users returns the number of users in the current table.
func (f *File) Users() int { return len(f.table.Load().users) }

// Reload re-reads the file now, whether or not it changed (for SIGHUP). On error the
// current table stays in use.
func (f *File) Reload() error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	return f.reloadLocked(true)
}

// maybeReload is Verify's cheap check: one goroutine per interval stats the file; the others
// go on with the table they have.
func (f *File) maybeReload() {
	now := f.opts.Clock().UnixNano()
	last := f.lastCheck.Load()
	if time.Duration(now-last) < f.opts.CheckInterval && now >= last {
		return
	}
	if !f.lastCheck.CompareAndSwap(last, now) || !f.reloadMu.TryLock() {
		return
	}
	defer f.reloadMu.Unlock()
	_ = f.reloadLocked(false) // logged there; Verify goes on with the table it has
}

// reloadLocked re-reads the file if forced or if its stamp changed. A file that fails to
// parse is remembered by its stamp, so that it is not parsed (and logged) again every second.
func (f *File) reloadLocked(force bool) error {
	if !force {
		fi, err := os.Stat(f.path)
		if err != nil {
			f.logOnce("passwd-file check failed; keeping the users loaded before", err)
			return err
		}
		if stampOf(fi) == f.seen {
			f.lastErr = ""
			return nil
		}
	}
	t, stamp, err := f.read()
	if errors.Is(err, errChangedWhileRead) && !force {
		return nil // next check
	}
	if err != nil {
		if stamp != (fileStamp{}) {
			f.seen = stamp
		}
		f.logOnce("passwd-file reload failed; keeping the users loaded before", err)
		return err
	}
	f.seen = stamp
	f.lastErr = ""
	f.table.Store(t)
	f.log.Info("passwd-file reloaded", "users", len(t.users))
	return nil
}

func (f *File) logOnce(msg string, err error) {
	if err.Error() == f.lastErr {
		return
	}
	f.lastErr = err.Error()
	f.log.Error(msg, "err", err)
}

// maxFileSize bounds what is read: a users file of a million lines is far smaller.
const maxFileSize = 256 << 20

// read parses the file. The stamp is taken from the open file before reading: if the file
// is written while it is read, the next check sees a newer stamp and reads it again.
func (f *File) read() (*passwdTable, fileStamp, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer fh.Close() //nolint:errcheck // read-only
	fi, err := fh.Stat()
	if err != nil {
		return nil, fileStamp{}, err
	}
	stamp := stampOf(fi)
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, stamp, err
	}
	if len(data) > maxFileSize {
		return nil, stamp, fmt.Errorf("%s: larger than %d bytes", f.path, maxFileSize)
	}
	// Written while we read? Then what we read may be half of it: leave the stamp unseen
	// so the next check reads again.
	if fi2, err := os.Stat(f.path); err != nil || stampOf(fi2) != stamp {
		return nil, fileStamp{}, errChangedWhileRead
	}
	t, err := parseTable(f.path, data, f.log)
	return t, stamp, err
}

var errChangedWhileRead = errors.New("passwd-file changed while being read; will read it again")

// ErrLine is wrapped by the errors of a malformed passwd-file line.
var ErrLine = errors.New("bad passwd-file line")

// lineEntry is what one line of a passwd-file says; ok is false for a comment or blank line.
type lineEntry struct {
	user   string // as written
	scheme string // upper-case, from "{SCHEME}" or CRYPT
	hash   string // the password field whole, "{SCHEME}..." included
}

// parseLine splits one line (without its newline) of a passwd-file. It does not parse the
// hash. Errors never contain the hash.
func parseLine(line string) (e lineEntry, ok bool, err error) {
	line = strings.TrimSuffix(line, "\r")
	if strings.ContainsAny(line, "\n\x00") {
		return lineEntry{}, false, fmt.Errorf("%w: newline or NUL byte inside a line", ErrLine)
	}
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return lineEntry{}, false, nil
	}
	user, rest, found := strings.Cut(line, ":")
	if !found {
		return lineEntry{}, false, fmt.Errorf("%w: no ':' after the user name", ErrLine)
	}
	if user == "" {
		return lineEntry{}, false, fmt.Errorf("%w: empty user name", ErrLine)
	}
	if strings.ContainsFunc(user, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return lineEntry{}, false, fmt.Errorf("%w: user name with space or control character", ErrLine)
	}
	pass, _, _ := strings.Cut(rest, ":")
	scheme, _ := splitScheme(pass)
	return lineEntry{user: user, scheme: scheme, hash: pass}, true, nil
}

// parseTable parses a whole file. All line errors are returned together.
func parseTable(path string, data []byte, log *slog.Logger) (*passwdTable, error) {
	t := &passwdTable{users: map[string]credential{}}
	var errs []error
	lineOf := map[string]int{}
	costs := map[string]int{}
	var costExample = map[string]credential{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		e, ok, err := parseLine(sc.Text())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
			continue
		}
		if !ok {
			continue
		}
		name := strings.ToLower(e.user)
		if prev, dup := lineOf[name]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %w: user %q already on line %d", path, n, ErrLine, e.user, prev))
			continue
		}
		lineOf[name] = n
		if e.hash == "" {
			// Dovecot lets such a user in only with the nopassword extra field; refuse the
			// line rather than guess what was meant.
			errs = append(errs, fmt.Errorf("%s:%d: %w: user %q has an empty password field (write %q to disable a user)",
				path, n, ErrLine, e.user, disabledPassword))
			continue
		}
		if isDisabled(e.hash) {
			t.users[name] = disabled{}
			continue
		}
		c, err := parseCredential(e.hash, defaultLimits)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: user %q: %w", path, n, e.user, err))
			continue
		}
		if c.scheme() == SchemePlain {
			log.Warn("passwd-file has a cleartext password: use `lifeline passwd` to hash it",
				"line", n, "user", e.user, "scheme", e.scheme)
		}
		t.users[name] = c
		k := c.costKey()
		costs[k]++
		if costExample[k] == nil {
			costExample[k] = c
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %w", path, n+1, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	d, err := chooseDummy(costs, costExample)
	if err != nil {
		return nil, fmt.Errorf("%s: making the unknown-user hash: %w", path, err)
	}
	t.dummy = d
	return t, nil
}

// chooseDummy makes the credential an unknown user is checked against: the cost parameters
// most users have (ties broken by name, so the choice is stable), or bcrypt at the default
// cost for an empty file.
func chooseDummy(costs map[string]int, example map[string]credential) (credential, error) {
	best := ""
	for k, n := range costs {
		if best == "" || n > costs[best] || n == costs[best] && k < best {
			best = k
		}
	}
	if best == "" {
		s, err := hashBcrypt([]byte(randomPassword()), DefaultBcryptCost)
		if err != nil {
			return nil, err
		}
		return parseBcrypt(s, defaultLimits)
	}
	return example[best].dummy()
}

// A password field of "*", or one starting with "!" (as a locked account in /etc/shadow),
// disables the user: no password matches, and the check costs what an unknown user's does.
const disabledPassword = "*"

func isDisabled(hash string) bool { return hash == disabledPassword || strings.HasPrefix(hash, "!") }

// disabled is the credential of a disabled user. File.Verify checks the dummy instead.
type disabled struct{}

func (disabled) verify([]byte) bool         { return false }
func (disabled) scheme() string             { return "disabled" }
func (disabled) costKey() string            { return "disabled" }
func (disabled) dummy() (credential, error) { return disabled{}, nil }

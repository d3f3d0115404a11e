package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// TestIDHeader identifies each message a test sends; the accounting helper
// finds it in Dovecot's maildirs and in Lifeline's exports.
const TestIDHeader = "X-Lifeline-Test-Id"

// WithTestID returns msg with a TestIDHeader line prepended.
func WithTestID(id string, msg []byte) []byte {
	out := make([]byte, 0, len(TestIDHeader)+len(id)+4+len(msg))
	out = append(out, TestIDHeader+": "+id+"\r\n"...)
	return append(out, msg...)
}

// Ledger records which uniquely identified messages a test sent to which
// mailboxes, so that what arrived can be counted against it. It is safe for
// concurrent use.
type Ledger struct {
	mu     sync.Mutex
	prefix string
	n      int
	want   map[string]map[string]bool // mailbox → id → expected
	order  []string                   // ids in Expect order
	seen   map[string]bool
}

// NewLedger returns an empty ledger whose ids share a random prefix.
func NewLedger() *Ledger {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Ledger{prefix: "e2e-" + hex.EncodeToString(b[:]), want: map[string]map[string]bool{}, seen: map[string]bool{}}
}

// NewID returns a fresh message id ("e2e-1a2b3c4d-17").
func (l *Ledger) NewID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return fmt.Sprintf("%s-%d", l.prefix, l.n)
}

// Expect records that message id must arrive once in each mailbox
// (user@domain, the address Dovecot stores it under).
func (l *Ledger) Expect(id string, mailboxes ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.seen[id] {
		l.seen[id] = true
		l.order = append(l.order, id)
	}
	for _, m := range mailboxes {
		m = strings.ToLower(m)
		if l.want[m] == nil {
			l.want[m] = map[string]bool{}
		}
		l.want[m][id] = true
	}
}

// IDs returns every expected id in the order Expect first saw it.
func (l *Ledger) IDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.order...)
}

// Mailboxes returns the mailboxes that expect something, sorted.
func (l *Ledger) Mailboxes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ms []string
	for m := range l.want {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return ms
}

// Expected returns the ids expected in mailbox, sorted.
func (l *Ledger) Expected(mailbox string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.want[strings.ToLower(mailbox)] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Report is the outcome of counting mailboxes against a ledger.
type Report struct {
	Expected  int // deliveries the ledger expects (message × mailbox)
	Delivered int // expected deliveries found at least once
	// Per mailbox, sorted ids:
	Missing    map[string][]string // expected, not found
	Duplicates map[string][]string // found more than once
	Unexpected map[string][]string // found, not expected there ("" = no test id)
	// Files maps mailbox → id → the maildir files holding it.
	Files map[string]map[string][]string
}

// OK reports whether everything arrived exactly once and nothing else did.
func (r *Report) OK() bool {
	return len(r.Missing) == 0 && len(r.Duplicates) == 0 && len(r.Unexpected) == 0
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d expected deliveries arrived", r.Delivered, r.Expected)
	list := func(what string, m map[string][]string) {
		var boxes []string
		for k := range m {
			boxes = append(boxes, k)
		}
		sort.Strings(boxes)
		for _, box := range boxes {
			ids := m[box]
			shown := ids
			if len(shown) > 20 {
				shown = shown[:20]
			}
			fmt.Fprintf(&b, "\n  %s in %s (%d): %s", what, box, len(ids), strings.Join(shown, " "))
			if len(ids) > len(shown) {
				fmt.Fprintf(&b, " …")
			}
		}
	}
	list("missing", r.Missing)
	list("duplicate", r.Duplicates)
	list("unexpected", r.Unexpected)
	return b.String()
}

// Maildirs reads test ids out of Dovecot's maildirs, remembering each file's
// id (maildir files never change) so that polling stays cheap.
type Maildirs struct {
	ds    []*Dovecot // the first serves every domain the others do not
	mu    sync.Mutex
	cache map[string]string // path → test id
}

// NewMaildirs returns a reader of the maildirs of one or more Dovecots; a
// mailbox is read from the Dovecot that serves its domain (the first one
// when none does).
func NewMaildirs(d *Dovecot, more ...*Dovecot) *Maildirs {
	return &Maildirs{ds: append([]*Dovecot{d}, more...), cache: map[string]string{}}
}

// dovecotFor returns the Dovecot that stores mailbox.
func (m *Maildirs) dovecotFor(mailbox string) *Dovecot {
	_, domain, _ := strings.Cut(strings.ToLower(mailbox), "@")
	for _, d := range m.ds {
		if strings.EqualFold(d.Domain, domain) {
			return d
		}
	}
	return m.ds[0]
}

// Messages returns every message file in mailbox's maildir, INBOX and all
// folders, by test id ("" for messages without one).
func (m *Maildirs) Messages(mailbox string) (map[string][]string, error) {
	files, err := MaildirFiles(m.dovecotFor(mailbox).Maildir(mailbox))
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	byID := map[string][]string{}
	for _, f := range files {
		id, ok := m.cache[f]
		if !ok {
			id, err = readTestID(f)
			if os.IsNotExist(err) {
				continue // moved from new/ to cur/ meanwhile
			}
			if err != nil {
				return nil, err
			}
			m.cache[f] = id
		}
		byID[id] = append(byID[id], f)
	}
	return byID, nil
}

// Count counts what arrived against the ledger, in the ledger's mailboxes
// and in extra ones (e.g. every Dovecot user, to see misdirected mail).
func (m *Maildirs) Count(l *Ledger, extra ...string) (*Report, error) {
	r := &Report{
		Missing:    map[string][]string{},
		Duplicates: map[string][]string{},
		Unexpected: map[string][]string{},
		Files:      map[string]map[string][]string{},
	}
	boxes := map[string]bool{}
	for _, b := range l.Mailboxes() {
		boxes[b] = true
	}
	for _, b := range extra {
		boxes[strings.ToLower(b)] = true
	}
	for box := range boxes {
		got, err := m.Messages(box)
		if err != nil {
			return nil, err
		}
		r.Files[box] = got
		want := l.Expected(box)
		r.Expected += len(want)
		wantSet := map[string]bool{}
		for _, id := range want {
			wantSet[id] = true
			switch n := len(got[id]); {
			case n == 0:
				r.Missing[box] = append(r.Missing[box], id)
			case n > 1:
				r.Delivered++
				r.Duplicates[box] = append(r.Duplicates[box], id)
			default:
				r.Delivered++
			}
		}
		for id := range got {
			if !wantSet[id] {
				r.Unexpected[box] = append(r.Unexpected[box], id)
			}
		}
		sort.Strings(r.Unexpected[box])
		if len(r.Unexpected[box]) == 0 {
			delete(r.Unexpected, box)
		}
	}
	return r, nil
}

// WaitDelivered polls until Postfix's queue is empty and every message the
// ledger expects is in its mailboxes, then counts once more (every Dovecot
// user included) and returns the report. The error says what was still
// queued or missing when the timeout passed; a report that is not OK (say,
// duplicates) is not an error here: check Report.OK.
func WaitDelivered(ctx context.Context, p *Postfix, d *Dovecot, l *Ledger, timeout time.Duration) (*Report, error) {
	return WaitDeliveredIn(ctx, p, []*Dovecot{d}, l, timeout)
}

// WaitDeliveredIn is WaitDelivered for mail spread over several Dovecots,
// each serving its own domain (Options.SecondDomain).
func WaitDeliveredIn(ctx context.Context, p *Postfix, ds []*Dovecot, l *Ledger, timeout time.Duration) (*Report, error) {
	md := NewMaildirs(ds[0], ds[1:]...)
	var last *Report
	var queued []QueueEntry
	err := Poll(ctx, timeout, func() (bool, error) {
		q, err := p.Queue(ctx)
		if err != nil {
			return false, err
		}
		queued = q
		r, err := md.Count(l)
		if err != nil {
			return false, err
		}
		last = r
		return len(q) == 0 && len(r.Missing) == 0, nil
	})
	if err != nil {
		if last == nil {
			return nil, err
		}
		return last, fmt.Errorf("not all delivered: %w; postfix queue: %s; %s", err, describeQueue(queued), last)
	}
	var users []string
	for _, d := range ds {
		users = append(users, d.Users()...)
	}
	return md.Count(l, users...)
}

// WaitDelivered is the test form of the package function: it fails the test
// when the deadline passes or the report is not OK, listing missing,
// duplicate and unexpected ids per mailbox.
func (e *Env) WaitDelivered(tb TB, l *Ledger, timeout time.Duration) *Report {
	tb.Helper()
	r, err := WaitDeliveredIn(context.Background(), e.Postfix, e.Dovecots(), l, timeout)
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	if !r.OK() {
		tb.Errorf("e2e: delivery accounting: %s", r)
	}
	return r
}

// MaildirFiles lists the message files of a maildir: new/ and cur/ of INBOX
// and of every folder (".Name"). A maildir that does not exist yet is empty.
func MaildirFiles(maildir string) ([]string, error) {
	dirs := []string{maildir}
	ents, err := os.ReadDir(maildir)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".") {
			dirs = append(dirs, filepath.Join(maildir, e.Name()))
		}
	}
	var files []string
	for _, d := range dirs {
		for _, sub := range []string{"new", "cur"} {
			ents, err := os.ReadDir(filepath.Join(d, sub))
			if err != nil {
				if os.IsNotExist(err) {
					continue
				}
				return nil, err
			}
			for _, e := range ents {
				if !e.IsDir() {
					files = append(files, filepath.Join(d, sub, e.Name()))
				}
			}
		}
	}
	sort.Strings(files)
	return files, nil
}

// CountMaildir returns how many messages a maildir holds (all folders).
func CountMaildir(maildir string) (int, error) {
	f, err := MaildirFiles(maildir)
	return len(f), err
}

// readTestID returns the TestIDHeader value of a message file, reading only
// its header section.
func readTestID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return TestIDOf(bufio.NewReaderSize(f, 16<<10))
}

// TestIDOf returns the TestIDHeader value in a message's header section ("" if
// absent), reading no further than the header section.
func TestIDOf(r *bufio.Reader) (string, error) {
	prefix := []byte(strings.ToLower(TestIDHeader) + ":")
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An enormous header line: not ours; skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 && len(line) > 0 {
			return "", nil // end of the header section
		}
		if len(line) > len(prefix) && bytes.EqualFold(line[:len(prefix)], prefix) {
			return string(bytes.TrimSpace(line[len(prefix):])), nil
		}
		if err == io.EOF {
			return "", nil
		}
		if err != nil {
			return "", err
		}
	}
}

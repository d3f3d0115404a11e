// Package userview is a user's own view of their continuity mailbox, shared by
// the IMAP and POP3 servers: per message (mailbox and UID) its flags (\Seen,
// \Answered, \Flagged, \Deleted, \Draft and keywords) and whether the user has
// removed it (IMAP EXPUNGE, POP3 DELE then QUIT).
//
// Removing a message only hides it from this user's view. The journal keeps its
// copy until retention sweeps it, the other recipients of the message still see
// it, and a message in custody is still replayed to the user's mailbox server
// after the outage: the user deleted it from the continuity mailbox, not from
// their mail (DESIGN.md, "The flow of one message", step 5).
//
// The view lives in the journal's control store (journal.ControlStore), so it
// survives restarts and, later, replicates with the journal. It costs one control
// key per message that has a flag or is hidden, under
//
//	view/<mailbox>/<uid as 10 decimal digits>
//
// (a "/" or "%" in the mailbox name is escaped as %2F, %25), holding a small JSON
// value. A message with no flags that is not hidden has no key. Keys of
// messages that retention swept are removed by Prune.
package userview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// System flags (RFC 3501 §2.3.2). \Recent is a session flag and cannot be stored.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

var systemFlags = []string{FlagSeen, FlagAnswered, FlagFlagged, FlagDeleted, FlagDraft}

// ErrNoMessage is returned for a UID that is not in the user's view: never
// assigned in the mailbox, swept by retention, or hidden. It wraps
// journal.ErrNotFound.
var ErrNoMessage = fmt.Errorf("userview: no such message: %w", journal.ErrNotFound)

// ErrBadFlag is returned for a flag that is not a system flag or a valid keyword.
var ErrBadFlag = errors.New("userview: invalid flag")

// Limits on keywords. The view of every message is stored in the journal's
// control store, on the disk the journal needs for mail: without a bound a
// client repeating "STORE 1:* +FLAGS (k1 ... k8000)" would grow every
// message's value without end. Dovecot's limits are of the same order
// (mail_max_keyword_length = 50; its index holds a few dozen keywords).
const (
	// MaxKeywords is how many keywords one message may carry.
	MaxKeywords = 64
	// MaxKeywordLength is the longest keyword, in bytes.
	MaxKeywordLength = 100
)

// ErrLimit is wrapped by the errors of an update that would exceed a limit:
// ErrTooManyKeywords, ErrKeywordTooLong.
var ErrLimit = errors.New("userview: limit exceeded")

var (
	// ErrTooManyKeywords is returned by an update that would leave a message
	// with more than MaxKeywords keywords (and more than it had).
	ErrTooManyKeywords = fmt.Errorf("%w: more than %d keywords on one message", ErrLimit, MaxKeywords)
	// ErrKeywordTooLong is returned for a keyword longer than MaxKeywordLength.
	ErrKeywordTooLong = fmt.Errorf("%w: keyword longer than %d bytes", ErrLimit, MaxKeywordLength)
)

// Message is one message of a user's view, in UID order.
type Message struct {
	UID      uint32
	ID       journal.ID
	Size     int64
	Received time.Time
	Flags    []string // system flags first, in a fixed order, then keywords sorted
	// Body is where the journal keeps the message's bytes
	// (journal.ItemOpener), zero if it does not say.
	Body journal.BodyRef
}

// Item is what the journal needs to open the message (journal.OpenItem).
func (m Message) Item() journal.MailboxItem {
	return journal.MailboxItem{UID: m.UID, ID: m.ID, Received: m.Received, Size: m.Size, Body: m.Body}
}

// Store reads and writes users' views. It is safe for concurrent use. Flag
// updates of one mailbox are serialised within one Store; two processes
// updating the same message's flags at once (a future distributed journal)
// would see last-writer-wins.
type Store struct {
	j     journal.Journal
	locks [64]sync.Mutex
}

// New returns a Store that keeps views in j's control store.
func New(j journal.Journal) *Store { return &Store{j: j} }

// state is the stored value of one message's view.
type state struct {
	Hidden bool     `json:"h,omitempty"`
	Flags  []string `json:"f,omitempty"`
}

func (st state) empty() bool { return !st.Hidden && len(st.Flags) == 0 }

const keyRoot = "view/"

var nameEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

func prefix(mailbox string) string { return keyRoot + nameEscaper.Replace(mailbox) + "/" }

func key(mailbox string, uid uint32) string {
	return fmt.Sprintf("%s%010d", prefix(mailbox), uid)
}

// parseKey returns the UID of a key under prefix(mailbox).
func parseKey(pfx, k string) (uint32, bool) {
	s, ok := strings.CutPrefix(k, pfx)
	if !ok || len(s) != 10 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint32(n), true
}

func (s *Store) lock(mailbox string) func() {
	h := fnv.New32a()
	h.Write([]byte(mailbox))
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

func (s *Store) states(ctx context.Context, mailbox string) (map[uint32]state, error) {
	pfx := prefix(mailbox)
	out := make(map[uint32]state)
	err := s.j.Controls(ctx, pfx, func(k string, v []byte) error {
		uid, ok := parseKey(pfx, k)
		if !ok {
			return nil
		}
		var st state
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("userview: bad value under %q: %w", k, err)
		}
		out[uid] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("userview: read view of %q: %w", mailbox, err)
	}
	return out, nil
}

func (s *Store) state(ctx context.Context, mailbox string, uid uint32) (state, error) {
	v, err := s.j.Control(ctx, key(mailbox, uid))
	if errors.Is(err, journal.ErrNotFound) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("userview: %w", err)
	}
	var st state
	if err := json.Unmarshal(v, &st); err != nil {
		return state{}, fmt.Errorf("userview: bad value under %q: %w", key(mailbox, uid), err)
	}
	return st, nil
}

func (s *Store) put(ctx context.Context, mailbox string, uid uint32, st state) error {
	var v []byte
	if !st.empty() {
		var err error
		if v, err = json.Marshal(st); err != nil {
			return fmt.Errorf("userview: %w", err)
		}
	}
	if err := s.j.SetControl(ctx, key(mailbox, uid), v); err != nil {
		return fmt.Errorf("userview: store view of %q uid %d: %w", mailbox, uid, err)
	}
	return nil
}

// Messages returns the user's view of a mailbox: every message the journal
// lists for it, minus the hidden ones, in UID order, with their flags. A mailbox
// the journal does not know is empty.
func (s *Store) Messages(ctx context.Context, mailbox string) ([]Message, error) {
	states, err := s.states(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	var out []Message
	err = s.j.List(ctx, mailbox, 1, func(it journal.MailboxItem) error {
		st := states[it.UID]
		if st.Hidden {
			return nil
		}
		out = append(out, Message{UID: it.UID, ID: it.ID, Size: it.Size, Received: it.Received, Flags: st.Flags, Body: it.Body})
		return nil
	})
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("userview: list %q: %w", mailbox, err)
	}
	return out, nil
}

var errStop = errors.New("stop")

// exists reports whether the journal holds uid in mailbox (hidden or not).
func (s *Store) exists(ctx context.Context, mailbox string, uid uint32) (bool, error) {
	if uid == 0 {
		return false, nil
	}
	found := false
	err := s.j.List(ctx, mailbox, uid, func(it journal.MailboxItem) error {
		found = it.UID == uid
		return errStop
	})
	if errors.Is(err, journal.ErrNotFound) {
		return false, nil
	}
	if err != nil && !errors.Is(err, errStop) {
		return false, fmt.Errorf("userview: list %q: %w", mailbox, err)
	}
	return found, nil
}

// Hide removes messages from the user's view (IMAP EXPUNGE, POP3 DELE). Hiding
// a message that is already hidden or no longer in the journal does nothing.
// The journal's copy is kept. Each UID is one durable write; they are issued
// concurrently so that they share the journal's fsyncs.
func (s *Store) Hide(ctx context.Context, mailbox string, uids ...uint32) error {
	defer s.lock(mailbox)()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 16)
	)
	for _, uid := range uids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := s.hide(ctx, mailbox, uid)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Store) hide(ctx context.Context, mailbox string, uid uint32) error {
	ok, err := s.exists(ctx, mailbox, uid)
	if err != nil || !ok {
		return err
	}
	// A hidden message's flags are never read again: keep the value small.
	return s.put(ctx, mailbox, uid, state{Hidden: true})
}

// Flags returns a visible message's flags, ErrNoMessage if it is not in the view.
func (s *Store) Flags(ctx context.Context, mailbox string, uid uint32) ([]string, error) {
	st, err := s.visible(ctx, mailbox, uid)
	return st.Flags, err
}

func (s *Store) visible(ctx context.Context, mailbox string, uid uint32) (state, error) {
	ok, err := s.exists(ctx, mailbox, uid)
	if err != nil {
		return state{}, err
	}
	if !ok {
		return state{}, ErrNoMessage
	}
	st, err := s.state(ctx, mailbox, uid)
	if err != nil {
		return state{}, err
	}
	if st.Hidden {
		return state{}, ErrNoMessage
	}
	return st, nil
}

// SetFlags replaces a message's flags and returns the stored set. Like
// AddFlags it fails with ErrTooManyKeywords, and stores nothing, when the
// message would carry more than MaxKeywords keywords.
func (s *Store) SetFlags(ctx context.Context, mailbox string, uid uint32, flags []string) ([]string, error) {
	return s.update(ctx, mailbox, uid, flags, func(_, add []string) []string { return add })
}

// AddFlags adds flags to a message's flags and returns the stored set.
func (s *Store) AddFlags(ctx context.Context, mailbox string, uid uint32, flags []string) ([]string, error) {
	return s.update(ctx, mailbox, uid, flags, func(old, add []string) []string { return append(slices.Clone(old), add...) })
}

// RemoveFlags removes flags from a message's flags and returns the stored set.
func (s *Store) RemoveFlags(ctx context.Context, mailbox string, uid uint32, flags []string) ([]string, error) {
	return s.update(ctx, mailbox, uid, flags, func(old, rm []string) []string {
		drop := make(map[string]bool, len(rm))
		for _, r := range rm {
			drop[strings.ToLower(r)] = true
		}
		return slices.DeleteFunc(slices.Clone(old), func(f string) bool { return drop[strings.ToLower(f)] })
	})
}

func (s *Store) update(ctx context.Context, mailbox string, uid uint32, flags []string, op func(old, arg []string) []string) ([]string, error) {
	arg, err := canonical(flags)
	if err != nil {
		return nil, err
	}
	defer s.lock(mailbox)()
	st, err := s.visible(ctx, mailbox, uid)
	if err != nil {
		return nil, err
	}
	next, _ := canonical(op(st.Flags, arg))
	if slices.Equal(next, st.Flags) {
		return next, nil
	}
	// A message stored with more keywords than the limit (a limit lowered
	// since) may still lose some.
	if n := keywords(next); n > MaxKeywords && n > keywords(st.Flags) {
		return nil, ErrTooManyKeywords
	}
	st.Flags = next
	if err := s.put(ctx, mailbox, uid, st); err != nil {
		return nil, err
	}
	return next, nil
}

// Prune removes the view keys of a mailbox's messages that the journal no
// longer holds (swept by retention), and returns how many it removed.
func (s *Store) Prune(ctx context.Context, mailbox string) (int, error) {
	defer s.lock(mailbox)()
	states, err := s.states(ctx, mailbox)
	if err != nil || len(states) == 0 {
		return 0, err
	}
	err = s.j.List(ctx, mailbox, 1, func(it journal.MailboxItem) error {
		delete(states, it.UID)
		return nil
	})
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		return 0, fmt.Errorf("userview: list %q: %w", mailbox, err)
	}
	n := 0
	for uid := range states {
		if err := s.put(ctx, mailbox, uid, state{}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// keywords counts the keywords of a canonical flag set.
func keywords(flags []string) int {
	n := 0
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) {
			n++
		}
	}
	return n
}

// canonical validates flags, spells system flags canonically, drops
// duplicates (flags compare case-insensitively, RFC 9051 §2.3.2) and orders
// system flags first, then keywords sorted. It takes time linear in the
// number of flags: a client chooses how many it sends.
func canonical(flags []string) ([]string, error) {
	sys := make([]bool, len(systemFlags))
	var kw []string
	var seen map[string]bool // lower-cased keywords
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			i := slices.IndexFunc(systemFlags, func(s string) bool { return strings.EqualFold(s, f) })
			if i < 0 {
				return nil, fmt.Errorf("%w %q", ErrBadFlag, f)
			}
			sys[i] = true
			continue
		}
		if !validKeyword(f) {
			return nil, fmt.Errorf("%w %q", ErrBadFlag, f)
		}
		if len(f) > MaxKeywordLength {
			return nil, ErrKeywordTooLong
		}
		if seen == nil {
			seen = make(map[string]bool)
		}
		if k := strings.ToLower(f); !seen[k] {
			seen[k] = true
			kw = append(kw, f)
		}
	}
	var out []string
	for i, on := range sys {
		if on {
			out = append(out, systemFlags[i])
		}
	}
	slices.Sort(kw)
	out = append(out, kw...)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// validKeyword: an IMAP atom (RFC 3501 §9, atom-char); its length is checked
// apart (MaxKeywordLength), a limit rather than a syntax error.
func validKeyword(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

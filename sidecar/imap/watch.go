package imap

import (
	"errors"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifelinemail/lifeline/journal"
)

// The journal has no change notification, so new mail is found by asking it.
// A session asks once per command (one cheap Mailbox read, in Poll). While
// sessions IDLE on a mailbox (RFC 2177), one poller per journal mailbox asks
// every Options.PollInterval and wakes them all when the mailbox's UIDNEXT or
// message count moved. Changes this Server makes itself (flags, expunges,
// APPEND) bump the mailbox's generation and wake the idlers at once.

// watches is the registry of watched journal mailboxes.
type watches struct {
	srv *Server
	mu  sync.Mutex
	m   map[string]*watch
}

// watch is one journal mailbox that sessions have selected.
type watch struct {
	ws  *watches
	box string
	// gen counts changes that a session's incremental refresh would not
	// see: flags and expunges made by this Server's sessions.
	gen atomic.Uint64

	// Guarded by ws.mu.
	refs     int                        // views selecting it
	idlers   map[chan struct{}]struct{} // IDLE wake-ups, one slot each
	stopPoll chan struct{}              // closes the poller; nil when none runs
}

func newWatches(s *Server) *watches { return &watches{srv: s, m: map[string]*watch{}} }

// get returns the watch of box, registering one more view on it.
func (ws *watches) get(box string) *watch {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[box]
	if w == nil {
		w = &watch{ws: ws, box: box, idlers: map[chan struct{}]struct{}{}}
		ws.m[box] = w
	}
	w.refs++
	return w
}

// put releases a view's reference.
func (w *watch) put() {
	ws := w.ws
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w.refs--
	if w.refs == 0 && len(w.idlers) == 0 && ws.m[w.box] == w {
		delete(ws.m, w.box)
	}
}

// changed records a change made by this Server and wakes the idlers.
func (w *watch) changed() uint64 {
	g := w.gen.Add(1)
	w.notify()
	return g
}

func (w *watch) notify() {
	w.ws.mu.Lock()
	defer w.ws.mu.Unlock()
	for ch := range w.idlers {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// addIdler registers an IDLE and starts the mailbox's poller if it is the
// first. It runs inside a registered backend call, so the poller's Add to the
// server's WaitGroup never races with Shutdown's Wait.
func (w *watch) addIdler() chan struct{} {
	ch := make(chan struct{}, 1)
	ws := w.ws
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w.idlers[ch] = struct{}{}
	if w.stopPoll == nil {
		w.stopPoll = make(chan struct{})
		ws.srv.wg.Add(1)
		go w.poll(w.stopPoll)
	}
	return ch
}

func (w *watch) removeIdler(ch chan struct{}) {
	ws := w.ws
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(w.idlers, ch)
	if len(w.idlers) == 0 && w.stopPoll != nil {
		close(w.stopPoll)
		w.stopPoll = nil
	}
	if w.refs == 0 && len(w.idlers) == 0 && ws.m[w.box] == w {
		delete(ws.m, w.box)
	}
}

// poll asks the journal for the mailbox's counts every PollInterval and wakes
// the idlers when they moved (new mail, or retention swept some).
func (w *watch) poll(stop <-chan struct{}) {
	s := w.ws.srv
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			s.log.Error("imap: panic in mailbox poller", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	var last journal.MailboxInfo
	first := true
	for {
		select {
		case <-stop:
			return
		case <-s.done:
			return
		case <-t.C:
		}
		info, err := s.opts.Journal.Mailbox(s.ctx, w.box)
		if err != nil && !errors.Is(err, journal.ErrNotFound) {
			s.log.Warn("imap: polling mailbox", "mailbox", w.box, "err", err)
			continue
		}
		// The first tick always wakes: mail may have arrived between an
		// idler's own check and the poller's start.
		if first || info != last {
			first, last = false, info
			w.notify()
		}
	}
}

package imap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/lifelinemail/lifeline/journal"
)

// A FETCH of many messages reads them from the journal ahead of the one
// being written, in goroutines of its own: reading a message (a record and a
// chunk looked up, a chunk decompressed) costs more than sending it, and the
// two then overlap instead of alternating. Only messages of at most
// prefetchMax bytes are read ahead, each whole into a pooled buffer, and at
// most prefetchWindow of them at a time, so that a FETCH holds at most
// prefetchWindow × prefetchMax bytes of read-ahead; larger messages are
// streamed from the journal when their turn comes, as before. A few
// goroutines per FETCH do the reading (prefetchWorkers), not one per message:
// a fresh goroutine's stack grows through Badger's calls every time.
//
// A message read ahead is served from its buffer; one whose read failed is
// opened again when its turn comes, so that an error (a message swept
// meanwhile, a journal that closed) is met and reported exactly where it
// would have been without read-ahead.
const (
	prefetchMax     = 64 << 10
	prefetchWindow  = 16
	prefetchWorkers = 2 // at most GOMAXPROCS
)

var prefetchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// prefetched is one message read ahead.
type prefetched struct {
	done chan struct{}
	buf  *[]byte // the whole message, nil if the read failed
}

// prefetcher reads the messages of one FETCH ahead of the writer.
type prefetcher struct {
	ss     *session
	ctx    context.Context
	cancel context.CancelFunc
	msgs   []journal.MailboxItem // per position in the command; zero ID: not read ahead
	items  []*prefetched         // per position, set when started
	next   int                   // next position to start
	todo   chan int              // positions for the workers; nil until the first
	wg     sync.WaitGroup
}

// newPrefetcher returns a prefetcher for messages msgs (by position), or nil
// when there is nothing to read ahead.
func newPrefetcher(ctx context.Context, ss *session, msgs []journal.MailboxItem) *prefetcher {
	if len(msgs) < 2 {
		return nil // nothing to overlap with
	}
	ctx, cancel := context.WithCancel(ctx)
	return &prefetcher{ss: ss, ctx: ctx, cancel: cancel, msgs: msgs, items: make([]*prefetched, len(msgs))}
}

// get returns the message at position k of the command read whole, or nil;
// release must be called with what it returned once the message's response
// is written. It starts reading the messages up to prefetchWindow positions
// ahead.
func (p *prefetcher) get(k int) *prefetched {
	if p == nil {
		return nil
	}
	for p.next < len(p.msgs) && p.next < k+prefetchWindow {
		p.start(p.next)
		p.next++
	}
	it := p.items[k]
	if it == nil {
		return nil
	}
	<-it.done
	return it
}

func (p *prefetcher) start(k int) {
	if p.msgs[k].ID.IsZero() || p.msgs[k].Size > prefetchMax {
		return
	}
	if p.todo == nil {
		// At most prefetchWindow positions are started and not yet taken
		// by get, so sending never blocks.
		p.todo = make(chan int, prefetchWindow)
		for range max(1, min(prefetchWorkers, runtime.GOMAXPROCS(0))) {
			p.wg.Add(1)
			go p.work()
		}
	}
	p.items[k] = &prefetched{done: make(chan struct{})}
	p.todo <- k
}

// work reads the messages of the positions it is sent.
func (p *prefetcher) work() {
	defer p.wg.Done()
	for k := range p.todo {
		p.readItem(k)
	}
}

func (p *prefetcher) readItem(k int) {
	it := p.items[k]
	defer close(it.done)
	defer func() {
		if r := recover(); r != nil {
			p.ss.srv.metrics.panics.Inc()
			p.ss.log.Error("imap: panic reading ahead", "panic", r, "stack", string(debug.Stack()))
			it.buf = nil
		}
	}()
	it.buf = p.read(p.msgs[k])
}

// read reads message id whole, or returns nil.
func (p *prefetcher) read(m journal.MailboxItem) *[]byte {
	size := m.Size
	if r, ok := p.ss.srv.opts.Journal.(journal.ItemReader); ok {
		bp := prefetchBufs.Get().(*[]byte)
		b, done, err := r.ReadItem(p.ctx, m, (*bp)[:0])
		switch {
		case done && err == nil:
			*bp = b
			return bp
		case done:
			putPrefetchBuf(bp)
			return nil
		}
		putPrefetchBuf(bp)
	}
	rc, err := journal.OpenItem(p.ctx, p.ss.srv.opts.Journal, m)
	if err != nil {
		return nil
	}
	bp := prefetchBufs.Get().(*[]byte)
	if int64(cap(*bp)) < size {
		b := make([]byte, 0, size)
		bp = &b
	}
	b := (*bp)[:size]
	_, err = io.ReadFull(rc, b)
	if err == nil {
		// The journal's size must be the message's: anything else is
		// left to the reading without read-ahead to report.
		var one [1]byte
		if n, rerr := rc.Read(one[:]); n != 0 || !errors.Is(rerr, io.EOF) {
			err = fmt.Errorf("message %s longer than %d bytes", m.ID, size)
		}
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		putPrefetchBuf(bp)
		return nil
	}
	*bp = b
	return bp
}

// release gives back a message's buffer.
func (p *prefetcher) release(it *prefetched) {
	if it != nil && it.buf != nil {
		putPrefetchBuf(it.buf)
		it.buf = nil
	}
}

func putPrefetchBuf(bp *[]byte) {
	if cap(*bp) > prefetchMax {
		return
	}
	*bp = (*bp)[:0]
	prefetchBufs.Put(bp)
}

// stop cancels the reads still running, waits for them and releases every
// buffer not handed out.
func (p *prefetcher) stop() {
	if p == nil {
		return
	}
	p.cancel()
	if p.todo != nil {
		close(p.todo)
	}
	p.wg.Wait()
	for _, it := range p.items {
		p.release(it)
	}
}

// aheadBytes returns message id whole if it was read ahead, or nil.
func (f *fetcher) aheadBytes(id journal.ID) []byte {
	if it := f.ahead; it != nil && it.buf != nil && f.aheadID == id {
		return *it.buf
	}
	return nil
}

// open opens message id for reading: from the buffer it was read ahead into,
// or from the journal.
func (f *fetcher) open(ctx context.Context, m *vmsg) (io.ReadCloser, error) {
	if b := f.aheadBytes(m.id); b != nil {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	rc, err := journal.OpenItem(ctx, f.ss.srv.opts.Journal, m.item())
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return rc, nil
}

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
// being written, in goroutines of its own: reading a message (a chunk looked
// up and decompressed) costs more than sending it, and the two then overlap
// instead of alternating. Only messages of at most prefetchMax bytes are read
// ahead, whole, into pooled buffers; larger ones are streamed from the journal
// when their turn comes.
//
// They are read in batches of consecutive positions, each with one
// journal.ItemReader call, which walks the stored bodies in their order in one
// snapshot instead of looking each one up (BenchmarkReadItems in package
// badgerjournal); a message it does not read that way (several chunks, an
// index entry of journal format 2, a journal that is no ItemReader) is read
// through a reader instead. The first batch is small, so that the first
// response does not wait for many messages; each next one is twice as large,
// up to prefetchBatch positions, and ends once its buffers, counted by their
// capacity, reach prefetchBatchBytes. At most prefetchAhead batches are read
// beyond the one being written: a FETCH holds at most (prefetchAhead+1) ×
// (prefetchBatchBytes + one large buffer) of read-ahead, about 1.7 MiB.
// A few goroutines per FETCH do the reading (prefetchWorkers), not one per
// batch: a fresh goroutine's stack grows through Badger's calls every time.
//
// A message read ahead is served from its buffer; one that was not read
// (gone, a read that failed) is opened when its turn comes, so that an error
// (a message swept meanwhile, a journal that closed) is met and reported
// exactly where it would have been without read-ahead.
const (
	prefetchMax        = 64 << 10
	prefetchFirst      = 4
	prefetchBatch      = 32
	prefetchBatchBytes = 512 << 10
	prefetchAhead      = 2
	prefetchWorkers    = 2 // at most GOMAXPROCS
)

// Read-ahead buffers come in two sizes, so that a small message does not hold
// a large buffer: the small ones take messages of up to smallBuf-bufSlack
// bytes, the large ones the rest up to prefetchMax. bufSlack leaves the room
// past the message that a decoder may want (badgerjournal's decodeSlack).
const (
	bufSlack = 1 << 10
	smallBuf = 16 << 10
	largeBuf = prefetchMax + bufSlack
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 0, smallBuf); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, 0, largeBuf); return &b }}
)

// bufFor returns a pooled buffer for a message of size bytes.
func bufFor(size int64) *[]byte {
	if size <= smallBuf-bufSlack {
		return smallBufs.Get().(*[]byte)
	}
	return largeBufs.Get().(*[]byte)
}

// bufCap is the capacity of the buffer bufFor gives for size bytes.
func bufCap(size int64) int64 {
	if size <= smallBuf-bufSlack {
		return smallBuf
	}
	return largeBuf
}

// putBuf gives a buffer back to its pool; one of another capacity (a
// journal's own) is left to the garbage collector.
func putBuf(bp *[]byte) {
	switch cap(*bp) {
	case smallBuf:
		*bp = (*bp)[:0]
		smallBufs.Put(bp)
	case largeBuf:
		*bp = (*bp)[:0]
		largeBufs.Put(bp)
	}
}

// batch is the messages at positions [start, end) of a command, read ahead.
type batch struct {
	start, end int
	done       chan struct{}
	bufs       []*[]byte // per position: the whole message, nil if not read
}

// prefetcher reads the messages of one FETCH ahead of the writer.
type prefetcher struct {
	ss      *session
	r       journal.ItemReader // nil if the journal is none
	ctx     context.Context
	cancel  context.CancelFunc
	msgs    []journal.MailboxItem // per position in the command; zero ID: not read ahead
	batches []*batch              // started, in position order; nil once released
	cur     int                   // index in batches of the one holding the current position
	next    int                   // first position of the next batch to start
	todo    chan *batch           // batches for the workers; nil until the first
	wg      sync.WaitGroup
}

// newPrefetcher returns a prefetcher for messages msgs (by position), or nil
// when there is nothing to read ahead.
func newPrefetcher(ctx context.Context, ss *session, msgs []journal.MailboxItem) *prefetcher {
	if len(msgs) < 2 {
		return nil // nothing to overlap with
	}
	r, _ := ss.srv.opts.Journal.(journal.ItemReader)
	ctx, cancel := context.WithCancel(ctx)
	return &prefetcher{ss: ss, r: r, ctx: ctx, cancel: cancel, msgs: msgs}
}

// get returns the message at position k of the command read whole, or nil.
// Positions are asked for in increasing order; the buffer stays valid until
// get is asked for a position past its batch, or stop. It starts reading
// the batches up to prefetchAhead beyond k's.
func (p *prefetcher) get(k int) []byte {
	if p == nil {
		return nil
	}
	for p.cur < len(p.batches) && p.batches[p.cur].end <= k {
		b := p.batches[p.cur]
		<-b.done // waited for already, unless positions were skipped
		p.release(b)
		p.batches[p.cur] = nil
		p.cur++
	}
	for p.next < len(p.msgs) && len(p.batches)-p.cur <= prefetchAhead {
		p.start()
	}
	if p.cur == len(p.batches) {
		return nil
	}
	b := p.batches[p.cur]
	if k < b.start {
		return nil
	}
	<-b.done
	if bp := b.bufs[k-b.start]; bp != nil {
		return *bp
	}
	return nil
}

// readable reports whether the message at position k is one to read ahead.
func (p *prefetcher) readable(k int) bool {
	return !p.msgs[k].ID.IsZero() && p.msgs[k].Size <= prefetchMax
}

// start starts the next batch.
func (p *prefetcher) start() {
	b := &batch{start: p.next, done: make(chan struct{})}
	limit := min(prefetchBatch, prefetchFirst<<min(len(p.batches), 8))
	var held int64
	some := false
	for b.end = b.start; b.end < len(p.msgs) && b.end-b.start < limit && held < prefetchBatchBytes; b.end++ {
		if p.readable(b.end) {
			held += bufCap(p.msgs[b.end].Size)
			some = true
		}
	}
	p.next = b.end
	b.bufs = make([]*[]byte, b.end-b.start)
	p.batches = append(p.batches, b)
	if !some {
		close(b.done)
		return
	}
	if p.todo == nil {
		// At most prefetchAhead+1 batches are started and not yet
		// released by get, so sending never blocks.
		p.todo = make(chan *batch, prefetchAhead+1)
		for range max(1, min(prefetchWorkers, runtime.GOMAXPROCS(0))) {
			p.wg.Add(1)
			go p.work()
		}
	}
	p.todo <- b
}

// work reads the batches it is sent.
func (p *prefetcher) work() {
	defer p.wg.Done()
	for b := range p.todo {
		p.readBatch(b)
	}
}

func (p *prefetcher) readBatch(b *batch) {
	defer close(b.done)
	defer func() {
		if r := recover(); r != nil {
			p.ss.srv.metrics.panics.Inc()
			p.ss.log.Error("imap: panic reading ahead", "panic", r, "stack", string(debug.Stack()))
			p.release(b)
		}
	}()
	var pos []int // positions in the batch to read
	for k := b.start; k < b.end; k++ {
		if p.readable(k) {
			pos = append(pos, k)
		}
	}
	if p.r != nil {
		p.readItems(b, pos)
	}
	// What the journal did not read in one pass is read through a reader
	// (which fails again, at the cost of a look-up, for a message gone).
	for _, k := range pos {
		if p.ctx.Err() != nil {
			return
		}
		if b.bufs[k-b.start] == nil {
			b.bufs[k-b.start] = p.read(p.msgs[k])
		}
	}
}

// readItems reads the messages at positions pos of b with one ReadItems.
func (p *prefetcher) readItems(b *batch, pos []int) {
	items := make([]journal.MailboxItem, len(pos))
	for n, k := range pos {
		items[n] = p.msgs[k]
	}
	taken := make([]*[]byte, len(pos)) // pooled buffers handed to the journal
	err := p.r.ReadItems(p.ctx, items, func(n int) []byte {
		bp := bufFor(items[n].Size)
		taken[n] = bp
		return (*bp)[:0]
	}, func(n int, msg []byte) {
		bp := taken[n]
		if bp == nil { // a journal that did not ask for a buffer
			bp = new([]byte)
		}
		taken[n] = nil
		*bp = msg
		b.bufs[pos[n]-b.start] = bp
	})
	for _, bp := range taken {
		if bp != nil {
			putBuf(bp)
		}
	}
	if err != nil {
		// What was read is served; the rest is opened in turn, and the
		// error met there.
		p.ss.log.Debug("imap: reading ahead", "err", err)
	}
}

// read reads message m whole through a reader, or returns nil.
func (p *prefetcher) read(m journal.MailboxItem) *[]byte {
	rc, err := journal.OpenItem(p.ctx, p.ss.srv.opts.Journal, m)
	if err != nil {
		return nil
	}
	bp := bufFor(m.Size)
	b := (*bp)[:m.Size]
	_, err = io.ReadFull(rc, b)
	if err == nil {
		// The journal's size must be the message's: anything else is
		// left to the reading without read-ahead to report.
		var one [1]byte
		if n, rerr := rc.Read(one[:]); n != 0 || !errors.Is(rerr, io.EOF) {
			err = fmt.Errorf("message %s longer than %d bytes", m.ID, m.Size)
		}
	}
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		putBuf(bp)
		return nil
	}
	*bp = b
	return bp
}

// release gives back a batch's buffers.
func (p *prefetcher) release(b *batch) {
	for k, bp := range b.bufs {
		if bp != nil {
			putBuf(bp)
			b.bufs[k] = nil
		}
	}
}

// stop cancels the reads still running, waits for them and releases every
// buffer not released yet.
func (p *prefetcher) stop() {
	if p == nil {
		return
	}
	p.cancel()
	if p.todo != nil {
		close(p.todo)
	}
	p.wg.Wait()
	for _, b := range p.batches {
		if b != nil {
			p.release(b)
		}
	}
}

// aheadBytes returns message id whole if it was read ahead, or nil.
func (f *fetcher) aheadBytes(id journal.ID) []byte {
	if f.aheadID == id {
		return f.ahead
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

// Package badgerjournal is the embedded journal.Journal backend: one Badger
// database in one directory, used by one process.
//
// # Durability and group commit
//
// Badger is opened with SyncWrites, so every transaction commit returns only after
// Badger has msync'ed its write-ahead log (and the value log). Badger v4 does not
// share that sync between concurrent transactions: its writer goroutine batches
// pending commits but syncs the memtable WAL once per transaction (db.go,
// writeToLSM), so N concurrent one-message transactions cost N syncs. This
// package therefore does the grouping itself: every mutation (an append's
// metadata, a batch of a large body's chunks, a state change, a sweep deletion)
// is an op handed to one writer goroutine, which applies every op waiting at that
// moment to one Badger transaction and commits it with one sync (writer.go).
// While that sync runs, the next ops queue up and form the next group, so the
// number of syncs per second stays at what the disk allows and the messages per
// sync grow with concurrency.
//
// # Crash ordering
//
// A message small enough (FlushSize compressed) is one op: its chunks, record and
// indexes are one transaction and are durable together or not at all. A larger
// body streams: every FlushSize of compressed chunks is written as an op of its
// own, and its first such op also writes a pending marker (p key) for the body.
// Append waits for each chunk op to be committed, i.e. synced, before it submits
// the next one and before it submits the message record, which also deletes the
// marker. The writer commits groups one after the other, each synced before the
// next starts. So the record can never be durable before its chunks: a crash
// leaves either the complete message or chunks with their marker and no record.
// Such leftovers, and those of an append that failed or found a duplicate after
// writing chunks, are deleted at once when possible and otherwise by Sweep; the
// marker makes them cheap to find and tells Verify they are expected. This
// relies only on Badger's own guarantee that a synced commit survives a crash,
// not on the order in which the kernel writes back mmap'ed pages.
//
// # Memory
//
// An append holds one raw chunk (ChunkSize), at most two flush batches of
// compressed chunks (2 × FlushSize) and the MIME parser's state, which does not
// grow with the body (mimestruct: a header line, the header fields it keeps,
// the parts found); a reader holds one decoded chunk. Badger's
// memtables, block and index caches are sized down (Options) so that an idle
// journal stays small. Values of ValueThreshold bytes or more (compressed chunks)
// go to Badger's value log, which is written through mmap: the pages a large
// message writes are clean page cache mapped into the process and count in its
// RSS until the kernel reclaims them, although they are not heap.
package badgerjournal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/skl"
	"github.com/klauspost/compress/zstd"

	"github.com/lifelinemail/lifeline/journal"
)

// Options configure a journal. The zero value is usable: every zero field takes
// the default given beside it.
type Options struct {
	// Logger receives the journal's and Badger's messages; Badger's chatter at
	// open and close is logged at Debug. Default: discard.
	Logger *slog.Logger

	// Clock gives the time for Entry.Stored, Recipient.Updated, UIDVALIDITY and
	// a zero Envelope.Received. Default: time.Now.
	Clock func() time.Time

	// ChunkSize is how many raw bytes of a message are compressed together and
	// stored as one value. Default 256 KiB.
	ChunkSize int

	// FlushSize is how many compressed bytes of a body an append collects before
	// writing them ahead of the message record; a message that compresses to less
	// is written in one transaction with its record. Default 2 MiB.
	FlushSize int

	// MaxMessageSize makes Append fail with journal.ErrTooLarge beyond it.
	// Default 1 GiB.
	MaxMessageSize int64

	// MemTableSize is Badger's memtable size; it also bounds one transaction to
	// 15% of it. Each memtable's arena is allocated whole and counts in the Go
	// heap, which raises the garbage collector's target. Default 8 MiB
	// (Badger's own default is 64 MiB).
	MemTableSize int64

	// BlockCacheSize and IndexCacheSize are Badger's caches. Defaults 8 MiB each.
	BlockCacheSize int64
	IndexCacheSize int64

	// ValueLogFileSize is the size of one Badger value-log file; garbage
	// collection rewrites whole files, so smaller files reclaim space sooner.
	// Default 256 MiB.
	ValueLogFileSize int64

	// MinFree is the free space (bytes available to this user on the journal's
	// filesystem) that Append keeps in reserve: below it, Append fails with
	// journal.ErrDiskFull before writing. Badger writes its value log, WAL and
	// tables through memory maps of sparse files, and a write through a map
	// onto a full filesystem kills the process with SIGBUS (measured on
	// tmpfs); the reserve leaves room for a group commit, a memtable flush and
	// compactions. Default 256 MiB; negative disables the check.
	MinFree int64

	// ValueThreshold: values this large or larger (compressed chunks, mostly)
	// live in the value log rather than in the LSM tree. Default 4 KiB.
	ValueThreshold int64
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 256 << 10
	}
	if o.FlushSize <= 0 {
		o.FlushSize = 2 << 20
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 1 << 30
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 8 << 20
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 8 << 20
	}
	if o.IndexCacheSize <= 0 {
		o.IndexCacheSize = 8 << 20
	}
	if o.ValueLogFileSize <= 0 {
		o.ValueLogFileSize = 256 << 20
	}
	if o.MinFree == 0 {
		o.MinFree = 256 << 20
	}
	if o.ValueThreshold <= 0 {
		o.ValueThreshold = 4 << 10
	}
}

// maxChunkSize bounds ChunkSize and what the decoder will inflate one chunk to,
// so that a corrupt chunk cannot make a reader allocate without bound.
const maxChunkSize = 16 << 20

// Journal is a journal.Journal stored in Badger.
type Journal struct {
	dir  string
	db   *badger.DB
	opts Options
	log  *slog.Logger
	// smallChunk is the constant smallChunk (chunk.go); BenchmarkOpen sets
	// it to 0 to measure zstd chunks beside S2 ones.
	smallChunk int
	enc        *zstd.Encoder
	dec        *zstd.Decoder
	bodySeq    *badger.Sequence
	limits     txnLimits

	ops        chan *op
	writerDone chan struct{}

	// active counts the calls using the database; Close sets closed and waits
	// for active to drop to zero. (Not an RWMutex: a call may enter again
	// while inside, e.g. an Append reading from a reader of this journal, and
	// a pending Close must make that fail, not deadlock.)
	mu     sync.Mutex
	idle   *sync.Cond // signalled when active drops to zero after closed
	active int
	closed bool
	// closing is closed when Close starts, so that long walks (Sweep, Verify)
	// stop instead of holding Close up.
	closing   chan struct{}
	closeOnce sync.Once

	// inflight holds the body ids of appends that have written chunks and not
	// finished: Sweep must not take their chunks for orphans.
	inflightMu sync.Mutex
	inflight   map[uint64]struct{}

	// bufs pools *chunkBufs.
	bufs sync.Pool
	// readBufs pools the decoded-chunk buffers of readers (*[]byte), so that
	// reading one small message after another allocates nothing per chunk.
	readBufs sync.Pool

	// commits and grouped count transactions committed and the ops in them, so
	// that tests (and later metrics) can see how many ops share a sync.
	commits, grouped atomic.Int64

	// beforeRecord, if set (by tests), is called by Append after the body's
	// chunks written ahead are committed and before the record is submitted.
	beforeRecord func(body uint64, flushed int)
}

var _ journal.Journal = (*Journal)(nil)
var _ journal.MessageIDIndex = (*Journal)(nil)
var _ journal.ItemOpener = (*Journal)(nil)
var _ journal.ItemReader = (*Journal)(nil)

// Open opens (creating if needed) the journal in dir. Badger locks the
// directory: a second Open of it, in this process or another, fails.
func Open(dir string, opts Options) (_ *Journal, err error) {
	opts.setDefaults()
	if opts.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("badgerjournal: ChunkSize %d over %d", opts.ChunkSize, maxChunkSize)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("badgerjournal: %w", err)
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{opts.Logger}).
		WithSyncWrites(true).
		// Every write goes through the single writer goroutine, which serialises
		// them: Badger's conflict detection would only cost memory.
		WithDetectConflicts(false).
		// Badger's metrics are process-wide expvars; two journals in one test
		// would share them.
		WithMetricsEnabled(false).
		// Most of what the tables hold is compressed already (chunks under
		// ValueThreshold are zstd frames): compressing their blocks again
		// only costs a decompression and an allocation per read of a block
		// that is not in the block cache. Tables written compressed before
		// keep their compression (the manifest records it per table) and
		// the block cache, until compaction rewrites them.
		WithCompression(options.None).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(3).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithIndexCacheSize(opts.IndexCacheSize).
		WithValueLogFileSize(opts.ValueLogFileSize).
		WithValueThreshold(opts.ValueThreshold).
		WithNumCompactors(2)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("badgerjournal: opening %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			if cerr := db.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("badgerjournal: closing after failed open: %w", cerr))
			}
		}
	}()

	j := &Journal{
		dir:        dir,
		db:         db,
		opts:       opts,
		log:        opts.Logger,
		limits:     newTxnLimits(opts.MemTableSize, opts.ValueThreshold),
		ops:        make(chan *op, 256),
		writerDone: make(chan struct{}),
		closing:    make(chan struct{}),
		inflight:   make(map[uint64]struct{}),
		smallChunk: smallChunk,
	}
	j.idle = sync.NewCond(&j.mu)
	if err := j.checkFormat(); err != nil {
		return nil, err
	}
	j.enc, err = zstd.NewWriter(nil,
		// Fastest: the milter answers only after the append, and mail compresses
		// about as well at this level (base64 attachments barely compress at all).
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		// Entropy-code literals even in blocks without matches: base64
		// attachments, most of a large message's bytes, then shrink to 3/4
		// instead of being stored raw.
		zstd.WithAllLitEntropyCompression(true),
		zstd.WithWindowSize(windowFor(opts.ChunkSize)),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("badgerjournal: zstd encoder: %w", err)
	}
	j.dec, err = zstd.NewReader(nil,
		// Not the low-memory mode: its buffers sized exactly to each block
		// make the decoder take its slower exact-copy path, which cost a
		// fifth of a small message's read (BenchmarkOpen); the full-size
		// buffers are a few hundred KiB per decoder, at most four decoders.
		zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxMemory(maxChunkSize))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("badgerjournal: zstd decoder: %w", err), j.enc.Close())
	}
	// A lease of 1000 ids is written (synced) once per 1000 bodies; ids lost in a
	// crash are skipped, never reused.
	j.bodySeq, err = db.GetSequence([]byte(keyBodySeq), 1000)
	if err != nil {
		j.dec.Close()
		return nil, errors.Join(fmt.Errorf("badgerjournal: body sequence: %w", err), j.enc.Close())
	}
	j.bufs.New = func() any {
		return &chunkBufs{
			raw:     make([]byte, opts.ChunkSize),
			scratch: make([]byte, 0, j.enc.MaxEncodedSize(opts.ChunkSize)),
		}
	}
	go j.writer()
	return j, nil
}

// windowFor returns the zstd window for chunks of n bytes: a power of two at
// least n (each chunk is compressed alone, a larger window only costs memory).
func windowFor(n int) int {
	w := zstd.MinWindowSize
	for w < n && w < zstd.MaxWindowSize {
		w <<= 1
	}
	return w
}

// checkFormat stamps a new journal with the format version and refuses one
// written in another format.
func (j *Journal) checkFormat() error {
	err := j.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyFormat))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set([]byte(keyFormat), encodeUint64(formatVersion))
		}
		if err != nil {
			return err
		}
		var n uint64
		err = item.Value(func(v []byte) error {
			var err error
			if n, err = decodeUint64(v); err != nil || (n != formatVersion && n != formatVersionOld) {
				return fmt.Errorf("journal format %x, this program reads %d and %d", v, formatVersionOld, formatVersion)
			}
			return nil
		})
		if err != nil || n == formatVersion {
			return err
		}
		j.log.Info("journal: format upgraded", "from", n, "to", formatVersion)
		return txn.Set([]byte(keyFormat), encodeUint64(formatVersion))
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: %w", err)
	}
	return nil
}

// enter starts a call: it fails once Close has begun and otherwise holds Close
// off until exit.
func (j *Journal) enter() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return journal.ErrClosed
	}
	j.active++
	return nil
}

func (j *Journal) exit() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.active--
	if j.active == 0 && j.closed {
		j.idle.Broadcast()
	}
}

// stopping returns ErrClosed once Close has begun and ctx's error once it is
// done; long walks call it between batches.
func (j *Journal) stopping(ctx context.Context) error {
	select {
	case <-j.closing:
		return journal.ErrClosed
	default:
		return ctx.Err()
	}
}

// Close waits for the calls in progress (a Sweep or Verify stops at its next
// batch), stops the writer and closes the database. Closing twice is a no-op.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() { close(j.closing) })
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	for j.active > 0 {
		j.idle.Wait()
	}
	j.mu.Unlock()

	// No call is in progress and none can start, so nobody sends on ops.
	close(j.ops)
	<-j.writerDone

	var errs []error
	if err := j.bodySeq.Release(); err != nil {
		errs = append(errs, fmt.Errorf("badgerjournal: releasing body sequence: %w", err))
	}
	if err := j.enc.Close(); err != nil {
		errs = append(errs, fmt.Errorf("badgerjournal: closing encoder: %w", err))
	}
	j.dec.Close()
	if err := j.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("badgerjournal: closing database: %w", err))
	}
	return errors.Join(errs...)
}

func (j *Journal) markInflight(body uint64) {
	j.inflightMu.Lock()
	j.inflight[body] = struct{}{}
	j.inflightMu.Unlock()
}

func (j *Journal) unmarkInflight(body uint64) {
	j.inflightMu.Lock()
	delete(j.inflight, body)
	j.inflightMu.Unlock()
}

func (j *Journal) isInflight(body uint64) bool {
	j.inflightMu.Lock()
	defer j.inflightMu.Unlock()
	_, ok := j.inflight[body]
	return ok
}

// txnLimits mirror Badger's per-transaction limits (db.go: maxBatchSize is 15%
// of the memtable, maxBatchCount that over skl.MaxNodeSize) with a margin, so
// that the writer starts a new transaction before Badger says ErrTxnTooBig.
type txnLimits struct {
	size, count int64
	threshold   int64
}

func newTxnLimits(memTable, threshold int64) txnLimits {
	maxSize := 15 * memTable / 100
	return txnLimits{
		size:      maxSize * 9 / 10,
		count:     maxSize / int64(skl.MaxNodeSize) * 9 / 10,
		threshold: threshold,
	}
}

// estimate is what Badger's Txn.checkSize counts for one entry.
func (l txnLimits) estimate(key, value []byte) int64 {
	v := int64(len(value))
	if v >= l.threshold {
		v = 12 // a value pointer into the value log
	}
	return int64(len(key)) + v + 2 + 10
}

// badgerLogger puts Badger's log lines into slog. Badger is chatty at Info
// (every table opened, every replay), so Info goes to Debug; its Debug, written
// for every commit, goes below Debug and is normally dropped before formatting.
type badgerLogger struct{ l *slog.Logger }

const levelTrace = slog.LevelDebug - 4

func (b badgerLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	msg := fmt.Sprintf(format, args...)
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	b.l.Log(ctx, level, msg, "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any)   { b.logf(slog.LevelError, f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.logf(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.logf(slog.LevelDebug, f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.logf(levelTrace, f, a...) }

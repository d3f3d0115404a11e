package badgerjournal

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// pageSize is how many items a listing reads per read transaction. Callbacks run
// between pages, outside any transaction and outside enter/exit, so that a slow
// callback (replay delivering over LMTP) neither pins a Badger snapshot nor holds
// Close up, and may call the journal itself.
const pageSize = 256

// view runs fn in a read transaction inside enter/exit.
func (j *Journal) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	if err := j.stopping(ctx); err != nil {
		return err
	}
	if err := j.enter(); err != nil {
		return err
	}
	defer j.exit()
	return j.db.View(fn)
}

// Get implements journal.Journal.
func (j *Journal) Get(ctx context.Context, id journal.ID) (journal.Entry, error) {
	var e journal.Entry
	err := j.view(ctx, func(txn *badger.Txn) error {
		rec, err := getRecord(txn, id)
		if err != nil {
			return err
		}
		e = rec.entry(id)
		return nil
	})
	if err != nil {
		return journal.Entry{}, fmt.Errorf("badgerjournal: get: %w", err)
	}
	return e, nil
}

// Open implements journal.Journal. The reader decodes one chunk at a time, each
// in its own read transaction, so it holds one chunk in memory and never a
// snapshot. The first chunk is read in the transaction that reads the record:
// a message of one chunk (most mail) costs one transaction. If the message is
// swept while it is read, Read fails with journal.ErrNotFound; once the
// journal is closed, with journal.ErrClosed. ctx is checked before each chunk.
func (j *Journal) Open(ctx context.Context, id journal.ID) (io.ReadCloser, error) {
	r := &bodyReader{j: j, ctx: ctx, id: id}
	err := j.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(messageKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("message %s: %w", id, journal.ErrNotFound)
		}
		if err != nil {
			return err
		}
		err = item.Value(func(v []byte) error {
			h, err := decodeRecordHead(v)
			r.body, r.chunks, r.size = h.Body, h.Chunks, h.Size
			return err
		})
		if err != nil {
			return fmt.Errorf("message %s: %w", id, err)
		}
		if r.chunks > 0 {
			r.takeBuf()
			return r.loadIn(txn)
		}
		return nil
	})
	if err != nil {
		r.release()
		return nil, fmt.Errorf("badgerjournal: open: %w", err)
	}
	return r, nil
}

// OpenItem implements journal.ItemOpener: with the body's place from the
// mailbox index, it reads the chunks without looking the record up (one
// Badger lookup of two for a small message). An item without it (written
// by format 2) is opened by ID.
func (j *Journal) OpenItem(ctx context.Context, it journal.MailboxItem) (io.ReadCloser, error) {
	if it.Body.IsZero() {
		return j.Open(ctx, it.ID)
	}
	r := &bodyReader{j: j, ctx: ctx, id: it.ID, body: it.Body.N, chunks: int(it.Body.Chunks), size: it.Size}
	if r.chunks == 0 {
		return r, nil
	}
	r.takeBuf()
	if err := j.view(ctx, r.loadIn); err != nil {
		r.release()
		return nil, fmt.Errorf("badgerjournal: open: message %s: %w", it.ID, err)
	}
	return r, nil
}

// ReadItems implements journal.ItemReader for messages of one chunk: in one
// snapshot, in the order of their bodies, with one iterator. Bodies appended
// one after the other are neighbours among the chunk keys, and stepping to the
// next key costs about a tenth of a lookup of it (BenchmarkReadItems: 10,000
// messages of 4 KiB). Each chunk is decoded straight into the caller's buffer.
func (j *Journal) ReadItems(ctx context.Context, items []journal.MailboxItem, buf func(k int) []byte, got func(k int, msg []byte)) error {
	order := make([]int, 0, len(items))
	for k, it := range items {
		if !it.Body.IsZero() && it.Body.Chunks == 1 {
			order = append(order, k)
		}
	}
	if len(order) == 0 {
		return nil
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(items[a].Body.N, items[b].Body.N) })
	err := j.view(ctx, func(txn *badger.Txn) error {
		// One message: a lookup, which its bloom filters make cheaper
		// than an iterator's seek.
		var it *badger.Iterator
		if len(order) > 1 {
			it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagChunk}})
			defer it.Close()
		}
		want := make([]byte, 0, 1+8+4)
		for n, k := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			m := items[k]
			want = appendChunkKey(want[:0], m.Body.N, 0)
			var item *badger.Item
			if it == nil {
				var err error
				if item, err = txn.Get(want); err != nil {
					continue // gone, or unreadable: the caller meets that when it opens it
				}
			} else if seekForward(it, want, n == 0) {
				item = it.Item()
			} else {
				continue // gone (swept meanwhile): the caller meets that when it opens it
			}
			dst := buf(k)
			if need := int(m.Size) + decodeSlack; cap(dst) < need {
				dst = make([]byte, 0, need)
			}
			err := item.Value(func(v []byte) error {
				var err error
				dst, err = j.decodeChunk(dst, v)
				return err
			})
			// A chunk that does not decode to the listed size is left to the
			// caller's open, which reports it.
			if err == nil && int64(len(dst)) == m.Size {
				got(k, dst)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: read: %w", err)
	}
	return nil
}

// seekSteps is how many keys seekForward steps over before it seeks instead:
// a Seek costs about as much as eight steps (BenchmarkReadItems).
const seekSteps = 8

// seekForward moves it to key, which is not before its position unless first
// (then it seeks), and reports whether the key is there.
func seekForward(it *badger.Iterator, key []byte, first bool) bool {
	if first {
		it.Seek(key)
	} else {
		for n := 0; it.Valid() && bytes.Compare(it.Item().Key(), key) < 0; n++ {
			if n == seekSteps {
				it.Seek(key)
				break
			}
			it.Next()
		}
	}
	return it.Valid() && bytes.Equal(it.Item().Key(), key)
}

// Structure implements journal.Journal. A structure stored by a parser whose
// encoding this one does not read (mimestruct.ErrVersion) is reported as
// journal.ErrNotFound, so that the caller parses the message again.
func (j *Journal) Structure(ctx context.Context, id journal.ID) (*mimestruct.Info, error) {
	var v []byte
	err := j.view(ctx, func(txn *badger.Txn) error {
		var ok bool
		var err error
		v, ok, err = get(txn, structureKey(id))
		if err == nil && !ok {
			err = fmt.Errorf("structure of message %s: %w", id, journal.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("badgerjournal: %w", err)
	}
	info := &mimestruct.Info{}
	if err := info.UnmarshalBinary(v); errors.Is(err, mimestruct.ErrVersion) {
		return nil, fmt.Errorf("badgerjournal: structure of message %s: %w: %w", id, journal.ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("badgerjournal: structure of message %s: %w", id, err)
	}
	return info, nil
}

// decodeSlack is room left past a decoded chunk in a reader's buffer: zstd
// decodes with whole-word copies, which overrun by up to 32 bytes, only when
// the buffer has it, and with slower exact copies otherwise.
const decodeSlack = 64

type bodyReader struct {
	j      *Journal
	ctx    context.Context
	id     journal.ID
	body   uint64
	chunks int
	size   int64

	next int    // next chunk to load
	buf  []byte // the current chunk, decoded
	off  int    // read position in buf
	read int64  // bytes decoded so far
	err  error  // sticky: io.EOF at the end
}

func (r *bodyReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.err != nil {
			return 0, r.err
		}
		r.load()
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// WriteTo lets io.Copy take the decoded chunks without another copy.
func (r *bodyReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.off < len(r.buf) {
			n, err := w.Write(r.buf[r.off:])
			r.off += n
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		if r.err != nil {
			if errors.Is(r.err, io.EOF) {
				return total, nil
			}
			return total, r.err
		}
		r.load()
	}
}

// load decodes the next chunk into buf, or sets err.
func (r *bodyReader) load() {
	r.buf, r.off = r.buf[:0], 0
	if r.next == r.chunks {
		if r.read != r.size {
			r.err = fmt.Errorf("badgerjournal: message %s: %d bytes stored, record says %d: %w", r.id, r.read, r.size, io.ErrUnexpectedEOF)
		} else {
			r.err = io.EOF
		}
		return
	}
	err := r.j.view(r.ctx, r.loadIn)
	if err != nil {
		r.err = fmt.Errorf("badgerjournal: message %s: %w", r.id, err)
	}
}

// loadIn decodes chunk r.next into buf in txn.
func (r *bodyReader) loadIn(txn *badger.Txn) error {
	item, err := txn.Get(chunkKey(r.body, r.next))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("chunk %d gone: %w", r.next, journal.ErrNotFound)
	}
	if err != nil {
		return err
	}
	err = item.Value(func(v []byte) error {
		var err error
		r.buf, err = r.j.decodeChunk(r.buf, v)
		return err
	})
	if err != nil {
		r.buf = r.buf[:0]
		return err
	}
	r.next++
	r.read += int64(len(r.buf))
	return nil
}

// takeBuf gives r a buffer from the journal's pool with room for its first
// chunk and the slack past it that lets the decoder copy in whole words
// (zstd's fast path).
func (r *bodyReader) takeBuf() {
	if bp, ok := r.j.readBufs.Get().(*[]byte); ok {
		r.buf = (*bp)[:0]
	}
	if need := int(min(r.size, int64(r.j.opts.ChunkSize))) + decodeSlack; cap(r.buf) < need {
		r.buf = make([]byte, 0, need)
	}
}

// Close releases the buffer; later reads fail.
func (r *bodyReader) Close() error {
	r.release()
	if r.err == nil || errors.Is(r.err, io.EOF) {
		r.err = errors.New("badgerjournal: read after close")
	}
	return nil
}

// release gives the buffer back to the journal's pool; nothing may use it
// after (WriteTo hands it only to Write, which must not keep it).
func (r *bodyReader) release() {
	if r.buf != nil && cap(r.buf) <= r.j.opts.ChunkSize+64<<10 {
		b := r.buf[:0]
		r.j.readBufs.Put(&b)
	}
	r.buf, r.off = nil, 0
}

// paged walks the keys under prefix from start, pageSize items per read
// transaction so that no transaction stays open while callers work. decode
// turns an item into a value, or reports more=false to end the walk early; fn
// runs outside the transaction and its error is returned as it is. before, if
// set, runs in the first transaction (a precondition such as "the mailbox
// exists"). Errors from reading are wrapped with op.
func paged[T any](ctx context.Context, j *Journal, op string, prefix, start []byte,
	before func(txn *badger.Txn) error,
	decode func(txn *badger.Txn, item *badger.Item) (v T, more bool, err error),
	fn func(T) error) error {
	for first := true; ; first = false {
		var page []T
		var next []byte
		err := j.view(ctx, func(txn *badger.Txn) error {
			if first && before != nil {
				if err := before(txn); err != nil {
					return err
				}
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(start); it.Valid(); it.Next() {
				item := it.Item()
				if len(page) == pageSize {
					next = item.KeyCopy(nil)
					return nil
				}
				v, more, err := decode(txn, item)
				if err != nil {
					return err
				}
				if !more {
					return nil
				}
				page = append(page, v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("badgerjournal: %s: %w", op, err)
		}
		for _, v := range page {
			if err := fn(v); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		start = next
	}
}

// Scan implements journal.Journal. Entries are in the order of
// Envelope.Received, then arrival: the order of arrival when the MTA's clock
// does not step back.
func (j *Journal) Scan(ctx context.Context, since, until time.Time, fn func(journal.Entry) error) error {
	return paged(ctx, j, "scan", []byte{tagTime}, timePrefix(since), nil,
		func(txn *badger.Txn, item *badger.Item) (journal.Entry, bool, error) {
			t, _, ok := parseTimeKey(item.Key())
			if !ok {
				return journal.Entry{}, false, fmt.Errorf("bad time index key %x", item.Key())
			}
			if !until.IsZero() && !t.Before(until) {
				return journal.Entry{}, false, nil
			}
			id, err := indexedID(item)
			if err != nil {
				return journal.Entry{}, false, err
			}
			rec, err := getRecord(txn, id)
			if err != nil {
				return journal.Entry{}, false, fmt.Errorf("time index: %w", err)
			}
			return rec.entry(id), true, nil
		}, fn)
}

// indexedID reads the message ID an index entry holds (the first 16 bytes of
// its value).
func indexedID(item *badger.Item) (journal.ID, error) {
	var id journal.ID
	err := item.Value(func(v []byte) error {
		if len(v) < len(id) {
			return fmt.Errorf("index entry %x: bad value", item.Key())
		}
		copy(id[:], v)
		return nil
	})
	return id, err
}

// Mailbox implements journal.Journal.
func (j *Journal) Mailbox(ctx context.Context, name string) (journal.MailboxInfo, error) {
	var info journal.MailboxInfo
	err := j.view(ctx, func(txn *badger.Txn) error {
		mb, ok, err := getMailbox(txn, name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("mailbox %q: %w", name, journal.ErrNotFound)
		}
		info = journal.MailboxInfo{Name: name, UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext, Messages: int(mb.Messages)}
		return nil
	})
	if err != nil {
		return journal.MailboxInfo{}, fmt.Errorf("badgerjournal: %w", err)
	}
	return info, nil
}

// CreateMailbox implements journal.Journal.
func (j *Journal) CreateMailbox(ctx context.Context, name string) (journal.MailboxInfo, error) {
	if name == "" {
		return journal.MailboxInfo{}, errors.New("badgerjournal: create mailbox: empty name")
	}
	info, err := j.Mailbox(ctx, name)
	if err == nil || !errors.Is(err, journal.ErrNotFound) {
		return info, err
	}
	if err := j.enter(); err != nil {
		return journal.MailboxInfo{}, err
	}
	defer j.exit()
	// Looked up again inside the write: an append may have created it since.
	err = j.do(ctx, func(txn *badger.Txn, w *writes) error {
		mb, ok, err := getMailbox(txn, name)
		if err != nil {
			return err
		}
		if !ok {
			st, err := getStats(txn)
			if err != nil {
				return fmt.Errorf("reading stats: %w", err)
			}
			mb = mailbox{UIDValidity: uidValidity(j.opts.Clock()), UIDNext: 1}
			st.Mailboxes++
			w.set(mailboxKey(name), mb.encode())
			w.set([]byte(keyStats), st.encode())
		}
		info = journal.MailboxInfo{Name: name, UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext, Messages: int(mb.Messages)}
		return nil
	})
	if err != nil {
		return journal.MailboxInfo{}, fmt.Errorf("badgerjournal: create mailbox %q: %w", name, err)
	}
	return info, nil
}

// Mailboxes implements journal.Journal.
func (j *Journal) Mailboxes(ctx context.Context, fn func(name string) error) error {
	return paged(ctx, j, "mailboxes", []byte{tagMailbox}, []byte{tagMailbox}, nil,
		func(_ *badger.Txn, item *badger.Item) (string, bool, error) {
			return string(item.Key()[1:]), true, nil
		}, fn)
}

// List implements journal.Journal. It returns journal.ErrNotFound for a mailbox
// that never held a message.
func (j *Journal) List(ctx context.Context, name string, fromUID uint32, fn func(journal.MailboxItem) error) error {
	exists := func(txn *badger.Txn) error {
		if _, ok, err := getMailbox(txn, name); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("mailbox %q: %w", name, journal.ErrNotFound)
		}
		return nil
	}
	return paged(ctx, j, "list", uidPrefix(name), uidKey(name, fromUID), exists,
		func(_ *badger.Txn, bi *badger.Item) (journal.MailboxItem, bool, error) {
			_, uid, ok := parseUIDKey(bi.Key())
			if !ok {
				return journal.MailboxItem{}, false, fmt.Errorf("bad mailbox index key %x", bi.Key())
			}
			var mi item
			err := bi.Value(func(v []byte) error {
				var err error
				mi, err = decodeItem(v)
				return err
			})
			if err != nil {
				return journal.MailboxItem{}, false, fmt.Errorf("mailbox %q uid %d: %w", name, uid, err)
			}
			return journal.MailboxItem{UID: uid, ID: mi.ID, Received: mi.Received, Size: mi.Size,
				Body: journal.BodyRef{N: mi.Body, Chunks: mi.Chunks}}, true, nil
		}, fn)
}

// Custody implements journal.Journal from the q index, which Append and
// SetState keep in step with the recipients' states.
func (j *Journal) Custody(ctx context.Context, fromSeq uint64, fn func(journal.CustodyItem) error) error {
	return paged(ctx, j, "custody", []byte{tagCustody}, custodyKey(fromSeq, 0), nil,
		func(_ *badger.Txn, item *badger.Item) (journal.CustodyItem, bool, error) {
			seq, rcpt, ok := parseCustodyKey(item.Key())
			if !ok {
				return journal.CustodyItem{}, false, fmt.Errorf("bad custody key %x", item.Key())
			}
			ci := journal.CustodyItem{Seq: seq, Rcpt: rcpt}
			err := item.Value(func(v []byte) error { return parseCustodyValue(v, &ci) })
			return ci, err == nil, err
		}, fn)
}

// ByMessageID implements journal.MessageIDIndex.
func (j *Journal) ByMessageID(ctx context.Context, msgid string, fn func(journal.ID) error) error {
	mid := indexedMessageID(msgid)
	if mid == "" {
		return nil
	}
	var ids []journal.ID
	err := j.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: msgIDPrefix(mid)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			// The prefix also matches longer Message-IDs' keys only if the length
			// differs, which is part of the prefix: every hit is this msgid.
			id, err := indexedID(it.Item())
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: by message-id: %w", err)
	}
	for _, id := range ids {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

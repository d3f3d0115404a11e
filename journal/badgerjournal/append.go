package badgerjournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
)

// chunk is one compressed chunk of a body waiting to be written.
type chunk struct {
	n    int
	data []byte
}

// Append implements journal.Journal. See the package comment for how the body is
// chunked and how its writes are ordered.
func (j *Journal) Append(ctx context.Context, env journal.Envelope, r io.Reader) (journal.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, err
	}
	if err := j.enter(); err != nil {
		return journal.AppendResult{}, err
	}
	defer j.exit()
	if err := j.checkFree(); err != nil {
		return journal.AppendResult{}, err
	}

	now := j.opts.Clock()
	env, boxes, err := prepareEnvelope(env, now)
	if err != nil {
		return journal.AppendResult{}, err
	}
	body, err := j.nextBody()
	if err != nil {
		return journal.AppendResult{}, err
	}

	a := &appending{j: j, ctx: ctx, body: body, parser: mimestruct.NewParser()}
	h := journal.NewIdentityHasher()
	if err := a.stream(r, h); err != nil {
		return journal.AppendResult{}, errors.Join(err, a.abandon())
	}
	if err := a.structure(); err != nil {
		return journal.AppendResult{}, errors.Join(err, a.abandon())
	}
	id := h.ID(env)
	rec := &record{
		Size:    h.Size(),
		Body:    body,
		Chunks:  a.chunks,
		Env:     env,
		Summary: h.Summary(),
	}
	if j.beforeRecord != nil {
		j.beforeRecord(body, a.flushed)
	}
	dup := false
	err = j.do(ctx, func(txn *badger.Txn, w *writes) error {
		var err error
		dup, err = j.applyAppend(txn, w, id, rec, boxes, a)
		return err
	})
	if err != nil {
		// Whether or not the record was applied, its transaction did not commit:
		// the chunks written ahead are orphans.
		return journal.AppendResult{}, errors.Join(fmt.Errorf("badgerjournal: append %s: %w", id, err), a.abandon())
	}
	if a.flushed > 0 {
		// Committed with the record (or deleted with the duplicate): the chunks
		// are no longer in flight.
		j.unmarkInflight(body)
	}
	if dup {
		j.log.Debug("journal duplicate", "id", id, "queue_id", env.QueueID)
	}
	return journal.AppendResult{ID: id, Duplicate: dup}, nil
}

// prepareEnvelope checks env and fills in what the caller left zero. It copies
// the recipients, so that the caller's slices are never shared with a record,
// and returns the distinct mailboxes in recipient order.
func prepareEnvelope(env journal.Envelope, now time.Time) (journal.Envelope, []string, error) {
	if len(env.Recipients) > 1<<16-1 {
		return env, nil, fmt.Errorf("badgerjournal: %d recipients: %w", len(env.Recipients), journal.ErrTooLarge)
	}
	if env.Received.IsZero() {
		env.Received = now
	}
	rcpts := make([]journal.Recipient, len(env.Recipients))
	var boxes []string
	seen := make(map[string]bool)
	for i, rc := range env.Recipients {
		if !rc.State.Valid() {
			return env, nil, fmt.Errorf("badgerjournal: recipient %d (%s): %w: state %s", i, rc.Address, journal.ErrInvalidState, rc.State)
		}
		if rc.Updated.IsZero() {
			rc.Updated = now
		}
		rc.Mailboxes = append([]string(nil), rc.Mailboxes...)
		for _, m := range rc.Mailboxes {
			if m == "" || len(m) > maxNameLen {
				return env, nil, fmt.Errorf("badgerjournal: recipient %d (%s): bad mailbox name %q", i, rc.Address, m)
			}
			if !seen[m] {
				seen[m] = true
				boxes = append(boxes, m)
			}
		}
		rcpts[i] = rc
	}
	env.Recipients = rcpts
	return env, boxes, nil
}

// nextBody returns a fresh body id. Badger's sequences start at 0, which is
// skipped so that 0 never names a body.
func (j *Journal) nextBody() (uint64, error) {
	for {
		n, err := j.bodySeq.Next()
		if err != nil {
			return 0, fmt.Errorf("badgerjournal: body id: %w", err)
		}
		if n != 0 {
			return n, nil
		}
	}
}

// chunkBufs are an append's working buffers: a raw chunk and room to compress
// it. They are pooled because zeroing half a megabyte per 4 KiB message would
// cost more than the rest of the append.
type chunkBufs struct {
	raw, scratch []byte
}

// appending is the state of one append's body while it streams.
type appending struct {
	j       *Journal
	ctx     context.Context
	body    uint64
	chunks  int     // chunks made so far
	flushed int     // chunks handed to the writer ahead of the record
	pending []chunk // chunks not handed to the writer yet
	batch   []chunk // the chunks of the op in progress (flushing)
	// free holds the buffers of the last committed batch, reused for the next
	// chunks so that a large message does not leave its size in garbage.
	free [][]byte
	// flushing is the result channel of the chunk op in progress, nil if none.
	flushing <-chan error
	// parser computes the MIME structure from the stream; encoded is what
	// structure made of it, stored with the record.
	parser  *mimestruct.Parser
	encoded []byte
}

// stream reads the message, feeds the identity hasher and compresses it chunk by
// chunk, writing every FlushSize of compressed chunks ahead of the record.
func (a *appending) stream(r io.Reader, h *journal.IdentityHasher) error {
	j := a.j
	bufs := j.bufs.Get().(*chunkBufs)
	defer j.bufs.Put(bufs)
	// Compress into scratch and keep an exact-size copy: pending chunks then hold
	// only their compressed bytes, however well or badly they compressed.
	buf, scratch := bufs.raw, bufs.scratch
	// Flush when the pending chunks take FlushSize of memory, or a quarter of
	// what Badger lets one transaction hold (chunks under ValueThreshold count in
	// full there, larger ones as a pointer).
	pendingBytes, pendingCost := 0, int64(0)
	var size int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			size += int64(n)
			if size > j.opts.MaxMessageSize {
				return fmt.Errorf("badgerjournal: message over %d bytes: %w", j.opts.MaxMessageSize, journal.ErrTooLarge)
			}
			h.Write(buf[:n])
			// The structure is computed from the same pieces as they pass,
			// so that a large body is never held for it.
			if _, err := a.parser.Write(buf[:n]); err != nil {
				return fmt.Errorf("badgerjournal: computing the MIME structure: %w", err)
			}
			scratch = j.encodeChunk(scratch, buf[:n])
			c := append(a.buffer(len(scratch)), scratch...)
			a.pending = append(a.pending, chunk{n: a.chunks, data: c})
			a.chunks++
			pendingBytes += len(c)
			pendingCost += j.limits.estimate(chunkKey(a.body, 0), c)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("badgerjournal: reading message: %w", err)
		}
		if err := a.ctx.Err(); err != nil {
			return err
		}
		if pendingBytes >= j.opts.FlushSize || pendingCost >= j.limits.size/4 {
			if err := a.flush(); err != nil {
				return err
			}
			pendingBytes, pendingCost = 0, 0
		}
	}
	return a.wait()
}

// structure ends the parser and encodes the message's structure. Its size is
// bounded by mimestruct's limits whatever the message, far below what a Badger
// value may hold.
func (a *appending) structure() error {
	info, err := a.parser.Close()
	if err != nil {
		return fmt.Errorf("badgerjournal: computing the MIME structure: %w", err)
	}
	a.encoded, err = info.MarshalBinary()
	if err != nil {
		return fmt.Errorf("badgerjournal: encoding the MIME structure: %w", err)
	}
	return nil
}

// flush hands the pending chunks to the writer. It first waits for the previous
// batch, so that at most two batches are in memory, and so that each batch is
// durable before the next one (and the record) is submitted.
func (a *appending) flush() error {
	if err := a.wait(); err != nil {
		return err
	}
	j := a.j
	// A large message may fill the disk while it streams in: look again
	// before each batch.
	if err := j.checkFree(); err != nil {
		return err
	}
	first := a.flushed == 0
	if first {
		j.markInflight(a.body)
	}
	batch, body := a.pending, a.body
	a.pending, a.batch = nil, batch
	a.flushed += len(batch)
	a.flushing = j.submit(a.ctx, func(_ *badger.Txn, w *writes) error {
		if first {
			w.set(pendingKey(body), nil)
		}
		for _, c := range batch {
			w.set(chunkKey(body, c.n), c.data)
		}
		return nil
	})
	return nil
}

// wait waits for the chunk op in progress, if any.
func (a *appending) wait() error {
	if a.flushing == nil {
		return nil
	}
	err := <-a.flushing
	a.flushing = nil
	if err != nil {
		return fmt.Errorf("badgerjournal: writing chunks: %w", err)
	}
	// Committed: Badger has copied the values into its logs and holds no
	// reference to them any more.
	for _, c := range a.batch {
		a.free = append(a.free, c.data)
	}
	a.batch = nil
	return nil
}

// buffer returns an empty slice with room for n bytes, from the free list if it
// holds one large enough. New buffers get an eighth more room, rounded up to
// 4 KiB, so that the next chunks, which compress to about the same size but
// rarely exactly, fit in them.
func (a *appending) buffer(n int) []byte {
	for len(a.free) > 0 {
		b := a.free[len(a.free)-1]
		a.free = a.free[:len(a.free)-1]
		if cap(b) >= n {
			return b[:0]
		}
	}
	return make([]byte, 0, (n+n/8+4095)&^4095)
}

// abandon deletes what a failed append wrote ahead of its record. If that fails
// too, the pending marker stays and Sweep deletes the chunks later.
func (a *appending) abandon() error {
	if a.flushing != nil {
		<-a.flushing // its outcome does not matter: everything written goes
		a.flushing = nil
	}
	if a.flushed == 0 {
		return nil
	}
	j := a.j
	defer j.unmarkInflight(a.body)
	body, n := a.body, a.flushed
	err := j.do(context.Background(), func(_ *badger.Txn, w *writes) error {
		w.del(pendingKey(body))
		for i := range n {
			w.del(chunkKey(body, i))
		}
		return nil
	})
	if err != nil {
		j.log.Warn("journal: could not delete the chunks of a failed append; Sweep will", "body", body, "err", err)
		return fmt.Errorf("badgerjournal: deleting chunks of a failed append: %w", err)
	}
	return nil
}

// applyAppend stores a message unless its identity is stored already. It runs in
// the writer (see op).
func (j *Journal) applyAppend(txn *badger.Txn, w *writes, id journal.ID, in *record, boxes []string, a *appending) (dup bool, err error) {
	_, found, err := get(txn, messageKey(id))
	if err != nil {
		return false, err
	}
	if found {
		// Stored already: nothing of this offer stays, not even the chunks that
		// were written ahead.
		if a.flushed > 0 {
			w.del(pendingKey(a.body))
			for i := range a.flushed {
				w.del(chunkKey(a.body, i))
			}
		}
		return true, nil
	}

	seq, err := getUint64(txn, []byte(keySeq))
	if err != nil {
		return false, fmt.Errorf("reading sequence: %w", err)
	}
	seq++
	st, err := getStats(txn)
	if err != nil {
		return false, fmt.Errorf("reading stats: %w", err)
	}
	now := j.opts.Clock()
	rec := *in
	rec.Seq = seq
	rec.Stored = now
	rec.Boxes = make([]boxUID, 0, len(boxes))
	received := rec.Env.Received
	for _, name := range boxes {
		mb, ok, err := getMailbox(txn, name)
		if err != nil {
			return false, err
		}
		if !ok {
			mb = mailbox{UIDValidity: uidValidity(now), UIDNext: 1}
			st.Mailboxes++
		}
		if mb.UIDNext == 0 { // wrapped: 2^32 messages in one mailbox
			return false, fmt.Errorf("mailbox %q: UIDs exhausted", name)
		}
		uid := mb.UIDNext
		mb.UIDNext++
		mb.Messages++
		w.set(mailboxKey(name), mb.encode())
		w.set(uidKey(name, uid), item{ID: id, Received: received, Size: rec.Size, Body: rec.Body, Chunks: uint32(rec.Chunks)}.encode())
		rec.Boxes = append(rec.Boxes, boxUID{Name: name, UID: uid})
	}
	st.Messages++
	st.BytesRaw += rec.Size

	w.set([]byte(keySeq), encodeUint64(seq))
	w.set([]byte(keyStats), st.encode())
	w.set(messageKey(id), rec.encode())
	w.set(structureKey(id), a.encoded)
	w.set(seqKey(seq), id[:])
	w.set(timeKey(received, seq), id[:])
	if mid := indexedMessageID(rec.Summary.MessageID); mid != "" {
		w.set(msgIDKey(mid, seq), id[:])
	}
	for i, rc := range rec.Env.Recipients {
		if rc.State.Undelivered() {
			w.set(custodyKey(seq, i), custodyValue(id, &rc))
		}
	}
	if a.flushed > 0 {
		w.del(pendingKey(a.body))
	}
	for _, c := range a.pending {
		w.set(chunkKey(a.body, c.n), c.data)
	}
	return false, nil
}

// uidValidity derives a mailbox's UIDVALIDITY from its creation time: nonzero
// (RFC 3501 §2.3.1.1 needs a nonzero 32-bit value) and different if the journal
// is ever recreated, so that IMAP clients drop their caches then.
func uidValidity(now time.Time) uint32 {
	if v := uint32(now.Unix()); v != 0 {
		return v
	}
	return 1
}

// custodyValue is a q entry's value: what replay needs to decide whether the
// recipient is due, without reading the message record.
func custodyValue(id journal.ID, rc *journal.Recipient) []byte {
	v := make([]byte, 0, len(id)+1+8+len(rc.Server))
	v = append(v, id[:]...)
	v = append(v, byte(rc.State))
	var next int64
	if !rc.NextAttempt.IsZero() {
		next = rc.NextAttempt.UnixNano()
	}
	v = binary.BigEndian.AppendUint64(v, uint64(next))
	return append(v, rc.Server...)
}

func parseCustodyValue(v []byte, ci *journal.CustodyItem) error {
	if len(v) < len(ci.ID)+1+8 {
		return fmt.Errorf("bad custody value %x", v)
	}
	copy(ci.ID[:], v)
	v = v[len(ci.ID):]
	ci.State = journal.State(v[0])
	if next := int64(binary.BigEndian.Uint64(v[1:9])); next != 0 {
		ci.NextAttempt = time.Unix(0, next)
	}
	ci.Server = string(v[9:])
	return nil
}

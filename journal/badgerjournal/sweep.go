package badgerjournal

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// sweepBatch is how many messages Sweep examines per round. Each message is one
// op, so the writer packs a round into as few transactions as the size limits
// allow and appends running at the same time join the same groups.
const sweepBatch = 128

type sweepOutcome uint8

const (
	sweepGone    sweepOutcome = iota // removed meanwhile by someone else
	sweepRemoved                     // removed now
	sweepKept                        // old, but a recipient is undelivered
	sweepYoung                       // not older than the horizon
)

// Sweep implements journal.Journal. It walks the time index up to horizon,
// removes each message that may go (with its structure, chunks, index entries
// and mailbox entries, and the counters adjusted), deletes the chunks of
// appends that never committed (crash leftovers), then runs Badger's value-log
// GC until it finds nothing to rewrite. It is safe while appends run: every decision is made
// again in the writer, on the current state, when the deletion is applied.
//
// Badger learns which value-log entries are garbage only when its compactions
// drop the deleted keys, so the space of what this sweep removed is reclaimed by
// a later sweep, once the journal's ongoing writes have driven those
// compactions; a journal that receives no mail does not shrink.
func (j *Journal) Sweep(ctx context.Context, horizon time.Time) (journal.SweepResult, error) {
	var res journal.SweepResult
	start := []byte{tagTime}
	end := timePrefix(horizon)
	for {
		var ids []journal.ID
		var next []byte
		err := j.view(ctx, func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagTime}})
			defer it.Close()
			for it.Seek(start); it.Valid(); it.Next() {
				item := it.Item()
				if string(item.Key()) >= string(end) {
					return nil
				}
				if len(ids) == sweepBatch {
					next = item.KeyCopy(nil)
					return nil
				}
				id, err := indexedID(item)
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("badgerjournal: sweep: %w", err)
		}
		outcomes, err := j.sweepMessages(ctx, ids, horizon)
		for _, o := range outcomes {
			switch o {
			case sweepRemoved:
				res.Removed++
			case sweepKept:
				res.Kept++
			}
		}
		if err != nil {
			return res, fmt.Errorf("badgerjournal: sweep: %w", err)
		}
		if next == nil {
			break
		}
		start = next
	}

	orphans, err := j.sweepOrphans(ctx)
	if err != nil {
		return res, fmt.Errorf("badgerjournal: sweep: %w", err)
	}
	if err := j.collectValueLog(ctx); err != nil {
		return res, fmt.Errorf("badgerjournal: sweep: %w", err)
	}
	j.log.Info("journal swept", "horizon", horizon, "removed", res.Removed, "kept", res.Kept, "orphans", orphans)
	return res, nil
}

// sweepMessages submits one removal op per message and waits for them all.
func (j *Journal) sweepMessages(ctx context.Context, ids []journal.ID, horizon time.Time) ([]sweepOutcome, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if err := j.stopping(ctx); err != nil {
		return nil, err
	}
	if err := j.enter(); err != nil {
		return nil, err
	}
	defer j.exit()
	outcomes := make([]sweepOutcome, len(ids))
	dones := make([]<-chan error, len(ids))
	for i, id := range ids {
		dones[i] = j.submit(ctx, func(txn *badger.Txn, w *writes) error {
			var err error
			outcomes[i], err = j.applyRemove(txn, w, id, horizon)
			return err
		})
	}
	var errs []error
	for i, done := range dones {
		if err := <-done; err != nil {
			outcomes[i] = sweepGone
			errs = append(errs, fmt.Errorf("removing %s: %w", ids[i], err))
		}
	}
	return outcomes, errors.Join(errs...)
}

// applyRemove removes one message if it is older than horizon and no recipient
// is undelivered. It runs in the writer (see op).
func (j *Journal) applyRemove(txn *badger.Txn, w *writes, id journal.ID, horizon time.Time) (sweepOutcome, error) {
	v, ok, err := get(txn, messageKey(id))
	if err != nil || !ok {
		return sweepGone, err
	}
	rec, err := decodeRecord(v)
	if err != nil {
		return sweepGone, fmt.Errorf("message %s: %w", id, err)
	}
	if !rec.Env.Received.Before(horizon) {
		return sweepYoung, nil
	}
	for _, rc := range rec.Env.Recipients {
		if rc.State.Undelivered() {
			return sweepKept, nil
		}
	}
	st, err := getStats(txn)
	if err != nil {
		return sweepGone, fmt.Errorf("reading stats: %w", err)
	}
	st.Messages--
	st.BytesRaw -= rec.Size
	for _, b := range rec.Boxes {
		mb, ok, err := getMailbox(txn, b.Name)
		if err != nil {
			return sweepGone, err
		}
		if ok {
			// The mailbox record stays even when empty: its UIDVALIDITY and
			// UIDNEXT must survive so that UIDs are never reused.
			mb.Messages--
			w.set(mailboxKey(b.Name), mb.encode())
		}
		w.del(uidKey(b.Name, b.UID))
	}
	w.set([]byte(keyStats), st.encode())
	w.del(messageKey(id))
	w.del(structureKey(id)) // nothing to delete for a message older than structures
	w.del(seqKey(rec.Seq))
	w.del(timeKey(rec.Env.Received, rec.Seq))
	if mid := indexedMessageID(rec.Summary.MessageID); mid != "" {
		w.del(msgIDKey(mid, rec.Seq))
	}
	for i := range rec.Chunks {
		w.del(chunkKey(rec.Body, i))
	}
	return sweepRemoved, nil
}

// sweepOrphans deletes the chunks of every body with a pending marker whose
// append is not in flight: an append that crashed, or failed and could not
// clean up. It returns how many bodies it deleted.
func (j *Journal) sweepOrphans(ctx context.Context) (int, error) {
	var bodies []uint64
	err := j.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagPending}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if b, ok := parsePendingKey(it.Item().Key()); ok {
				bodies = append(bodies, b)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, body := range bodies {
		if j.isInflight(body) {
			continue
		}
		if err := j.stopping(ctx); err != nil {
			return removed, err
		}
		if err := j.enter(); err != nil {
			return removed, err
		}
		did := false
		err := j.do(ctx, func(txn *badger.Txn, w *writes) error {
			did = false
			// In the writer: an append that marks itself in flight from now on has
			// a new body id, and one that committed has deleted the marker.
			if j.isInflight(body) {
				return nil
			}
			if _, ok, err := get(txn, pendingKey(body)); err != nil || !ok {
				return err
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: chunkPrefix(body)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				w.del(it.Item().KeyCopy(nil))
			}
			w.del(pendingKey(body))
			did = true
			return nil
		})
		j.exit()
		if err != nil {
			return removed, fmt.Errorf("deleting orphaned body %d: %w", body, err)
		}
		if did {
			j.log.Info("journal: deleted the chunks of an append that never committed", "body", body)
			removed++
		}
	}
	return removed, nil
}

// collectValueLog runs Badger's value-log GC until it has nothing to rewrite.
func (j *Journal) collectValueLog(ctx context.Context) error {
	for {
		if err := j.stopping(ctx); err != nil {
			return err
		}
		if err := j.enter(); err != nil {
			return err
		}
		err := j.db.RunValueLogGC(0.5)
		j.exit()
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			// Nothing worth rewriting, or a GC already running.
			return nil
		default:
			return fmt.Errorf("value log GC: %w", err)
		}
	}
}

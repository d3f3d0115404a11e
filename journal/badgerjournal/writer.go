package badgerjournal

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// op is one mutation for the writer goroutine.
//
// apply reads what it needs through txn, which already holds the writes of the
// ops applied before it in the same group, and puts its own writes into w
// instead of into txn: the writer applies them only if the op succeeded and they
// fit, so a failed op leaves nothing behind. apply must have no other effect,
// because the writer may run it again on a fresh transaction; results it wants
// to report go into the op's own fields, set afresh on every run.
type op struct {
	ctx   context.Context // the op is skipped if ctx is done before it is applied
	apply func(txn *badger.Txn, w *writes) error
	done  chan error // receives exactly one result
}

// writes are an op's staged mutations with Badger's size estimate.
type writes struct {
	l           txnLimits
	list        []kv
	size, count int64
}

type kv struct {
	key, value []byte
	del        bool
}

func (w *writes) set(key, value []byte) {
	w.list = append(w.list, kv{key: key, value: value})
	w.size += w.l.estimate(key, value)
	w.count++
}

func (w *writes) del(key []byte) {
	w.list = append(w.list, kv{key: key, del: true})
	w.size += w.l.estimate(key, nil)
	w.count++
}

func (w *writes) applyTo(txn *badger.Txn) error {
	for _, e := range w.list {
		var err error
		if e.del {
			err = txn.Delete(e.key)
		} else {
			err = txn.Set(e.key, e.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// maxGroup bounds the ops in one group, so that one commit's latency stays
// bounded however many callers wait.
const maxGroup = 512

// writer is the only goroutine that writes to the database (apart from Badger's
// sequence leases and value-log GC). It takes every op waiting, applies them to
// one transaction and commits it: one sync for the whole group.
func (j *Journal) writer() {
	defer close(j.writerDone)
	group := make([]*op, 0, maxGroup)
	for first := range j.ops {
		group = append(group[:0], first)
	more:
		for len(group) < maxGroup {
			select {
			case o, ok := <-j.ops:
				if !ok {
					break more
				}
				group = append(group, o)
			default:
				break more
			}
		}
		j.commitGroup(group)
		clear(group)
	}
}

// commitGroup applies ops in order to as few transactions as Badger's size
// limits allow and commits them.
func (j *Journal) commitGroup(group []*op) {
	txn := j.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	members := make([]*op, 0, len(group))
	var size, count int64

	commit := func() {
		err := txn.Commit()
		if err == nil {
			j.commits.Add(1)
			j.grouped.Add(int64(len(members)))
		}
		if err != nil {
			err = fmt.Errorf("badgerjournal: commit: %w", err)
			j.log.Error("journal commit failed", "ops", len(members), "err", err)
		}
		for _, o := range members {
			o.done <- err
		}
		members = members[:0]
		size, count = 0, 0
		txn = j.db.NewTransaction(true)
	}

	for _, o := range group {
		if err := o.ctx.Err(); err != nil {
			o.done <- err
			continue
		}
		w := writes{l: j.limits}
		err := o.apply(txn, &w)
		if err == nil && (w.size > j.limits.size || w.count > j.limits.count) {
			err = fmt.Errorf("badgerjournal: one change of %d entries, %d bytes, exceeds a transaction: %w",
				w.count, w.size, journal.ErrTooLarge)
		}
		if err != nil {
			o.done <- err
			continue
		}
		if size+w.size > j.limits.size || count+w.count > j.limits.count {
			// Commit what we have and run the op again on a fresh transaction: its
			// reads must come from the transaction its writes go into.
			commit()
			w = writes{l: j.limits}
			if err := o.apply(txn, &w); err != nil {
				o.done <- err
				continue
			}
		}
		if err := w.applyTo(txn); err != nil {
			// Not expected (the sizes were checked), but the transaction may now
			// hold part of this op: none of it can be committed.
			err = fmt.Errorf("badgerjournal: staging writes: %w", err)
			j.log.Error("journal write failed", "err", err)
			txn.Discard()
			for _, m := range append(members, o) {
				m.done <- err
			}
			members = members[:0]
			size, count = 0, 0
			txn = j.db.NewTransaction(true)
			continue
		}
		size += w.size
		count += w.count
		members = append(members, o)
	}
	if len(members) > 0 {
		commit()
	}
}

// submit hands an op to the writer and returns the channel its result arrives
// on. The caller must be inside enter/exit, which keeps the writer running.
func (j *Journal) submit(ctx context.Context, apply func(*badger.Txn, *writes) error) <-chan error {
	o := &op{ctx: ctx, apply: apply, done: make(chan error, 1)}
	j.ops <- o
	return o.done
}

// do submits an op and waits for its result. It waits even if ctx is cancelled
// meanwhile: an op already applied will be committed, and the caller must know.
func (j *Journal) do(ctx context.Context, apply func(*badger.Txn, *writes) error) error {
	return <-j.submit(ctx, apply)
}

// get reads a key's value, copied; ok is false when the key does not exist.
func get(txn *badger.Txn, key []byte) (value []byte, ok bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	value, err = item.ValueCopy(nil)
	return value, err == nil, err
}

func getRecord(txn *badger.Txn, id journal.ID) (*record, error) {
	v, ok, err := get(txn, messageKey(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("message %s: %w", id, journal.ErrNotFound)
	}
	r, err := decodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", id, err)
	}
	return r, nil
}

func getStats(txn *badger.Txn) (stats, error) {
	v, ok, err := get(txn, []byte(keyStats))
	if err != nil || !ok {
		return stats{}, err
	}
	return decodeStats(v)
}

func getMailbox(txn *badger.Txn, name string) (mailbox, bool, error) {
	v, ok, err := get(txn, mailboxKey(name))
	if err != nil || !ok {
		return mailbox{}, false, err
	}
	m, err := decodeMailbox(v)
	if err != nil {
		return mailbox{}, false, fmt.Errorf("mailbox %q: %w", name, err)
	}
	return m, true, nil
}

func getUint64(txn *badger.Txn, key []byte) (uint64, error) {
	v, ok, err := get(txn, key)
	if err != nil || !ok {
		return 0, err
	}
	return decodeUint64(v)
}

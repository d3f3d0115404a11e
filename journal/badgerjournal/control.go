package badgerjournal

import (
	"context"
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// The control store (journal.ControlStore) keeps small values — outage state,
// maintenance windows — under k keys, and append-only event logs under e keys.
// Both go through the group-commit writer, so they are durable when the call
// returns, like an Append.

// maxControlValue bounds one control value or event: they are small records,
// and a bug that writes megabytes here should fail loudly.
const maxControlValue = 1 << 20

func controlKey(name string) []byte { return append([]byte{tagControl}, name...) }

func eventPrefix(log string) []byte {
	k := []byte{tagEvent}
	k = binary.BigEndian.AppendUint16(k, uint16(len(log)))
	return append(k, log...)
}

func eventKey(log string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(eventPrefix(log), seq)
}

func checkControl(kind, name string, value []byte) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("badgerjournal: %s name of %d bytes", kind, len(name))
	}
	if len(value) > maxControlValue {
		return fmt.Errorf("badgerjournal: %s %q: %w", kind, name, journal.ErrTooLarge)
	}
	return nil
}

// SetControl implements journal.ControlStore.
func (j *Journal) SetControl(ctx context.Context, key string, value []byte) error {
	if err := checkControl("control key", key, value); err != nil {
		return err
	}
	if err := j.enter(); err != nil {
		return err
	}
	defer j.exit()
	v := append([]byte(nil), value...)
	err := j.do(ctx, func(_ *badger.Txn, w *writes) error {
		if value == nil {
			w.del(controlKey(key))
		} else {
			w.set(controlKey(key), v)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: set control %q: %w", key, err)
	}
	return nil
}

// Control implements journal.ControlStore.
func (j *Journal) Control(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	var found bool
	err := j.view(ctx, func(txn *badger.Txn) error {
		var err error
		v, found, err = get(txn, controlKey(key))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("badgerjournal: control %q: %w", key, err)
	}
	if !found {
		return nil, fmt.Errorf("control %q: %w", key, journal.ErrNotFound)
	}
	return v, nil
}

type keyValue struct {
	key   string
	value []byte
}

// Controls implements journal.ControlStore.
func (j *Journal) Controls(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	return paged(ctx, j, "controls", controlKey(prefix), controlKey(prefix), nil,
		func(_ *badger.Txn, item *badger.Item) (keyValue, bool, error) {
			v, err := item.ValueCopy(nil)
			return keyValue{key: string(item.Key()[1:]), value: v}, err == nil, err
		}, func(kv keyValue) error { return fn(kv.key, kv.value) })
}

// AppendEvent implements journal.ControlStore. The log's last seq is kept in
// its own key, read and written inside the writer's transaction, so concurrent
// appends to one log get distinct, increasing numbers.
func (j *Journal) AppendEvent(ctx context.Context, log string, value []byte) (uint64, error) {
	if err := checkControl("event log", log, value); err != nil {
		return 0, err
	}
	if err := j.enter(); err != nil {
		return 0, err
	}
	defer j.exit()
	v := append([]byte(nil), value...)
	var seq uint64
	err := j.do(ctx, func(txn *badger.Txn, w *writes) error {
		seqKey := []byte(keyEvSeq + log)
		cur, ok, err := get(txn, seqKey)
		if err != nil {
			return err
		}
		seq = 1
		if ok {
			n, err := decodeUint64(cur)
			if err != nil {
				return fmt.Errorf("event log %q counter: %w", log, err)
			}
			seq = n + 1
		}
		w.set(seqKey, encodeUint64(seq))
		w.set(eventKey(log, seq), v)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("badgerjournal: append event to %q: %w", log, err)
	}
	return seq, nil
}

type event struct {
	seq   uint64
	value []byte
}

// Events implements journal.ControlStore.
func (j *Journal) Events(ctx context.Context, log string, fromSeq uint64, fn func(seq uint64, value []byte) error) error {
	prefix := eventPrefix(log)
	return paged(ctx, j, "events", prefix, eventKey(log, fromSeq), nil,
		func(_ *badger.Txn, item *badger.Item) (event, bool, error) {
			k := item.Key()
			if len(k) != len(prefix)+8 {
				return event{}, false, fmt.Errorf("bad event key %x", k)
			}
			v, err := item.ValueCopy(nil)
			return event{seq: binary.BigEndian.Uint64(k[len(prefix):]), value: v}, err == nil, err
		}, func(e event) error { return fn(e.seq, e.value) })
}

package badgerjournal

import (
	"context"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// SetState implements journal.Journal. A transition out of custody or retrying
// is the outcome of a delivery attempt, so it also counts one in Attempts. The
// custody queue (q index) gains or loses the recipient in the same transaction.
func (j *Journal) SetState(ctx context.Context, id journal.ID, rcpt int, to journal.State, reply string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := j.enter(); err != nil {
		return err
	}
	defer j.exit()
	err := j.do(ctx, func(txn *badger.Txn, w *writes) error {
		rec, err := getRecord(txn, id)
		if err != nil {
			return err
		}
		if rcpt < 0 || rcpt >= len(rec.Env.Recipients) {
			return fmt.Errorf("message %s has no recipient %d: %w", id, rcpt, journal.ErrNotFound)
		}
		rc := &rec.Env.Recipients[rcpt]
		from := rc.State
		if !to.Valid() || !from.CanBecome(to) {
			return fmt.Errorf("message %s recipient %d: %s -> %s: %w", id, rcpt, from, to, journal.ErrInvalidState)
		}
		if from.Undelivered() {
			rc.Attempts++
		}
		rc.State = to
		rc.LastReply = reply
		rc.Updated = j.opts.Clock()
		w.set(messageKey(id), rec.encode())
		switch {
		case to.Undelivered():
			w.set(custodyKey(rec.Seq, rcpt), custodyValue(id, to))
		case from.Undelivered():
			w.del(custodyKey(rec.Seq, rcpt))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: set state: %w", err)
	}
	return nil
}

package badgerjournal

import (
	"context"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// SetState implements journal.Journal: Update with one change.
func (j *Journal) SetState(ctx context.Context, id journal.ID, rcpt int, to journal.State, reply string) error {
	return j.Update(ctx, id, journal.Change{Rcpt: rcpt, To: to, Reply: reply})
}

// Update implements journal.Journal. A transition out of custody or retrying is
// the outcome of a delivery attempt, so it also counts one in Attempts. The
// custody queue (q index) gains, changes or loses the recipient in the same
// transaction, which the group-commit writer makes durable with other writers'.
func (j *Journal) Update(ctx context.Context, id journal.ID, changes ...journal.Change) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(changes) == 0 {
		return nil
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
		now := j.opts.Clock()
		for _, c := range changes {
			if c.Rcpt < 0 || c.Rcpt >= len(rec.Env.Recipients) {
				return fmt.Errorf("message %s has no recipient %d: %w", id, c.Rcpt, journal.ErrNotFound)
			}
			rc := &rec.Env.Recipients[c.Rcpt]
			from := rc.State
			if !c.To.Valid() || !from.CanBecome(c.To) {
				return fmt.Errorf("message %s recipient %d: %s -> %s: %w", id, c.Rcpt, from, c.To, journal.ErrInvalidState)
			}
			if from.Undelivered() {
				rc.Attempts++
			}
			rc.State = c.To
			rc.LastReply = c.Reply
			rc.Updated = now
			rc.NextAttempt = c.NextAttempt
			if c.Done != nil {
				rc.Done = append([]string(nil), c.Done...)
			}
			switch {
			case c.To.Undelivered():
				w.set(custodyKey(rec.Seq, c.Rcpt), custodyValue(id, rc))
			case from.Undelivered():
				w.del(custodyKey(rec.Seq, c.Rcpt))
			}
		}
		w.set(messageKey(id), rec.encode())
		return nil
	})
	if err != nil {
		return fmt.Errorf("badgerjournal: update: %w", err)
	}
	return nil
}

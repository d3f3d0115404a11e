package badgerjournal

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// Stats implements journal.Journal. The counts come from counters kept with every
// append and removal; BytesOnDisk is what the directory's files occupy (Badger's
// own db.Size is refreshed only once a minute and counts sparse value-log files
// at their full length).
func (j *Journal) Stats(ctx context.Context) (journal.Stats, error) {
	var s journal.Stats
	err := j.view(ctx, func(txn *badger.Txn) error {
		st, err := getStats(txn)
		if err != nil {
			return err
		}
		s.Messages, s.BytesRaw, s.Mailboxes = st.Messages, st.BytesRaw, st.Mailboxes
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagTime}})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			t, _, ok := parseTimeKey(it.Item().Key())
			if !ok {
				return fmt.Errorf("bad time index key %x", it.Item().Key())
			}
			s.Oldest = t
		}
		return nil
	})
	if err != nil {
		return journal.Stats{}, fmt.Errorf("badgerjournal: stats: %w", err)
	}
	s.BytesOnDisk, err = diskUsage(j.dir)
	if err != nil {
		return journal.Stats{}, fmt.Errorf("badgerjournal: stats: %w", err)
	}
	return s, nil
}

// diskUsage sums the space the files under dir occupy.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += allocated(fi)
		}
		return nil
	})
	return total, err
}

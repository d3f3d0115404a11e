package badgerjournal

import (
	"fmt"

	"github.com/lifelinemail/lifeline/journal"
)

// checkFree fails with journal.ErrDiskFull when the journal's filesystem has
// less than Options.MinFree available. One statfs per call: cheap beside the
// fsync every append pays.
func (j *Journal) checkFree() error {
	if j.opts.MinFree < 0 {
		return nil
	}
	free, err := freeBytes(j.dir)
	if err != nil {
		return fmt.Errorf("badgerjournal: free space of %s: %w", j.dir, err)
	}
	if free < j.opts.MinFree {
		return fmt.Errorf("%w: %d bytes free on the filesystem of %s, %d kept in reserve", journal.ErrDiskFull, free, j.dir, j.opts.MinFree)
	}
	return nil
}

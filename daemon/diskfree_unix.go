//go:build unix

package daemon

import (
	"fmt"
	"syscall"
)

// diskSpace returns the bytes available to this (unprivileged) user on
// dir's filesystem and the filesystem's size: what df shows as Avail and
// Size, so that the alert on the journal's disk agrees with df.
func diskSpace(dir string) (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

//go:build unix

package badgerjournal

import (
	"io/fs"
	"syscall"
)

// allocated returns the bytes a file occupies on disk: Badger's value-log files
// are sparse until written, so their length overstates them.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// freeBytes returns the bytes available to this user on dir's filesystem.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

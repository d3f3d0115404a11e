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

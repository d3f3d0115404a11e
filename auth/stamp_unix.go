//go:build unix

package auth

import (
	"os"
	"syscall"
)

func inode(fi os.FileInfo) (ino, dev uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint64(st.Dev) //nolint:unconvert // their types differ by platform
	}
	return 0, 0
}

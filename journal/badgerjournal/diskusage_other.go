//go:build !unix

package badgerjournal

import "io/fs"

// allocated returns the file's length where the block count is not available.
func allocated(fi fs.FileInfo) int64 { return fi.Size() }

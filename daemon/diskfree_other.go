//go:build !unix

package daemon

import "errors"

// diskSpace is not implemented here: the disk gauges stay absent.
func diskSpace(string) (free, size int64, err error) {
	return 0, 0, errors.New("disk space: not supported on this system")
}

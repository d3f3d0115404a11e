package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// SlowFS is a FUSE loopback filesystem (go-fuse) over a real directory whose
// fsync waits a settable delay before doing the real one: a slow disk for
// the journal, without device-mapper (dm-delay) or a throttled block device.
// The test process serves it; the process writing to it (`lifeline serve`)
// goes through the kernel like on any other filesystem.
//
// What the delay covers: fsync and fdatasync of a file (FUSE_FSYNC), which
// is also what msync(MS_SYNC) of a shared mapping comes to (the kernel's
// msync calls vfs_fsync_range on the mapped file, and FUSE sends FSYNC after
// writing the dirty pages back); Badger, opened with SyncWrites, makes its
// write-ahead log and value log durable that way. And fsync of a directory
// (FUSE_FSYNCDIR), which Badger does after creating a file. Reads and writes
// are not delayed: a disk whose cache absorbs writes and whose flushes are
// slow is the common kind of "slow disk" (a RAID controller rebuilding, a
// network volume, a shared cloud disk at its IOPS limit).
//
// Files are never opened in FUSE passthrough mode (Linux ≥ 6.9 and root
// would allow it): a passthrough file's mapping is the backing file's, so
// msync would sync it without asking this filesystem.
//
// Only other processes may map files of the mount into memory: a goroutine
// of the serving process stuck in a page fault that its own FUSE server
// must answer cannot be preempted, and the next stop-the-world of the Go
// runtime deadlocks the process (seen with Badger in the test process; see
// runSlowFSChild). System calls on the mount (open, write, fsync) are safe.
type SlowFS struct {
	Backing, Mountpoint string

	delay   atomic.Int64 // nanoseconds added to each fsync
	syncs   atomic.Int64 // fsyncs served (files and directories)
	delayed atomic.Int64 // of those, how many waited a delay > 0
	longest atomic.Int64 // the longest fsync served, nanoseconds

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by SetDelay
	closing chan struct{} // closed by Unmount: waiting fsyncs go on at once

	server *fuse.Server
	once   sync.Once
	err    error
}

// MountSlowFS mounts a SlowFS of backing on mountpoint (both existing
// directories) with a delay of 0; the unmount is registered as a cleanup.
// An error means FUSE could not be mounted here (no /dev/fuse, no
// CAP_SYS_ADMIN, …): the caller may skip with it.
func MountSlowFS(tb TB, backing, mountpoint string) (*SlowFS, error) {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("slowfs: %w", err)
	}
	s := &SlowFS{Backing: backing, Mountpoint: mountpoint, changed: make(chan struct{}), closing: make(chan struct{})}
	root := &slowNode{LoopbackNode: &fs.LoopbackNode{RootData: &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}}, fs: s}
	root.RootData.RootNode = root
	server, err := fs.Mount(mountpoint, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			// mount(2) directly: the fusermount helper is not installed,
			// and the test runs as root anyway.
			DirectMountStrict: true,
			FsName:            "slowfs:" + backing,
			Name:              "slowfs",
			// Only root (the test, and the lifeline it starts) uses it;
			// allow_other would let any user through the backing dir's
			// permissions as seen by this process.
			AllowOther: false,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("slowfs: mounting %s on %s: %w", backing, mountpoint, err)
	}
	s.server = server
	tb.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			tb.Errorf("e2e: %v", err)
		}
	})
	return s, nil
}

// SetDelay sets the time every fsync waits from now on; fsyncs already
// waiting take the new delay at once (counted from their start), so a test's
// phases begin and end when it says.
func (s *SlowFS) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay.Store(int64(d))
	close(s.changed)
	s.changed = make(chan struct{})
}

// Delay returns the current delay.
func (s *SlowFS) Delay() time.Duration { return time.Duration(s.delay.Load()) }

// Syncs returns how many fsyncs (of files and directories) were served.
func (s *SlowFS) Syncs() int64 { return s.syncs.Load() }

// Delayed returns how many of them waited a delay > 0.
func (s *SlowFS) Delayed() int64 { return s.delayed.Load() }

// Longest returns the longest fsync served, delay included.
func (s *SlowFS) Longest() time.Duration { return time.Duration(s.longest.Load()) }

func (s *SlowFS) String() string {
	return fmt.Sprintf("slowfs %s: delay %v, %d fsyncs, %d delayed, longest %v", s.Mountpoint, s.Delay(), s.Syncs(), s.Delayed(), s.Longest().Round(time.Millisecond))
}

// sync waits the delay, then runs the real fsync and counts it.
func (s *SlowFS) sync(ctx context.Context, real func() syscall.Errno) syscall.Errno {
	start := time.Now()
	if s.wait(ctx, start) {
		s.delayed.Add(1)
	}
	errno := real()
	s.syncs.Add(1)
	took := int64(time.Since(start))
	for {
		old := s.longest.Load()
		if took <= old || s.longest.CompareAndSwap(old, took) {
			break
		}
	}
	return errno
}

// wait sleeps until the delay, as it stands, has passed since start; it
// reports whether it waited at all.
func (s *SlowFS) wait(ctx context.Context, start time.Time) bool {
	waited := false
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		left := s.Delay() - time.Since(start)
		if left <= 0 {
			return waited
		}
		waited = true
		t := time.NewTimer(left)
		select {
		case <-t.C:
		case <-changed:
		case <-s.closing:
			t.Stop()
			return waited
		case <-ctx.Done(): // the kernel interrupted the request
			t.Stop()
			return waited
		}
		t.Stop()
	}
}

// Unmount ends the delay and unmounts; if the mount is still busy (go-fuse
// retries for a while) it detaches it (umount -l, MNT_DETACH), so that no
// mount outlives the test, and waits up to a minute for the last user of
// the detached mount to let go. Only the first call does anything.
func (s *SlowFS) Unmount() error {
	s.once.Do(func() {
		close(s.closing)
		err := s.server.Unmount()
		if err == nil {
			return // go-fuse waited for its request loops
		}
		out, lerr := exec.Command("umount", "-l", s.Mountpoint).CombinedOutput()
		if lerr != nil {
			s.err = fmt.Errorf("slowfs: unmounting %s: %w; umount -l: %v: %s", s.Mountpoint, err, lerr, out)
			return
		}
		served := make(chan struct{})
		go func() { s.server.Wait(); close(served) }()
		select {
		case <-served:
		case <-time.After(time.Minute):
			s.err = fmt.Errorf("slowfs: %s detached (umount -l) after %w, but still in use a minute later", s.Mountpoint, err)
		}
	})
	return s.err
}

// slowNode is a loopback node whose files and directories sync slowly.
type slowNode struct {
	*fs.LoopbackNode
	fs *SlowFS
}

var (
	_ fs.NodeWrapChilder     = (*slowNode)(nil)
	_ fs.NodeOpener          = (*slowNode)(nil)
	_ fs.NodeCreater         = (*slowNode)(nil)
	_ fs.NodeOpendirHandler  = (*slowNode)(nil)
	_ fs.NodeTmpfiler        = (*slowNode)(nil)
	_ fs.FilePassthroughFder = (*slowFile)(nil)
	_ fs.FileFsyncer         = (*slowFile)(nil)
	_ fs.FileFsyncdirer      = (*slowDir)(nil)
)

// WrapChild makes every node below the root a slowNode too (go-fuse calls
// it for each inode it creates: lookup, create, mkdir).
func (n *slowNode) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	lb, ok := ops.(*fs.LoopbackNode)
	if !ok {
		return ops
	}
	return &slowNode{LoopbackNode: lb, fs: n.fs}
}

func (n *slowNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return n.wrapFile(fh), fuseFlags, errno
}

func (n *slowNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, n.wrapFile(fh), fuseFlags, errno
}

func (n *slowNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	return in, n.wrapFile(fh), fuseFlags, errno
}

// wrapFile makes a loopback file handle a slowFile. go-fuse asks the node
// for Fsync before the handle (fs.NodeFsyncer); a LoopbackNode has none, so
// the handle's is the one that runs.
func (n *slowNode) wrapFile(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &slowFile{LoopbackFile: lf, fs: n.fs}
	}
	return fh
}

func (n *slowNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return fh, fuseFlags, errno
	}
	return &slowDir{ds: fh, fs: n.fs}, fuseFlags, 0
}

// slowFile is the loopback file handle with a slow Fsync and no
// passthrough.
type slowFile struct {
	*fs.LoopbackFile
	fs *SlowFS
}

func (f *slowFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.fs.sync(ctx, func() syscall.Errno { return f.LoopbackFile.Fsync(ctx, flags) })
}

// PassthroughFd declines passthrough (see SlowFS).
func (f *slowFile) PassthroughFd() (int, bool) { return -1, false }

// slowDir is the loopback directory handle with a slow Fsyncdir; it
// forwards what go-fuse asks of a directory handle.
type slowDir struct {
	ds fs.FileHandle
	fs *SlowFS
}

func (d *slowDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.fs.sync(ctx, func() syscall.Errno {
		if s, ok := d.ds.(fs.FileFsyncdirer); ok {
			return s.Fsyncdir(ctx, flags)
		}
		return syscall.ENOTSUP
	})
}

func (d *slowDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.ds.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	return nil, syscall.ENOTSUP
}

func (d *slowDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.ds.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *slowDir) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.ds.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

// isMounted reports whether path is a mount point (its device differs from
// its parent's), for the tests' check that nothing stays mounted.
func isMounted(path string) (bool, error) {
	var st, parent syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	if err := syscall.Stat(path+"/..", &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}

package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestSpool(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int64
		writes    []string
		onDisk    bool
	}{
		{"empty", 10, nil, false},
		{"exactly at the threshold stays in memory", 10, []string{"01234", "56789"}, false},
		{"one byte past spills", 10, []string{"01234", "56789", "x"}, true},
		{"one big write spills", 10, []string{strings.Repeat("y", 100)}, true},
		{"negative threshold always spills", -1, []string{"a"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var created []string
			s := New(dir, "test", tc.threshold)
			s.Created = func(p string) { created = append(created, p) }
			want := ""
			for i, w := range tc.writes {
				var err error
				if i%2 == 0 {
					_, err = s.Write([]byte(w))
				} else {
					_, err = io.WriteString(s, w)
				}
				if err != nil {
					t.Fatalf("write: %v", err)
				}
				want += w
			}
			if s.OnDisk() != tc.onDisk || (len(created) == 1) != tc.onDisk {
				t.Fatalf("OnDisk = %v (files created %v), want %v", s.OnDisk(), created, tc.onDisk)
			}
			if s.Size() != int64(len(want)) {
				t.Errorf("Size = %d, want %d", s.Size(), len(want))
			}
			// Reading twice gives the same bytes: the reader does not move the
			// file offset.
			for range 2 {
				r, err := s.Reader()
				if err != nil {
					t.Fatalf("Reader: %v", err)
				}
				got, err := io.ReadAll(r)
				if err != nil || string(got) != want {
					t.Fatalf("read %q, %v; want %q", got, err, want)
				}
			}
			if tc.onDisk {
				if _, err := os.Stat(created[0]); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("spool file still has a name while open: %v", err)
				}
				if open := openSpoolFiles(t, dir); runtime.GOOS == "linux" && len(open) != 1 {
					t.Errorf("open spool files = %q, want 1", open)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if open := openSpoolFiles(t, dir); len(open) != 0 {
				t.Errorf("spool files still open after Close: %q", open)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("spool dir not empty after Close: %v", entries)
			}
			if _, err := s.Write([]byte("late")); err == nil {
				t.Errorf("Write after Close succeeded")
			}
		})
	}
}

func TestSpoolCreateFailureIsSticky(t *testing.T) {
	s := New(t.TempDir()+"/does/not/exist", "test", 4)
	if _, err := s.Write([]byte("12345")); err == nil {
		t.Fatal("spilling into a missing directory succeeded")
	}
	if _, err := s.Write([]byte("1")); err == nil {
		t.Fatal("write after a failed spill succeeded")
	}
	if _, err := s.Reader(); err == nil {
		t.Fatal("Reader after a failed spill succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// openSpoolFiles lists the files this process holds open under dir that
// a spool named "test" created (Linux only: /proc/self/fd).
func openSpoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(dir, "lifeline-test-")) {
			out = append(out, target)
		}
	}
	return out
}

package milter

import (
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
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
			s := newSpool(dir, tc.threshold)
			s.created = func(p string) { created = append(created, p) }
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
	s := newSpool(t.TempDir()+"/does/not/exist", 4)
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

// TestSpoolFailureFailsMessage: when the spool file cannot be created the
// message is not journaled (its bytes are incomplete) and the configured
// answer is given.
func TestSpoolFailureFailsMessage(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j, SpoolThreshold: 100, OnJournalError: TempFail, SpoolDir: t.TempDir() + "/missing"})
	ts.spoolDir = t.TempDir() // nothing can be left in a directory that does not exist
	m := dial(t, ts.addr)
	m.send(richEnvelope, []byte(richMessage), gomilter.ActionTempFail)
	if got := len(storedMessages(t, j)); got != 0 {
		t.Errorf("journal holds %d messages, want 0", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_tempfail"); got != 1 {
		t.Errorf("journal_error_tempfail = %v, want 1", got)
	}
}

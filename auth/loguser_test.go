package auth

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLogUser(t *testing.T) {
	long := strings.Repeat("p", 200)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"alice@example.org", "alice@example.org"},
		{long[:128], long[:128]},
		{long[:129], long[:128] + "..."},
		{long, long[:128] + "..."},
		// A two-byte character across the cut is dropped whole, not split.
		{long[:127] + "é" + long, long[:127] + "..."},
		{long[:126] + "é" + long, long[:126] + "é..."},
	} {
		got := LogUser(tc.in)
		if got != tc.want {
			t.Errorf("LogUser(%d bytes) = %q, want %q", len(tc.in), got, tc.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("LogUser(%d bytes) is not UTF-8", len(tc.in))
		}
	}
}

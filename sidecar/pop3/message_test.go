package pop3

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSendMessage(t *testing.T) {
	long := strings.Repeat("y", 70000)
	for _, tc := range []struct {
		name, in string
		lines    int
		want     string
	}{
		{"crlf", "A: b\r\n\r\nbody\r\n", -1, "A: b\r\n\r\nbody\r\n.\r\n"},
		{"bare lf", "A: b\n\nbody\n.x\n", -1, "A: b\r\n\r\nbody\r\n..x\r\n.\r\n"},
		{"no final newline", "A: b\r\n\r\nbody", -1, "A: b\r\n\r\nbody\r\n.\r\n"},
		{"dot lines", ".\r\n..\r\n", -1, "..\r\n...\r\n.\r\n"},
		{"empty", "", -1, ".\r\n"},
		{"top 0", "A: b\r\nC: d\r\n\r\n1\r\n2\r\n", 0, "A: b\r\nC: d\r\n\r\n.\r\n"},
		{"top 1", "A: b\r\n\r\n.1\r\n2\r\n", 1, "A: b\r\n\r\n..1\r\n.\r\n"},
		{"top header only", "A: b\r\n", 3, "A: b\r\n.\r\n"},
		{"long line", "A: b\r\n\r\n." + long + "\r\n.z\r\n", -1, "A: b\r\n\r\n.." + long + "\r\n..z\r\n.\r\n"},
		{"CR at buffer end", strings.Repeat("x", 32<<10-1) + "\r\nnext\n", -1, strings.Repeat("x", 32<<10-1) + "\r\nnext\r\n.\r\n"},
		{"long line top", "A: b\r\n\r\n" + long + "\r\nnext\r\n", 1, "A: b\r\n\r\n" + long + "\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, oneByte := range []bool{false, true} {
				var out bytes.Buffer
				w := bufio.NewWriter(&out)
				var r = strings.NewReader(tc.in)
				src := any(r)
				if oneByte { // splits CR from LF across reads
					src = iotest.OneByteReader(r)
				}
				if err := sendMessage(w, src.(interface{ Read([]byte) (int, error) }), tc.lines); err != nil {
					t.Fatal(err)
				}
				w.Flush()
				if out.String() != tc.want {
					t.Errorf("oneByte=%v: got %.200q, want %.200q", oneByte, out.String(), tc.want)
				}
			}
		})
	}
}

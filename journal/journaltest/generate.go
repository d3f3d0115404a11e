package journaltest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
)

// Generated returns a reader of a deterministic message of exactly size bytes
// (at least its header section, about 150 bytes): a CRLF header section with a
// Message-ID made from seed, then lines of 76 pseudo-random base64 characters,
// like an attachment. Nothing is held in memory beyond one line, so tests and
// benchmarks can stream messages of any size. The same size and seed always give
// the same bytes.
func Generated(size int64, seed uint64) io.Reader {
	g := &generator{
		size: size,
		rng:  rand.New(rand.NewPCG(seed, 0x6c6966656c696e65)),
		head: fmt.Appendf(nil, "From: Generator <gen@example.org>\r\nTo: rcpt@example.com\r\n"+
			"Subject: generated message %d\r\nMessage-ID: <gen-%d-%d@example.org>\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
			seed, seed, size),
	}
	g.line = g.head
	return g
}

// GeneratedSum returns the SHA-256 of Generated(size, seed) and its length.
func GeneratedSum(size int64, seed uint64) ([sha256.Size]byte, int64) {
	h := sha256.New()
	n, _ := io.Copy(h, Generated(size, seed)) // a generator never fails
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, n
}

type generator struct {
	size, pos int64
	rng       *rand.Rand
	head      []byte
	line      []byte // what is left of the current line
	buf       [78]byte
}

const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func (g *generator) Read(p []byte) (int, error) {
	if g.pos >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.pos < g.size {
		if len(g.line) == 0 {
			g.nextLine()
		}
		c := copy(p[n:], g.line[:min(int64(len(g.line)), g.size-g.pos)])
		g.line = g.line[c:]
		n += c
		g.pos += int64(c)
	}
	return n, nil
}

func (g *generator) nextLine() {
	for i := 0; i < 76; i += 10 {
		v := g.rng.Uint64()
		for k := i; k < min(i+10, 76); k++ {
			g.buf[k] = base64Chars[v&63]
			v >>= 6
		}
	}
	g.buf[76], g.buf[77] = '\r', '\n'
	g.line = g.buf[:]
}

package badgerjournal

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// A chunk is stored compressed in one of two codecs, told apart by its first
// byte:
//
//   - zstd (a zstd frame, whose magic number starts with 0x28): chunks of more
//     than smallChunk raw bytes, which is every chunk of a large message but
//     its last. zstd shrinks text and base64 best, and its per-frame cost
//     (reading the entropy tables) is small against 256 KiB.
//   - S2 (chunkS2, then an S2 block): chunks of at most smallChunk raw bytes,
//     that is most messages whole. For a 4 KiB text message a zstd frame
//     costs more to decode than the journal's two lookups for it (BenchmarkOpen,
//     Open and read of a 4 KiB message: 24.0 µs of CPU with zstd chunks, 15.2
//     with S2, in one run on 2 cores), while S2 stores it in 0.49 of its size
//     against zstd's 0.41.
//
// Journals of format 2 hold only zstd chunks, which this reads as they are.
const (
	smallChunk = 32 << 10
	chunkS2    = 0x01
)

// encodeChunk appends the stored form of raw to dst[:0].
func (j *Journal) encodeChunk(dst, raw []byte) []byte {
	if len(raw) > j.smallChunk {
		return j.enc.EncodeAll(raw, dst[:0])
	}
	need := 1 + s2.MaxEncodedLen(len(raw))
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	dst = append(dst[:0], chunkS2)
	enc := s2.EncodeBetter(dst[1:need], raw)
	return dst[:1+len(enc)]
}

// decodeChunk appends the raw bytes of the stored chunk v to dst[:0], reusing
// dst when it is large enough.
func (j *Journal) decodeChunk(dst, v []byte) ([]byte, error) {
	if len(v) == 0 || v[0] != chunkS2 {
		return j.dec.DecodeAll(v, dst[:0])
	}
	n, err := s2.DecodedLen(v[1:])
	if err != nil {
		return dst[:0], fmt.Errorf("s2 chunk: %w", err)
	}
	if n > maxChunkSize {
		return dst[:0], fmt.Errorf("s2 chunk of %d bytes, at most %d allowed", n, maxChunkSize)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out, err := s2.Decode(dst[:cap(dst)], v[1:])
	if err != nil {
		return dst[:0], fmt.Errorf("s2 chunk: %w", err)
	}
	return out, nil
}

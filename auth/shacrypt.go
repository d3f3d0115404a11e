package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// SHA-crypt: the "$5$" (SHA-256) and "$6$" (SHA-512) password hashes of glibc, as specified
// by Ulrich Drepper in "Unix crypt using SHA-256 and SHA-512" (2007-2008, public domain).
// Step numbers in the comments below refer to the "Algorithm for crypt using SHA-256/SHA-512"
// section of that specification. Dovecot's SHA256-CRYPT and SHA512-CRYPT schemes are this
// algorithm (Dovecot calls the system crypt(3)).

const (
	shaCryptDefaultRounds = 5000      // spec: used when no "rounds=" is given
	shaCryptMinRounds     = 1000      // spec: smaller values are raised to this
	shaCryptMaxRounds     = 999999999 // spec: larger values are lowered to this
	shaCryptMaxSalt       = 16        // spec: salt characters beyond 16 are ignored
	shaCryptRoundsPrefix  = "rounds="
)

// shaCryptVariant holds what differs between $5$ and $6$.
type shaCryptVariant struct {
	id    string // "5" or "6"
	new   func() hash.Hash
	size  int      // digest size in bytes
	perm  [][3]int // byte triples for the final base-64 encoding (spec step 22 e)
	tail  []int    // the last 1 or 2 bytes, encoded with fewer characters
	chars int      // length of the encoded hash
}

var sha256Crypt = &shaCryptVariant{
	id: "5", new: sha256.New, size: sha256.Size, chars: 43,
	perm: [][3]int{
		{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14},
		{15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29},
	},
	tail: []int{31, 30}, // spec: 0 dig[31] dig[30] -> 3 characters
}

var sha512Crypt = &shaCryptVariant{
	id: "6", new: sha512.New, size: sha512.Size, chars: 86,
	perm: [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4},
		{47, 5, 26}, {6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51},
		{31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35},
		{15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
		{62, 20, 41},
	},
	tail: []int{63}, // spec: 0 0 dig[63] -> 2 characters
}

// cryptAlphabet is the base-64 alphabet of crypt(3): "./0-9A-Za-z", least significant
// six bits first.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// digest computes the raw digest for key, salt and rounds (spec steps 1-21). salt must
// already be cut to 16 bytes and rounds clamped.
func (v *shaCryptVariant) digest(key, salt []byte, rounds int) []byte {
	// Steps 4-8: digest B = H(key salt key).
	h := v.new()
	h.Write(key)
	h.Write(salt)
	h.Write(key)
	b := h.Sum(nil)

	// Steps 1-3, 9-12: digest A.
	h.Reset()
	h.Write(key)
	h.Write(salt)
	// Step 9-10: for each block of the key length, add B; then the rest of B.
	n := len(key)
	for ; n > v.size; n -= v.size {
		h.Write(b)
	}
	h.Write(b[:n])
	// Step 11: for each bit of the key length, from the lowest: 1 adds B, 0 adds the key.
	for n := len(key); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(key)
		}
	}
	a := h.Sum(nil)

	// Steps 13-16: P, the digest of the key repeated len(key) times, repeated to len(key).
	h.Reset()
	for range len(key) {
		h.Write(key)
	}
	dp := h.Sum(nil)
	p := repeatTo(dp, len(key))

	// Steps 17-20: S, the digest of the salt repeated 16+A[0] times, repeated to len(salt).
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(salt)
	}
	ds := h.Sum(nil)
	s := repeatTo(ds, len(salt))

	// Step 21: the rounds.
	c := a
	sum := make([]byte, 0, v.size)
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(sum[:0])
		sum = c
	}
	return c
}

func repeatTo(d []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out)+len(d) <= n {
		out = append(out, d...)
	}
	return append(out, d[:n-len(out)]...)
}

// encode writes the digest in the crypt base-64 form (spec step 22 e).
func (v *shaCryptVariant) encode(d []byte) string {
	var sb strings.Builder
	sb.Grow(v.chars)
	put := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for range n {
			sb.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	for _, t := range v.perm {
		put(d[t[0]], d[t[1]], d[t[2]], 4)
	}
	if len(v.tail) == 2 {
		put(0, d[v.tail[0]], d[v.tail[1]], 3)
	} else {
		put(0, 0, d[v.tail[0]], 2)
	}
	return sb.String()
}

// shaCryptHash is a parsed "$5$..." or "$6$..." string.
type shaCryptHash struct {
	v            *shaCryptVariant
	rounds       int
	customRounds bool // "rounds=" was written, so it is written back
	salt         string
	sum          string // encoded digest; empty when only a setting (for crypt) was parsed
}

var errMalformed = errors.New("malformed hash")

// parseSHACrypt parses "$5$[rounds=N$]salt$hash" (or "$6$..."). With needSum false the
// trailing "$hash" may be missing, as in a crypt(3) setting. It follows glibc for the salt
// (cut to 16 characters at the first '$') and the rounds (clamped to 1000..999999999).
func parseSHACrypt(s string, needSum bool) (*shaCryptHash, error) {
	var v *shaCryptVariant
	switch {
	case strings.HasPrefix(s, "$5$"):
		v = sha256Crypt
	case strings.HasPrefix(s, "$6$"):
		v = sha512Crypt
	default:
		return nil, fmt.Errorf("%w: want $5$ or $6$", errMalformed)
	}
	h := &shaCryptHash{v: v, rounds: shaCryptDefaultRounds}
	rest := s[3:]
	if r, ok := strings.CutPrefix(rest, shaCryptRoundsPrefix); ok {
		num, after, found := strings.Cut(r, "$")
		n, err := strconv.ParseUint(num, 10, 64)
		if !found || err != nil {
			return nil, fmt.Errorf("%w: bad rounds", errMalformed)
		}
		h.rounds = int(min(max(n, shaCryptMinRounds), shaCryptMaxRounds))
		h.customRounds = true
		rest = after
	}
	salt, sum, hasSum := strings.Cut(rest, "$")
	if len(salt) > shaCryptMaxSalt {
		if needSum {
			// A stored hash carries the salt as crypt(3) cut it; a longer one cannot
			// have come from it.
			return nil, fmt.Errorf("%w: salt longer than %d characters", errMalformed, shaCryptMaxSalt)
		}
		salt = salt[:shaCryptMaxSalt]
	}
	h.salt = salt
	if needSum {
		if !hasSum || len(sum) != v.chars || !validCryptBase64(sum) {
			return nil, fmt.Errorf("%w: digest must be %d characters of [./0-9A-Za-z]", errMalformed, v.chars)
		}
		h.sum = sum
	}
	return h, nil
}

func validCryptBase64(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(cryptAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// setting is the "$6$[rounds=N$]salt" prefix written before the digest.
func (h *shaCryptHash) setting() string {
	var sb strings.Builder
	sb.WriteString("$" + h.v.id + "$")
	if h.customRounds {
		sb.WriteString(shaCryptRoundsPrefix + strconv.Itoa(h.rounds) + "$")
	}
	sb.WriteString(h.salt)
	return sb.String()
}

// crypt returns the full hash string of key with this hash's setting, as crypt(3) would.
func (h *shaCryptHash) crypt(key []byte) string {
	return h.setting() + "$" + h.v.encode(h.v.digest(key, []byte(h.salt), h.rounds))
}

// verify reports whether key hashes to h.sum, comparing in constant time.
func (h *shaCryptHash) verify(key []byte) bool {
	got := h.v.encode(h.v.digest(key, []byte(h.salt), h.rounds))
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.sum)) == 1
}

// shaCrypt is crypt(3) for "$5$" and "$6$" settings: it hashes key with the setting (which
// may carry a digest; it is ignored) and returns the full string. It exists for tests
// against the specification's vectors, which are given as setting and result.
func shaCrypt(key, setting string) (string, error) {
	h, err := parseSHACrypt(setting, false)
	if err != nil {
		return "", err
	}
	return h.crypt([]byte(key)), nil
}

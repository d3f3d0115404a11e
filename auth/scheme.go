package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Password scheme names, spelled as Dovecot spells them inside the braces of "{SCHEME}hash"
// (https://doc.dovecot.org/configuration_manual/authentication/password_schemes/).
// Names are matched without regard to case.
const (
	SchemeBLFCrypt    = "BLF-CRYPT"    // bcrypt, "$2y$10$..." (also $2a$ and $2b$)
	SchemeSHA512Crypt = "SHA512-CRYPT" // glibc SHA-crypt, "$6$[rounds=N$]salt$..."
	SchemeSHA256Crypt = "SHA256-CRYPT" // glibc SHA-crypt, "$5$[rounds=N$]salt$..."
	SchemeArgon2ID    = "ARGON2ID"     // "$argon2id$v=19$m=...,t=...,p=...$salt$hash"
	SchemeArgon2I     = "ARGON2I"      // "$argon2i$v=19$..."; verified, never produced
	// SchemeCrypt is Dovecot's default scheme for a passwd-file, used when a password has
	// no "{SCHEME}" prefix: crypt(3), of which the bcrypt and SHA-crypt kinds are accepted.
	SchemeCrypt = "CRYPT"
	// SchemePlain and its aliases store the password itself. They are accepted so that test
	// setups work, but a File logs a warning for every such line.
	SchemePlain     = "PLAIN"
	SchemeClear     = "CLEAR"
	SchemeClearText = "CLEARTEXT"
)

// DefaultScheme is the scheme `lifeline passwd` uses when none is asked for: bcrypt is what
// Dovecot's own documentation suggests for a passwd-file and costs no memory per login.
const DefaultScheme = SchemeBLFCrypt

// Defaults of Hash, the same as `doveadm pw` writes.
const (
	DefaultBcryptCost     = 10
	DefaultSHACryptRounds = shaCryptDefaultRounds // 5000, written without "rounds="
	DefaultArgon2Time     = 3
	DefaultArgon2MemKiB   = 64 * 1024
	DefaultArgon2Threads  = 1
)

// MaxPasswordLength bounds the password a login may present, in bytes. Longer passwords
// never verify: SHA-crypt costs time quadratic in the password length (spec steps 13-16),
// so an unbounded password would let any client burn CPU.
const MaxPasswordLength = 1024

// ErrUnknownScheme is wrapped by the errors of a hash whose scheme is not supported.
var ErrUnknownScheme = errors.New("unknown password scheme")

// credential is a parsed stored password, ready to verify.
type credential interface {
	// verify compares in time that does not depend on where the password differs.
	verify(password []byte) bool
	// scheme is the canonical scheme name, for logs and for choosing a dummy.
	scheme() string
	// costKey identifies scheme and cost parameters: credentials with equal keys take the
	// same time to verify.
	costKey() string
	// dummy returns a credential of a random password with the same cost parameters.
	dummy() (credential, error)
}

// costLimits refuse stored hashes whose cost parameters would make one login take far longer
// than any sane configuration (or, for Argon2, allocate more memory): the passwd-file is
// trusted, but a typo such as rounds=500000000 should be an error at load, not a login that
// pins a core for minutes.
type costLimits struct {
	bcryptCost   int
	shaRounds    int
	argonTime    uint32
	argonMemKiB  uint32
	argonThreads uint8
}

// defaultLimits: each is a few seconds per login on one core of the machines this runs on
// (bcrypt cost 16; 5 million SHA-512 rounds at about 0.7 µs each; Argon2 at 1 GiB, t=16).
var defaultLimits = costLimits{
	bcryptCost:   16,
	shaRounds:    5_000_000,
	argonTime:    16,
	argonMemKiB:  1 << 20,
	argonThreads: 16,
}

// splitScheme splits "{SCHEME}rest" into an upper-case scheme name and the rest. A string
// without a leading "{...}" has Dovecot's passwd-file default scheme, CRYPT.
func splitScheme(s string) (scheme, rest string) {
	if strings.HasPrefix(s, "{") {
		if i := strings.IndexByte(s, '}'); i > 0 {
			return strings.ToUpper(s[1:i]), s[i+1:]
		}
	}
	return SchemeCrypt, s
}

// quoteScheme renders a scheme name for an error message: bounded in length, since the text
// between the braces is at least not a hash we mean to print.
func quoteScheme(s string) string {
	const maxLen = 32
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// parseCredential parses a stored "{SCHEME}hash". Its errors name the scheme but never
// contain the hash.
func parseCredential(s string, lim costLimits) (credential, error) {
	scheme, rest := splitScheme(s)
	switch scheme {
	case SchemeBLFCrypt:
		return parseBcrypt(rest, lim)
	case SchemeSHA512Crypt:
		if !strings.HasPrefix(rest, "$6$") {
			return nil, fmt.Errorf("%s: %w: want $6$", SchemeSHA512Crypt, errMalformed)
		}
		return parseSHACredential(rest, lim)
	case SchemeSHA256Crypt:
		if !strings.HasPrefix(rest, "$5$") {
			return nil, fmt.Errorf("%s: %w: want $5$", SchemeSHA256Crypt, errMalformed)
		}
		return parseSHACredential(rest, lim)
	case SchemeArgon2ID:
		return parseArgon2(rest, argon2idID, lim)
	case SchemeArgon2I:
		return parseArgon2(rest, argon2iID, lim)
	case SchemeCrypt:
		switch {
		case strings.HasPrefix(rest, "$2"):
			return parseBcrypt(rest, lim)
		case strings.HasPrefix(rest, "$5$"), strings.HasPrefix(rest, "$6$"):
			return parseSHACredential(rest, lim)
		}
		return nil, fmt.Errorf("%w %q: only the bcrypt ($2y$) and SHA-crypt ($5$, $6$) kinds of crypt(3) are supported; is a {SCHEME} prefix missing?",
			ErrUnknownScheme, SchemeCrypt)
	case SchemePlain, SchemeClear, SchemeClearText:
		return plainCredential(rest), nil
	}
	return nil, fmt.Errorf("%w %s (supported: %s, %s, %s, %s, %s, %s, %s)", ErrUnknownScheme, quoteScheme(scheme),
		SchemeBLFCrypt, SchemeSHA512Crypt, SchemeSHA256Crypt, SchemeArgon2ID, SchemeArgon2I, SchemeCrypt, SchemePlain)
}

// VerifyHash reports whether password matches hashed, a stored password in Dovecot's
// "{SCHEME}hash" syntax (without a prefix, the hash is taken as {CRYPT}). The error is
// non-nil when hashed cannot be used at all: an unknown scheme or a malformed hash; it does
// not contain the hash. The comparison takes time independent of where the password differs.
func VerifyHash(hashed, password string) (bool, error) {
	return verifyHash(hashed, password, defaultLimits)
}

func verifyHash(hashed, password string, lim costLimits) (bool, error) {
	c, err := parseCredential(hashed, lim)
	if err != nil {
		return false, err
	}
	return verifyCredential(c, password), nil
}

// verifyCredential applies the checks common to every scheme before c.verify.
func verifyCredential(c credential, password string) bool {
	if password == "" || !acceptablePassword(password) {
		// An empty password never logs in, whatever is stored. Still do the work, so that the answer takes the usual time.
		c.verify(nil)
		return false
	}
	return c.verify([]byte(password))
}

// acceptablePassword rejects what no stored hash can match the way Dovecot would match it:
// crypt(3) stops at a NUL byte, and over-long passwords are refused (see MaxPasswordLength).
func acceptablePassword(p string) bool {
	return len(p) <= MaxPasswordLength && strings.IndexByte(p, 0) < 0
}

// Hash returns password hashed with scheme, as "{SCHEME}hash" for a Dovecot passwd-file, with
// the defaults above and a fresh random salt. Schemes: BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT,
// ARGON2ID (see HashSchemes).
func Hash(scheme, password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	if !acceptablePassword(password) {
		return "", fmt.Errorf("password must be at most %d bytes and contain no NUL byte", MaxPasswordLength)
	}
	scheme = strings.ToUpper(scheme)
	var (
		h   string
		err error
	)
	switch scheme {
	case SchemeBLFCrypt:
		h, err = hashBcrypt([]byte(password), DefaultBcryptCost)
	case SchemeSHA512Crypt, SchemeSHA256Crypt:
		v := sha512Crypt
		if scheme == SchemeSHA256Crypt {
			v = sha256Crypt
		}
		h, err = hashSHACrypt(v, []byte(password), DefaultSHACryptRounds)
	case SchemeArgon2ID:
		h, err = hashArgon2(argon2idID, []byte(password), argon2Params{
			time: DefaultArgon2Time, memKiB: DefaultArgon2MemKiB, threads: DefaultArgon2Threads,
			saltLen: 16, keyLen: 32,
		})
	default:
		return "", fmt.Errorf("%w %s for hashing (supported: %s)", ErrUnknownScheme, quoteScheme(scheme),
			strings.Join(HashSchemes(), ", "))
	}
	if err != nil {
		return "", err
	}
	return "{" + scheme + "}" + h, nil
}

// HashSchemes lists the schemes Hash can produce, the default first.
func HashSchemes() []string {
	return []string{SchemeBLFCrypt, SchemeSHA512Crypt, SchemeSHA256Crypt, SchemeArgon2ID}
}

// plainCredential is a stored cleartext password.
type plainCredential string

func (p plainCredential) verify(password []byte) bool {
	// Compare digests so that the time does not depend on either length.
	a := sha256.Sum256([]byte(p))
	b := sha256.Sum256(password)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
func (plainCredential) scheme() string  { return SchemePlain }
func (plainCredential) costKey() string { return SchemePlain }
func (plainCredential) dummy() (credential, error) {
	return plainCredential(randomPassword()), nil
}

// shaCredential is a stored SHA-crypt hash.
type shaCredential struct{ h *shaCryptHash }

func parseSHACredential(s string, lim costLimits) (credential, error) {
	h, err := parseSHACrypt(s, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shaSchemeName(s), err)
	}
	if h.rounds > lim.shaRounds {
		return nil, fmt.Errorf("%s: rounds=%d is above the limit of %d", shaSchemeName(s), h.rounds, lim.shaRounds)
	}
	return shaCredential{h}, nil
}

func shaSchemeName(s string) string {
	if strings.HasPrefix(s, "$5$") {
		return SchemeSHA256Crypt
	}
	return SchemeSHA512Crypt
}

func (c shaCredential) verify(password []byte) bool { return c.h.verify(password) }
func (c shaCredential) scheme() string {
	if c.h.v == sha256Crypt {
		return SchemeSHA256Crypt
	}
	return SchemeSHA512Crypt
}
func (c shaCredential) costKey() string { return fmt.Sprintf("%s/%d", c.scheme(), c.h.rounds) }
func (c shaCredential) dummy() (credential, error) {
	s, err := hashSHACrypt(c.h.v, []byte(randomPassword()), c.h.rounds)
	if err != nil {
		return nil, err
	}
	h, err := parseSHACrypt(s, true)
	if err != nil {
		return nil, err
	}
	return shaCredential{h}, nil
}

// hashSHACrypt hashes with a fresh 16-character salt; rounds other than the default are
// written as "rounds=N$".
func hashSHACrypt(v *shaCryptVariant, password []byte, rounds int) (string, error) {
	salt, err := randomCryptSalt(shaCryptMaxSalt)
	if err != nil {
		return "", err
	}
	h := &shaCryptHash{v: v, rounds: rounds, customRounds: rounds != shaCryptDefaultRounds, salt: salt}
	return h.crypt(password), nil
}

// randomCryptSalt returns n characters of the crypt alphabet from crypto/rand.
func randomCryptSalt(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = cryptAlphabet[b[i]&0x3f] // 64 characters: no modulo bias
	}
	return string(b), nil
}

// randomPassword is what the dummy credentials hash: nobody knows it.
func randomPassword() string { return rand.Text() }

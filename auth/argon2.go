package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2 (RFC 9106) in the PHC string format that libsodium's crypto_pwhash_str writes and
// Dovecot's ARGON2I/ARGON2ID schemes store:
//
//	$argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>
//
// salt and hash in standard base 64 without padding. Only version 19 (0x13, the RFC's) is
// accepted; Go's argon2 does not implement 0x10.

const (
	argon2idID = "argon2id"
	argon2iID  = "argon2i"
	argon2Ver  = argon2.Version // 0x13 = 19

	argon2MinSalt = 8 // RFC 9106 §3.1: S is at least 8 bytes
	argon2MinKey  = 4 // RFC 9106 §3.1: T is at least 4 bytes
	argon2MaxLen  = 1024
)

type argon2Params struct {
	time    uint32
	memKiB  uint32
	threads uint8
	saltLen int
	keyLen  int
}

type argon2Credential struct {
	id   string
	p    argon2Params
	salt []byte
	key  []byte
}

func argon2Scheme(id string) string {
	if id == argon2iID {
		return SchemeArgon2I
	}
	return SchemeArgon2ID
}

func parseArgon2(s, id string, lim costLimits) (credential, error) {
	scheme := argon2Scheme(id)
	bad := func(what string) error { return fmt.Errorf("%s: %w: %s", scheme, errMalformed, what) }
	// "", id, "v=19", params, salt, hash
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return nil, bad("want $" + id + "$v=19$m=...,t=...,p=...$salt$hash")
	}
	if f[1] != id {
		return nil, bad("want $" + id + "$")
	}
	if f[2] != "v="+strconv.Itoa(argon2Ver) {
		return nil, bad("only version v=19 is supported")
	}
	var p argon2Params
	ps := strings.Split(f[3], ",")
	if len(ps) != 3 {
		return nil, bad("want m=...,t=...,p=...")
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(ps[i], name+"=")
		if !ok {
			return nil, bad("want m=...,t=...,p=...")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, bad("bad " + name)
		}
		switch name {
		case "m":
			p.memKiB = uint32(n)
		case "t":
			p.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, bad("bad p")
			}
			p.threads = uint8(n)
		}
	}
	// RFC 9106 §3.1: p >= 1, m >= 8p, t >= 1.
	if p.threads < 1 || p.time < 1 || uint64(p.memKiB) < 8*uint64(p.threads) {
		return nil, bad("parameters out of range")
	}
	if p.memKiB > lim.argonMemKiB || p.time > lim.argonTime || p.threads > lim.argonThreads {
		return nil, fmt.Errorf("%s: m=%d,t=%d,p=%d is above the limit of m=%d,t=%d,p=%d", scheme,
			p.memKiB, p.time, p.threads, lim.argonMemKiB, lim.argonTime, lim.argonThreads)
	}
	salt, err1 := decodeArgon2B64(f[4])
	key, err2 := decodeArgon2B64(f[5])
	if err1 != nil || err2 != nil {
		return nil, bad("bad base 64")
	}
	if len(salt) < argon2MinSalt || len(salt) > argon2MaxLen || len(key) < argon2MinKey || len(key) > argon2MaxLen {
		return nil, bad("salt or hash length out of range")
	}
	p.saltLen, p.keyLen = len(salt), len(key)
	return &argon2Credential{id: id, p: p, salt: salt, key: key}, nil
}

// decodeArgon2B64 decodes standard base 64, padded or not (libsodium writes it unpadded).
func decodeArgon2B64(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

func (c *argon2Credential) derive(password []byte) []byte {
	if c.id == argon2iID {
		return argon2.Key(password, c.salt, c.p.time, c.p.memKiB, c.p.threads, uint32(c.p.keyLen))
	}
	return argon2.IDKey(password, c.salt, c.p.time, c.p.memKiB, c.p.threads, uint32(c.p.keyLen))
}

func (c *argon2Credential) verify(password []byte) bool {
	return subtle.ConstantTimeCompare(c.derive(password), c.key) == 1
}

func (c *argon2Credential) scheme() string { return argon2Scheme(c.id) }
func (c *argon2Credential) costKey() string {
	return fmt.Sprintf("%s/m=%d,t=%d,p=%d,l=%d", c.scheme(), c.p.memKiB, c.p.time, c.p.threads, c.p.keyLen)
}
func (c *argon2Credential) dummy() (credential, error) {
	d := &argon2Credential{id: c.id, p: c.p, salt: make([]byte, c.p.saltLen)}
	if _, err := rand.Read(d.salt); err != nil {
		return nil, err
	}
	d.key = d.derive([]byte(randomPassword()))
	return d, nil
}

func hashArgon2(id string, password []byte, p argon2Params) (string, error) {
	c := &argon2Credential{id: id, p: p, salt: make([]byte, p.saltLen)}
	if _, err := rand.Read(c.salt); err != nil {
		return "", err
	}
	c.key = c.derive(password)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$%s$v=%d$m=%d,t=%d,p=%d$%s$%s", id, argon2Ver, p.memKiB, p.time, p.threads,
		enc.EncodeToString(c.salt), enc.EncodeToString(c.key)), nil
}

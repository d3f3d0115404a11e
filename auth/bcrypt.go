package auth

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt as Dovecot's BLF-CRYPT: Dovecot (through libxcrypt) writes "$2y$NN$", OpenBSD and
// most libraries "$2b$", older ones "$2a$". The three mean the same algorithm for every
// password shorter than 256 bytes; "$2x$" marks hashes made by the crypt_blowfish
// sign-extension bug, which Go's bcrypt does not reproduce, so it is refused at load.

const bcryptHashLen = 60 // "$2b$10$" + 22 characters of salt + 31 of hash

// bcryptMaxPassword is the number of password bytes bcrypt uses; crypt(3) ignores the rest.
const bcryptMaxPassword = 72

type bcryptCredential struct {
	hash []byte // normalised to "$2b$"
	cost int
}

func parseBcrypt(s string, lim costLimits) (credential, error) {
	if len(s) != bcryptHashLen || s[0] != '$' || s[1] != '2' || s[3] != '$' || s[6] != '$' {
		return nil, fmt.Errorf("%s: %w: want $2y$NN$ and 53 characters", SchemeBLFCrypt, errMalformed)
	}
	switch s[2] {
	case 'a', 'b', 'y':
	case 'x':
		return nil, fmt.Errorf("%s: $2x$ hashes (made by the crypt_blowfish 8-bit bug) are not supported", SchemeBLFCrypt)
	default:
		return nil, fmt.Errorf("%s: %w: unknown bcrypt version", SchemeBLFCrypt, errMalformed)
	}
	cost, err := strconv.Atoi(s[4:6])
	if err != nil || cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("%s: %w: bad cost", SchemeBLFCrypt, errMalformed)
	}
	if cost > lim.bcryptCost {
		return nil, fmt.Errorf("%s: cost %d is above the limit of %d", SchemeBLFCrypt, cost, lim.bcryptCost)
	}
	if !validBcryptBase64(s[7:]) {
		return nil, fmt.Errorf("%s: %w: bad character", SchemeBLFCrypt, errMalformed)
	}
	// Go's bcrypt compares the version letter it parsed back into the hash it computes;
	// map Dovecot's $2y$ to the equivalent $2b$ so nothing depends on that.
	h := []byte(s)
	h[2] = 'b'
	if _, err := bcrypt.Cost(h); err != nil {
		return nil, fmt.Errorf("%s: %w", SchemeBLFCrypt, errMalformed)
	}
	return &bcryptCredential{hash: h, cost: cost}, nil
}

// validBcryptBase64 checks the alphabet of bcrypt's base-64 ("./A-Za-z0-9").
func validBcryptBase64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '/' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func (c *bcryptCredential) verify(password []byte) bool {
	if len(password) > bcryptMaxPassword {
		// What crypt(3) does, so a long password set through Dovecot still works.
		password = password[:bcryptMaxPassword]
	}
	err := bcrypt.CompareHashAndPassword(c.hash, password)
	return err == nil
}

func (c *bcryptCredential) scheme() string  { return SchemeBLFCrypt }
func (c *bcryptCredential) costKey() string { return fmt.Sprintf("%s/%d", SchemeBLFCrypt, c.cost) }
func (c *bcryptCredential) dummy() (credential, error) {
	s, err := hashBcrypt([]byte(randomPassword()), c.cost)
	if err != nil {
		return nil, err
	}
	return parseBcrypt(s, costLimits{bcryptCost: bcrypt.MaxCost})
}

// hashBcrypt returns a "$2y$" hash, as doveadm writes it.
func hashBcrypt(password []byte, cost int) (string, error) {
	if len(password) > bcryptMaxPassword {
		return "", fmt.Errorf("%s uses only the first %d bytes of a password: choose a shorter one or another scheme",
			SchemeBLFCrypt, bcryptMaxPassword)
	}
	h, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return "", fmt.Errorf("%s: %w", SchemeBLFCrypt, err)
	}
	if len(h) < 4 || h[0] != '$' || h[1] != '2' {
		return "", errors.New("bcrypt: unexpected hash format")
	}
	h[2] = 'y'
	return string(h), nil
}

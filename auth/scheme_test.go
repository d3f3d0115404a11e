package auth

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// Known answers for the schemes other than SHA-crypt (see shacrypt_test.go).
var knownHashes = []struct{ hash, password string }{
	// Openwall crypt_blowfish's test vector, in the three spellings of the version.
	{"{BLF-CRYPT}$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
	{"{BLF-CRYPT}$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
	{"{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
	{"$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"}, // bare: {CRYPT}
	// doveadm pw -s BLF-CRYPT -p 'correct horse' (libxcrypt writes $2y$)
	{"{BLF-CRYPT}$2y$05$KVMAAarVaveQCyFHTqRNjeMI99.gK4Ci2EJjDlKSIh6EEVHbJKWnu", "correct horse"},
	// doveadm pw -s ARGON2ID -p 'correct horse' (libsodium)
	{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$bd/eABzT8tn+yiA1PHwG3g$/oHCoNJqlxB991JzDIdp8JKDg4HlyMJMJML+7cHcJjE", "correct horse"},
	// doveadm pw -s ARGON2I -p 'correct horse'
	{"{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$gWKHgaXl2bfi2/RH1nnnYg$mnaymg/F2VlAYUcjoBH3J/r722w9fjwZNvLqv7ZThjs", "correct horse"},
	{"{PLAIN}correct horse", "correct horse"},
	{"{clear}correct horse", "correct horse"}, // scheme names ignore case
	{"{CLEARTEXT}a:b", "a:b"},
}

func TestKnownHashes(t *testing.T) {
	for _, v := range knownHashes {
		if ok, err := VerifyHash(v.hash, v.password); err != nil || !ok {
			t.Errorf("VerifyHash(%s) = %v, %v; want true", v.hash, ok, err)
		}
		for _, wrong := range []string{v.password + "x", "", v.password[:len(v.password)-1]} {
			if ok, err := VerifyHash(v.hash, wrong); err != nil || ok {
				t.Errorf("VerifyHash(%s, %q) = %v, %v; want false", v.hash, wrong, ok, err)
			}
		}
	}
}

func TestBcryptLongPasswordLikeCrypt(t *testing.T) {
	// crypt(3) uses the first 72 bytes; a hash made from a longer password by Dovecot must
	// still verify here.
	long := strings.Repeat("0123456789", 8) // 80 bytes
	h, err := hashBcrypt([]byte(long[:72]), 4)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := VerifyHash("{BLF-CRYPT}"+h, long); !ok {
		t.Error("80-byte password does not match its first 72 bytes")
	}
	if _, err := Hash(SchemeBLFCrypt, long); err == nil {
		t.Error("Hash(BLF-CRYPT) accepted a password bcrypt would cut")
	}
}

func TestHashRoundTrip(t *testing.T) {
	t.Parallel()
	made := map[string]string{}
	for _, scheme := range HashSchemes() {
		t.Run(scheme, func(t *testing.T) {
			h, err := Hash(strings.ToLower(scheme), "s3cret pässword")
			made[scheme] = h
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(h, "{"+scheme+"}") {
				t.Fatalf("Hash = %s, want {%s} prefix", h, scheme)
			}
			if ok, err := VerifyHash(h, "s3cret pässword"); err != nil || !ok {
				t.Errorf("VerifyHash(own hash) = %v, %v", ok, err)
			}
			if ok, _ := VerifyHash(h, "s3cret password"); ok {
				t.Error("own hash accepted a wrong password")
			}
			h2, _ := Hash(scheme, "s3cret pässword")
			if h2 == h {
				t.Error("two hashes of one password are equal: salt not random")
			}
		})
	}
	wantPrefix := map[string]string{
		SchemeBLFCrypt:    "{BLF-CRYPT}$2y$10$",
		SchemeSHA512Crypt: "{SHA512-CRYPT}$6$",
		SchemeSHA256Crypt: "{SHA256-CRYPT}$5$",
		SchemeArgon2ID:    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$",
	}
	for s, p := range wantPrefix {
		h := made[s]
		if !strings.HasPrefix(h, p) {
			t.Errorf("Hash(%s) = %s, want prefix %s", s, h, p)
		}
		if s == SchemeSHA512Crypt && (len(h) != len("{SHA512-CRYPT}$6$")+16+1+86 || strings.Contains(h, "rounds=")) {
			// "rounds=" absent means the default, 5000.
			t.Errorf("Hash(%s) = %s, want a 16-character salt and default rounds", s, h)
		}
	}
	for _, bad := range []string{"", "x\x00y", strings.Repeat("x", MaxPasswordLength+1)} {
		if _, err := Hash(SchemeSHA512Crypt, bad); err == nil {
			t.Errorf("Hash(%q...) succeeded", bad[:min(len(bad), 8)])
		}
	}
	if _, err := Hash(SchemePlain, "pw"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("Hash(PLAIN) = %v, want ErrUnknownScheme", err)
	}
}

func TestVerifyHashErrors(t *testing.T) {
	const secret = "Zm9vYmFyc2VjcmV0aGFzaA"
	for _, h := range []string{
		"{MD5-CRYPT}$1$" + secret,
		"{SSHA512}" + secret,
		"{NOPE}" + secret,
		"$1$salt$" + secret, // bare {CRYPT} of an unsupported kind
		secret,              // bare, not crypt at all
		"{BLF-CRYPT}$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
		"{BLF-CRYPT}$2y$05$" + secret,
		"{BLF-CRYPT}$2y$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", // above the cost limit
		"{SHA512-CRYPT}$5$salt$" + secret,
		"{SHA512-CRYPT}$6$rounds=999999999$salt$" + strings.Repeat("a", 86), // above the rounds limit
		"{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$" + secret + "$" + secret,
		"{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$" + secret + "$" + secret,
		"{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$" + secret + "$" + secret, // 4 GiB
		"{ARGON2ID}$argon2id$v=19$m=65536,t=0,p=1$" + secret + "$" + secret,
		"{ARGON2ID}$argon2id$v=19$t=3,m=65536,p=1$" + secret + "$" + secret,
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$!!$" + secret,
	} {
		ok, err := VerifyHash(h, "pw")
		if err == nil || ok {
			t.Errorf("VerifyHash(%s) = %v, %v; want an error", h, ok, err)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "CCCCCCCC") {
			t.Errorf("error shows the hash: %v", err)
		}
	}
	if _, err := VerifyHash("{NOPE}x", "pw"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("unknown scheme: %v, want ErrUnknownScheme", err)
	}
}

// TestDoveadm runs the real Dovecot both ways, when it is installed: hashes doveadm makes
// verify here, and hashes Hash makes verify in `doveadm pw -t`.
func TestDoveadm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Dovecot")
	}
	doveadm, err := exec.LookPath("doveadm")
	if err != nil {
		t.Skip("doveadm not installed")
	}
	t.Parallel()
	passwords := []string{"correct horse", "pässwörd", "x", strings.Repeat("long password ", 8)}
	schemes := []string{SchemeBLFCrypt, SchemeSHA512Crypt, SchemeSHA256Crypt, SchemeArgon2ID, SchemeArgon2I}
	for _, scheme := range schemes {
		pws := passwords
		if strings.HasPrefix(scheme, "ARGON2") {
			pws = passwords[:2] // 64 MiB each, slow under -race
		}
		for _, pw := range pws {
			args := []string{"pw", "-s", scheme, "-p", pw}
			if scheme == SchemeBLFCrypt {
				args = append(args, "-r", "6") // keep the test quick
			}
			out, err := exec.Command(doveadm, args...).Output()
			if err != nil {
				t.Fatalf("doveadm %v: %v", args, err)
			}
			h := strings.TrimSpace(string(out))
			if ok, err := VerifyHash(h, pw); err != nil || !ok {
				t.Errorf("doveadm's %s: VerifyHash = %v, %v", h, ok, err)
			}
			if ok, _ := VerifyHash(h, "!"+pw); ok {
				t.Errorf("doveadm's %s accepted a wrong password", h)
			}
			if scheme == SchemeArgon2I {
				continue // Hash does not make ARGON2I
			}
			if scheme == SchemeBLFCrypt && len(pw) > bcryptMaxPassword {
				continue
			}
			ours, err := Hash(scheme, pw)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(doveadm, "pw", "-t", ours, "-p", pw).CombinedOutput(); err != nil {
				t.Errorf("doveadm pw -t %s: %v: %s", ours, err, out)
			}
			if err := exec.Command(doveadm, "pw", "-t", ours, "-p", "!"+pw).Run(); err == nil {
				t.Errorf("doveadm accepted a wrong password for %s", ours)
			}
		}
	}
}

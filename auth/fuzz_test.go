package auth

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// fuzzLimits keep one fuzz input cheap: the default limits allow hashes that take seconds
// (and Argon2 a gigabyte), which is right for a users file but would stall the fuzzer.
var fuzzLimits = costLimits{bcryptCost: 5, shaRounds: 2000, argonTime: 2, argonMemKiB: 64, argonThreads: 2}

// FuzzParseLine: any line parses or fails without panicking, errors never contain the
// password field, and whole files of such lines load or fail the same way.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"alice:{PLAIN}pw",
		"alice@example.org:{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G",
		"# comment",
		"",
		"bob:*",
		"carol:!$6$x$y",
		"dave:",
		":x",
		"x",
		"x:{",
		"x:{}",
		"x:{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, ok, err := parseLine(line)
		if err != nil {
			if ok {
				t.Fatal("error and ok")
			}
			return
		}
		if !ok {
			return
		}
		if e.user == "" || strings.ContainsAny(e.user, ": \t") {
			t.Fatalf("bad user %q", e.user)
		}
		if strings.Contains(e.hash, ":") || strings.Contains(e.hash, "\n") {
			t.Fatalf("hash field %q runs past its field", e.hash)
		}
		// The user name may appear in errors; the hash may not (unless it is part of the
		// name, or so short that it appears by chance).
		showsHash := func(err error) bool {
			msg := strings.ReplaceAll(err.Error(), fmt.Sprintf("%q", e.user), "")
			return len(e.hash) >= 16 && strings.Contains(msg, e.hash)
		}
		if _, err := parseCredential(e.hash, fuzzLimits); err != nil && showsHash(err) {
			t.Fatalf("error shows the hash: %v", err)
		}
		if _, err := parseTable("f", []byte(line+"\n"+line), discardLogger()); err != nil && showsHash(err) {
			t.Fatalf("file error shows the hash: %v", err)
		}
	})
}

// FuzzVerifyHash: no stored string, however malformed, makes verification panic, and a
// hash that parses does not verify a different password than the one it was made from
// (checked for the plain scheme, where the answer is known).
func FuzzVerifyHash(f *testing.F) {
	for _, v := range shaCryptSpecVectors {
		f.Add(v[2], v[1])
	}
	for _, v := range knownHashes {
		f.Add(v.hash, v.password)
	}
	for _, s := range []string{
		"{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA==",
		"{ARGON2I}$argon2i$v=19$m=16,t=2,p=2$c2FsdHNhbHQ$aGFzaGhhc2g",
		"{SHA256-CRYPT}$5$rounds=1000$$" + strings.Repeat(".", 43),
		"{BLF-CRYPT}$2y$04$" + strings.Repeat("A", 53),
		"$6$", "{", "{}", "{PLAIN}", "$2", "$5$rounds=$x$y",
	} {
		f.Add(s, "pw")
	}
	f.Fuzz(func(t *testing.T, hashed, password string) {
		ok, err := verifyHash(hashed, password, fuzzLimits)
		if err != nil && ok {
			t.Fatal("error and ok")
		}
		if err == nil && password == "" && ok {
			t.Fatal("empty password verified")
		}
		if scheme, rest := splitScheme(hashed); scheme == SchemePlain && err == nil {
			if ok != (rest == password && password != "" && acceptablePassword(password)) {
				t.Fatalf("PLAIN %q vs %q = %v", rest, password, ok)
			}
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

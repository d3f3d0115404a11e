package auth

import (
	"os/exec"
	"strings"
	"testing"
)

// The test vectors of Ulrich Drepper's specification "Unix crypt using SHA-256 and SHA-512",
// as setting, key, result. They cover the salt cut to 16 characters, explicit rounds, and
// rounds below the minimum raised to 1000.
var shaCryptSpecVectors = [][3]string{
	{"$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
	{"$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
	{"$5$rounds=5000$toolongsaltstring", "This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
	{"$5$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
	{"$5$rounds=77777$short", "we have a short salt string but not a short password", "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"},
	{"$5$rounds=123456$asaltof16chars..", "a short string", "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"},
	{"$5$rounds=10$roundstoolow", "the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"},
	{"$6$saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"$6$rounds=10000$saltstringsaltstring", "Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
	{"$6$rounds=5000$toolongsaltstring", "This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
	{"$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
	{"$6$rounds=77777$short", "we have a short salt string but not a short password", "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
	{"$6$rounds=123456$asaltof16chars..", "a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
	{"$6$rounds=10$roundstoolow", "the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
}

func TestSHACryptSpecVectors(t *testing.T) {
	for _, v := range shaCryptSpecVectors {
		got, err := shaCrypt(v[1], v[0])
		if err != nil {
			t.Fatalf("shaCrypt(%q): %v", v[0], err)
		}
		if got != v[2] {
			t.Errorf("shaCrypt(%q, %q)\n got %s\nwant %s", v[1], v[0], got, v[2])
		}
		// The result, as a stored hash, verifies the key and nothing else.
		scheme := SchemeSHA512Crypt
		if strings.HasPrefix(v[2], "$5$") {
			scheme = SchemeSHA256Crypt
		}
		for _, stored := range []string{"{" + scheme + "}" + v[2], v[2] /* bare: {CRYPT} */} {
			if ok, err := VerifyHash(stored, v[1]); err != nil || !ok {
				t.Errorf("VerifyHash(%s, key) = %v, %v; want true", stored, ok, err)
			}
			if ok, err := VerifyHash(stored, v[1]+"x"); err != nil || ok {
				t.Errorf("VerifyHash(%s, wrong) = %v, %v; want false", stored, ok, err)
			}
		}
	}
}

// Hashes made here by glibc/libxcrypt through `openssl passwd` and doveadm.
var shaCryptToolVectors = []struct{ hash, password string }{
	// openssl passwd -6 -salt NaCl1234 'open sesame'
	{"{SHA512-CRYPT}$6$NaCl1234$4AkWpP2L4Kg2.csXaTL8gchW7laNHcfqKcHfyd926v4DMgobbgSYE.oFXOgQub8XiL.EQ8oWQu0hMMbJyjlGK1", "open sesame"},
	// openssl passwd -5 -salt NaCl1234 'open sesame'
	{"{SHA256-CRYPT}$5$NaCl1234$E0/9u8GBianuQ54rBOBpElhIBSjX3B7fY176HPqe3PB", "open sesame"},
	// doveadm pw -s SHA512-CRYPT -p 'correct horse'
	{"{SHA512-CRYPT}$6$Viewf8ikiHkbhUan$MKobXDxPaSG9nn8H4ERZmv2QMEq6EjElOGFjqhIu.ayv3UAfMWtB68EVejzNJvWNuBK5HDXM3i2GH.ZkqqQq20", "correct horse"},
	// doveadm pw -s SHA256-CRYPT -p 'correct horse'
	{"{SHA256-CRYPT}$5$Jb9QR4EUm9ZKWzBL$fQKNutIkE3XtXXgZl7hMT5MKatUQ9nEbJlt7x18LWE7", "correct horse"},
	// doveadm pw -s SHA512-CRYPT -r 10000 -p 'pässwörd' (UTF-8)
	{"{SHA512-CRYPT}$6$rounds=10000$Xt4xvsQouz5IvIz4$YMQS6fN0B1v.glWbjAMCeF/C2ve5OHujz.8IkGWveU3eKukKqJEq9bdePWsTLqzjkmnt47J6BUWJHCHyL4aRd1", "pässwörd"},
}

func TestSHACryptToolVectors(t *testing.T) {
	for _, v := range shaCryptToolVectors {
		if ok, err := VerifyHash(v.hash, v.password); err != nil || !ok {
			t.Errorf("VerifyHash(%s) = %v, %v; want true", v.hash, ok, err)
		}
		if ok, _ := VerifyHash(v.hash, strings.ToUpper(v.password)); ok {
			t.Errorf("VerifyHash(%s) accepted a wrong password", v.hash)
		}
	}
}

// TestSHACryptAgainstOpenSSL hashes passwords of every length from 0 to 200 bytes (the
// block boundaries of both digests matter in steps 9-11) with openssl's crypt, when
// openssl is installed, and compares byte for byte.
func TestSHACryptAgainstOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	lengths := []int{1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200}
	for _, n := range lengths {
		pw := strings.Repeat("pw0123456789", 20)[:n]
		for _, kind := range []string{"-5", "-6"} {
			salt := "salt" + kind[1:] + strings.Repeat("x", n%12)
			out, err := exec.Command(openssl, "passwd", kind, "-salt", salt, pw).Output()
			if err != nil {
				t.Fatalf("openssl passwd %s: %v", kind, err)
			}
			want := strings.TrimSpace(string(out))
			got, err := shaCrypt(pw, want)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("len %d %s: got %s, openssl %s", n, kind, got, want)
			}
		}
	}
}

// TestSHACryptAgainstPythonCrypt does the same with Python's crypt module (glibc's or
// libxcrypt's crypt(3)), including explicit rounds, when python3 has the module.
func TestSHACryptAgainstPythonCrypt(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	settings := []string{"$6$abc", "$6$rounds=1000$ABCDEFGHIJKLMNOP", "$5$rounds=4321$./09azAZ", "$5$", "$6$rounds=5000$s"}
	pws := []string{"a", "pässwörd", strings.Repeat("long", 40)}
	script := `import sys, warnings
warnings.simplefilter("ignore")
try:
    import crypt
except ImportError:
    sys.exit(3)
for line in sys.stdin.read().split("\n")[:-1]:
    s, p = line.split("\t")
    print(crypt.crypt(p, s))`
	var in strings.Builder
	for _, s := range settings {
		for _, p := range pws {
			in.WriteString(s + "\t" + p + "\n")
		}
	}
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		t.Skip("python3 has no crypt module")
	}
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	i := 0
	for _, s := range settings {
		for _, p := range pws {
			got, err := shaCrypt(p, s)
			if err != nil {
				t.Fatal(err)
			}
			if got != lines[i] {
				t.Errorf("crypt(%q, %q): got %s, python %s", p, s, got, lines[i])
			}
			i++
		}
	}
}

func TestParseSHACryptMalformed(t *testing.T) {
	good := "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
	for _, s := range []string{
		"$6$saltstring",                             // no digest
		"$6$saltstring$short",                       // digest too short
		good + "x",                                  // too long
		"$6$rounds=abc$salt$" + good[14:],           // bad rounds
		"$6$rounds=5000" + good[13:],                // rounds with trailing garbage
		"$6$" + strings.Repeat("s", 17) + good[13:], // salt longer than 16
		"$6$saltstring$" + strings.Repeat("!", 86),  // bad alphabet
		"$7$saltstring" + good[13:],
	} {
		if _, err := parseSHACrypt(s, true); err == nil {
			t.Errorf("parseSHACrypt(%q) succeeded", s)
		}
	}
	if _, err := parseSHACrypt(good, true); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSHA512Crypt5000(b *testing.B) {
	h, _ := parseSHACrypt("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", true)
	for b.Loop() {
		h.verify([]byte("Hello world!"))
	}
}

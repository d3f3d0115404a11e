package mimestruct

import (
	"bytes"
	"reflect"
	"testing"
)

// fuzzSeeds are small messages that reach the parser's corners; the committed
// corpus in testdata/fuzz holds more, kept from fuzzing runs.
var fuzzSeeds = []string{
	"",
	"Subject: x\r\n\r\nbody\r\n",
	"Subject: x\nbody\n",
	"From x@y Mon Jan  2 15:04:05 2006\nSubject: x\n\n",
	nested,
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\n--b--",
	"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: s\n\nx\n--d--\n",
	"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
	"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n--a--\n",
	"To: g: a@b, \"q\\\"x\" <c@d>;, (c) e@f (n)\r\nSubject: =?utf-8?b?w6Q=?= =?x?q?a?=\r\n\r\n",
	"Content-Type: text/plain; name*0*=utf-8''%E2; name*1*=%82%AC; x*=''a\r\n\r\n",
}

// FuzzParse checks the invariants for any input, that writing it in pieces
// gives the same Info, and that the Info survives its encoding.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, raw []byte, chunk uint16) {
		info, err := Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		checkInfo(t, raw, info)
		if got := parseChunked(t, raw, int(chunk%509)+1); !reflect.DeepEqual(got, info) {
			t.Fatalf("written %d bytes at a time: %s", chunk%509+1, diff(info, got))
		}
		enc, err := info.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back Info
		if err := back.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&back, info) {
			t.Fatalf("encoding round trip: %s", diff(info, &back))
		}
	})
}

// FuzzUnmarshal checks that no stored bytes make UnmarshalBinary panic, and
// that what it accepts encodes again to the same Info.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range fuzzSeeds {
		info, err := Parse(bytes.NewReader([]byte(s)))
		if err != nil {
			f.Fatal(err)
		}
		enc, err := info.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var info Info
		if err := info.UnmarshalBinary(b); err != nil {
			return
		}
		enc, err := info.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Info
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatalf("decoding what it encoded: %v", err)
		}
		if !reflect.DeepEqual(&again, &info) {
			t.Fatalf("round trip: %s", diff(&info, &again))
		}
	})
}

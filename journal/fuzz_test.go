package journal

import (
	"bytes"
	"testing"
)

// FuzzSummary checks the header parser and the identity hasher on arbitrary
// input: they never panic, the result does not depend on how the stream is split
// into writes, and summary values are single lines within their cap.
func FuzzSummary(f *testing.F) {
	f.Add([]byte("From: a@b\r\nSubject: x\r\n y\r\n\r\nbody\r\n"))
	f.Add([]byte("Received: x\nSubject: \xff\x00\r\n\n"))
	f.Add([]byte(" folded first\r\n\r\n"))
	f.Add([]byte("Subject: no end\r"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env := Envelope{MailFrom: "s@example.org", Recipients: []Recipient{{Address: "r@example.com"}}}

		whole := NewIdentityHasher()
		whole.Write(data)
		sum, id := whole.Summary(), whole.ID(env)
		if whole.Size() != int64(len(data)) {
			t.Fatalf("size %d, want %d", whole.Size(), len(data))
		}

		// Split the stream at positions taken from the data itself, so that the
		// fuzzer explores write boundaries too.
		parts := NewIdentityHasher()
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := 1 + int(data[i%len(data)])%7
			n = min(n, len(rest))
			parts.Write(rest[:n])
			rest = rest[n:]
		}
		if got := parts.Summary(); got != sum {
			t.Fatalf("split summary %+q, whole %+q", got, sum)
		}
		if got := parts.ID(env); got != id {
			t.Fatalf("split id %s, whole %s", got, id)
		}

		// The same with a tiny header limit, which real input rarely reaches.
		small := NewIdentityHasher()
		small.limit = 32
		small.Write(data)
		smallParts := NewIdentityHasher()
		smallParts.limit = 32
		for i := 0; i < len(data); i += 3 {
			smallParts.Write(data[i:min(i+3, len(data))])
		}
		if a, b := small.Summary(), smallParts.Summary(); a != b {
			t.Fatalf("limited: split summary %+q, whole %+q", b, a)
		}
		if a, b := small.ID(env), smallParts.ID(env); a != b {
			t.Fatalf("limited: split id %s, whole %s", b, a)
		}

		for _, v := range []string{sum.From, sum.To, sum.Cc, sum.Subject, sum.Date, sum.MessageID} {
			if len(v) > SummaryFieldMax {
				t.Fatalf("value of %d bytes over the cap", len(v))
			}
			if bytes.ContainsAny([]byte(v), "\r\n") {
				t.Fatalf("value %q holds a line break", v)
			}
		}
	})
}

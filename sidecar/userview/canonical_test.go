package userview

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// FuzzCanonical checks canonical's promises for any flag list: system flags
// first in their fixed order, then keywords sorted, no two equal ignoring
// case, every input flag represented, and a canonical set stays as it is.
func FuzzCanonical(f *testing.F) {
	f.Add(`\Seen $Label1 \seen \Flagged`)
	f.Add(`a A b B \Draft \Deleted \Answered \Flagged \Seen`)
	f.Add(`\Recent`)
	f.Add(`(bad) ` + strings.Repeat("x", MaxKeywordLength+1))
	f.Fuzz(func(t *testing.T, in string) {
		flags := strings.Fields(in)
		out, err := canonical(flags)
		if err != nil {
			return
		}
		lower := map[string]bool{}
		for i, fl := range out {
			k := strings.ToLower(fl)
			if lower[k] {
				t.Fatalf("canonical(%q) = %q: %q twice", flags, out, fl)
			}
			lower[k] = true
			if i > 0 {
				a, b := out[i-1], fl
				sa, sb := strings.HasPrefix(a, `\`), strings.HasPrefix(b, `\`)
				switch {
				case sa && sb && slices.Index(systemFlags, a) >= slices.Index(systemFlags, b),
					!sa && sb,
					!sa && !sb && a >= b:
					t.Fatalf("canonical(%q) = %q: out of order at %d", flags, out, i)
				}
			}
		}
		for _, fl := range flags {
			if !lower[strings.ToLower(fl)] {
				t.Fatalf("canonical(%q) = %q: %q lost", flags, out, fl)
			}
		}
		again, err := canonical(out)
		if err != nil || !slices.Equal(again, out) {
			t.Fatalf("canonical(%q) = %q, %v; not stable", out, again, err)
		}
	})
}

// BenchmarkCanonical: the cost of canonical per keyword named, for 200 and
// for 20,000 keywords in one STORE; a client chooses how many it sends, so
// the two must stay close (linear time; the quadratic de-duplication this
// replaced made the second about 100 times the first per keyword).
//
//	go test -run XXX -bench Canonical ./sidecar/userview/
func BenchmarkCanonical(b *testing.B) {
	for _, n := range []int{200, 20000} {
		flags := make([]string, n)
		for i := range flags {
			flags[i] = fmt.Sprintf("Keyword%d", i)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := canonical(flags); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/keyword")
		})
	}
}

package imap

import (
	"math/rand/v2"
	"slices"
	"testing"

	goimap "github.com/emersion/go-imap/v2"
)

// resolveByMarks is resolve as a pass over the whole mailbox, the reference
// for TestResolve.
func resolveByMarks(v *view, set goimap.NumSet) []int {
	n := len(v.msgs)
	marked := make([]bool, n)
	switch set := set.(type) {
	case goimap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = uint32(n)
			}
			if stop == 0 {
				stop = uint32(n)
			}
			if start > stop {
				start, stop = stop, start
			}
			for i := start; i >= 1 && i <= stop && i <= uint32(n); i++ {
				marked[i-1] = true
			}
		}
	case goimap.UIDSet:
		for i, m := range v.msgs {
			for _, r := range set {
				start, stop := uint32(r.Start), uint32(r.Stop)
				if start == 0 {
					start = v.maxUID()
				}
				if stop == 0 {
					stop = v.maxUID()
				}
				if start > stop {
					start, stop = stop, start
				}
				if m.uid >= start && m.uid <= stop {
					marked[i] = true
				}
			}
		}
	}
	var out []int
	for i, m := range marked {
		if m {
			out = append(out, i)
		}
	}
	return out
}

// TestResolve checks resolve against the reference on random mailboxes with
// holes in their UIDs and random, overlapping, reversed sets.
func TestResolve(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		v := &view{}
		uid := uint32(0)
		for range r.IntN(30) {
			uid += 1 + uint32(r.IntN(3))
			v.msgs = append(v.msgs, &vmsg{uid: uid})
		}
		num := func(limit int) uint32 {
			if r.IntN(5) == 0 {
				return 0 // "*"
			}
			return 1 + uint32(r.IntN(limit+3))
		}
		var seqs goimap.SeqSet
		var uids goimap.UIDSet
		for range 1 + r.IntN(4) {
			seqs = append(seqs, goimap.SeqRange{Start: num(len(v.msgs)), Stop: num(len(v.msgs))})
			uids = append(uids, goimap.UIDRange{Start: goimap.UID(num(int(uid))), Stop: goimap.UID(num(int(uid)))})
		}
		got, err := v.resolve(uids)
		if want := resolveByMarks(v, uids); err != nil || !slices.Equal(got, want) {
			t.Fatalf("%d messages to UID %d, UID %v: got %v, %v; want %v", len(v.msgs), uid, uids, got, err, want)
		}
		got, err = v.resolve(seqs)
		outOfRange := false
		for _, sr := range seqs {
			outOfRange = outOfRange || (sr.Start != 0 && sr.Stop != 0 && max(sr.Start, sr.Stop) > uint32(len(v.msgs)))
		}
		if outOfRange {
			if err == nil {
				t.Fatalf("%d messages, %v: no error", len(v.msgs), seqs)
			}
			continue
		}
		if want := resolveByMarks(v, seqs); err != nil || !slices.Equal(got, want) {
			t.Fatalf("%d messages, %v: got %v, %v; want %v", len(v.msgs), seqs, got, err, want)
		}
	}
}

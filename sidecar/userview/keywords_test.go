package userview_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/sidecar/userview"
)

func keywordList(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

func TestKeywordLimits(t *testing.T) {
	ctx := context.Background()
	j := open(t, t.TempDir())
	defer j.Close()
	add(t, j, 1, "alice")
	add(t, j, 2, "alice")
	s := userview.New(j)

	full := keywordList("k", userview.MaxKeywords)
	got, err := s.AddFlags(ctx, "alice", 1, append(slices.Clone(full), `\Seen`))
	if err != nil || len(got) != userview.MaxKeywords+1 {
		t.Fatalf("AddFlags of %d keywords: %d flags, %v", userview.MaxKeywords, len(got), err)
	}
	// The same keywords in another case add nothing (RFC 9051 §2.3.2).
	upper := keywordList("K", userview.MaxKeywords)
	if got, err := s.AddFlags(ctx, "alice", 1, upper); err != nil || len(got) != userview.MaxKeywords+1 {
		t.Fatalf("AddFlags of the same keywords: %d flags, %v", len(got), err)
	}
	// System flags do not count as keywords.
	if _, err := s.AddFlags(ctx, "alice", 1, []string{`\Flagged`, `\Answered`}); err != nil {
		t.Fatalf("AddFlags of system flags on a message full of keywords: %v", err)
	}
	if _, err := s.AddFlags(ctx, "alice", 1, []string{"one-more"}); !errors.Is(err, userview.ErrTooManyKeywords) || !errors.Is(err, userview.ErrLimit) {
		t.Fatalf("AddFlags over the limit: %v", err)
	}
	if _, err := s.SetFlags(ctx, "alice", 2, keywordList("s", userview.MaxKeywords+1)); !errors.Is(err, userview.ErrTooManyKeywords) {
		t.Fatalf("SetFlags over the limit: %v", err)
	}
	if fl, _ := s.Flags(ctx, "alice", 2); fl != nil {
		t.Fatalf("refused SetFlags stored %v", fl)
	}
	if _, err := s.AddFlags(ctx, "alice", 2, []string{strings.Repeat("x", userview.MaxKeywordLength+1)}); !errors.Is(err, userview.ErrKeywordTooLong) {
		t.Fatalf("AddFlags of a long keyword: %v", err)
	}
	if _, err := s.AddFlags(ctx, "alice", 2, []string{strings.Repeat("x", userview.MaxKeywordLength)}); err != nil {
		t.Fatalf("AddFlags of a keyword of the longest length: %v", err)
	}

	// SetFlags replacing a full set by another full set is allowed.
	if got, err := s.SetFlags(ctx, "alice", 1, upper[1:]); err != nil || len(got) != userview.MaxKeywords-1 {
		t.Fatalf("SetFlags within the limit: %d flags, %v", len(got), err)
	}
	// Many keywords named at once (their cost per keyword:
	// BenchmarkCanonical): 20000 of which 64 are set are removed, 20000 new
	// ones are refused.
	if got, err := s.RemoveFlags(ctx, "alice", 1, keywordList("k", 20000)); err != nil || got != nil {
		t.Fatalf("RemoveFlags = %v, %v", got, err)
	}
	if _, err := s.AddFlags(ctx, "alice", 1, keywordList("z", 20000)); !errors.Is(err, userview.ErrTooManyKeywords) {
		t.Fatalf("AddFlags of 20000 keywords: %v", err)
	}
}

// A message stored with more keywords than the limit (a limit lowered since)
// can still lose keywords, but gains none.
func TestKeywordLimitOverfullMessage(t *testing.T) {
	ctx := context.Background()
	j := open(t, t.TempDir())
	defer j.Close()
	add(t, j, 1, "alice")
	s := userview.New(j)
	over := keywordList("k", userview.MaxKeywords+10)
	v, err := json.Marshal(map[string][]string{"f": over})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetControl(ctx, "view/alice/0000000001", v); err != nil {
		t.Fatal(err)
	}
	if fl, err := s.Flags(ctx, "alice", 1); err != nil || len(fl) != len(over) {
		t.Fatalf("stored flags: %d, %v", len(fl), err)
	}
	if _, err := s.AddFlags(ctx, "alice", 1, []string{"new"}); !errors.Is(err, userview.ErrTooManyKeywords) {
		t.Fatalf("AddFlags on an overfull message: %v", err)
	}
	if got, err := s.AddFlags(ctx, "alice", 1, []string{`\Seen`}); err != nil || len(got) != len(over)+1 {
		t.Fatalf("AddFlags of \\Seen on an overfull message: %d flags, %v", len(got), err)
	}
	if got, err := s.RemoveFlags(ctx, "alice", 1, over[:5]); err != nil || len(got) != len(over)-4 {
		t.Fatalf("RemoveFlags on an overfull message: %d flags, %v", len(got), err)
	}
}

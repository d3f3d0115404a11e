package imap

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	goimap "github.com/emersion/go-imap/v2"
)

// TestSearchTextKeyLimit: one SEARCH carries at most maxSearchTextKeys
// strings to look for, of at most maxSearchTextBytes in all; past either it
// answers NO [LIMIT] without opening a message, as each string costs a pass
// over every message searched.
func TestSearchTextKeyLimit(t *testing.T) {
	f := newFixture(t)
	cj := &countingJournal{Journal: f.j}
	ts := startServer(t, f, "", func(o *Options) { o.Journal = cj }, nil)
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")

	keys := func(n int, prefix string) []string {
		var ks []string
		for i := range n {
			ks = append(ks, fmt.Sprintf("%s%d", prefix, i))
		}
		return ks
	}
	opens := func() int64 { return cj.opens.Load() + cj.items.Load() + cj.reads.Load() }

	// At the bound: searched, and the one message holding every string is
	// found. msgOne's body holds every substring of these lines.
	var present []string
	for _, l := range []string{"first line", "hello world"} {
		for i := range len(l) {
			for j := i + 1; j <= len(l) && len(present) < maxSearchTextKeys; j++ {
				if !slices.Contains(present, l[i:j]) {
					present = append(present, l[i:j])
				}
			}
		}
	}
	if len(present) != maxSearchTextKeys {
		t.Fatalf("%d strings", len(present))
	}
	before := opens()
	data, err := c.Search(&goimap.SearchCriteria{Text: present[:maxSearchTextKeys/2], Body: present[maxSearchTextKeys/2:]}, nil).Wait()
	if err != nil || !slices.Equal(data.AllSeqNums(), []uint32{1}) {
		t.Fatalf("SEARCH with %d keys: %v %v", maxSearchTextKeys, data, err)
	}
	if opens() == before {
		t.Errorf("SEARCH with %d keys read no message", maxSearchTextKeys)
	}
	_, err = c.Search(&goimap.SearchCriteria{Text: present[:maxSearchTextKeys/2], Body: append(present[maxSearchTextKeys/2:], "one more")}, nil).Wait()
	if statusCode(err) != goimap.ResponseCodeLimit {
		t.Errorf("SEARCH with %d keys: %v, want NO [LIMIT]", maxSearchTextKeys+1, err)
	}

	over := []struct {
		name string
		cr   *goimap.SearchCriteria
	}{
		{"65 TEXT", &goimap.SearchCriteria{Text: keys(maxSearchTextKeys+1, "k")}},
		{"TEXT, BODY and HEADER", &goimap.SearchCriteria{Text: keys(30, "t"), Body: keys(30, "b"),
			Header: []goimap.SearchCriteriaHeaderField{{Key: "X-A", Value: "1"}, {Key: "X-B", Value: "2"},
				{Key: "Subject", Value: "3"}, {Key: "From", Value: "4"}, {Key: "To", Value: "5"}}}},
		{"nested in NOT and OR", &goimap.SearchCriteria{Not: []goimap.SearchCriteria{{Text: keys(40, "n")}},
			Or: [][2]goimap.SearchCriteria{{{Body: keys(20, "o")}, {Text: keys(5, "p")}}}}},
		// go-imap takes literals of up to 4096 bytes in a SEARCH.
		{"long strings", &goimap.SearchCriteria{Text: longKeys(maxSearchTextBytes/4000 + 1)}},
	}
	for _, tc := range over {
		before := opens()
		_, err := c.Search(tc.cr, nil).Wait()
		if statusCode(err) != goimap.ResponseCodeLimit {
			t.Errorf("%s: %v, want NO [LIMIT]", tc.name, err)
		}
		if n := opens() - before; n != 0 {
			t.Errorf("%s: opened %d messages before refusing", tc.name, n)
		}
	}
	// Long strings within the bound.
	if data, err := c.Search(&goimap.SearchCriteria{Text: longKeys(maxSearchTextBytes / 4000)}, nil).Wait(); err != nil || len(data.AllSeqNums()) != 0 {
		t.Errorf("SEARCH with %d bytes of strings: %v %v", maxSearchTextBytes/4000*4000, data, err)
	}
	// The same string many times: one matcher.
	same := make([]string, maxSearchTextKeys)
	for i := range same {
		same[i] = "HELLO"
	}
	if data, err := c.Search(&goimap.SearchCriteria{Text: same}, nil).Wait(); err != nil || !slices.Equal(data.AllSeqNums(), []uint32{1}) {
		t.Errorf("SEARCH with one string repeated: %v %v", data, err)
	}
	// The connection still works.
	if data, err := c.Search(&goimap.SearchCriteria{Body: []string{"for both"}}, nil).Wait(); err != nil || !slices.Equal(data.AllSeqNums(), []uint32{2}) {
		t.Errorf("SEARCH after NO [LIMIT]: %v %v", data, err)
	}
}

// TestFetchBinarySizeOnce: many BINARY.SIZE items (and BINARY items) of one
// part decode it once per message, and all answer the decoded size (RFC 3516
// §4.2).
func TestFetchBinarySizeOnce(t *testing.T) {
	f := newFixture(t)
	cj := &countingJournal{Journal: f.j}
	// Past prefetchMax, so that the decoding reads the journal every time.
	payload := strings.Repeat("0123456789abcdef", 8<<10)
	enc := base64.StdEncoding.EncodeToString([]byte(payload))
	var lines strings.Builder
	for len(enc) > 76 {
		lines.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	lines.WriteString(enc + "\r\n")
	appendMsg(t, f, "Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"+
		"--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"+lines.String()+
		"--x\r\nContent-Type: text/plain\r\n\r\nsmall\r\n--x--\r\n", "alice")
	ts := startServer(t, f, "", func(o *Options) { o.Journal = cj }, nil)
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")
	opens := func() int64 { return cj.opens.Load() + cj.items.Load() + cj.reads.Load() }

	fetchSizes := func(n int) int64 {
		t.Helper()
		o := &goimap.FetchOptions{UID: true}
		for range n {
			o.BinarySectionSize = append(o.BinarySectionSize, &goimap.FetchItemBinarySectionSize{Part: []int{1}})
		}
		o.BinarySectionSize = append(o.BinarySectionSize, &goimap.FetchItemBinarySectionSize{Part: []int{2}})
		before := opens()
		m := fetchOne(t, c, goimap.UIDSetNum(4), o)
		if got, ok := m.FindBinarySectionSize([]int{1}); !ok || got != uint32(len(payload)) {
			t.Errorf("BINARY.SIZE[1] = %d %v, want %d", got, ok, len(payload))
		}
		if got, ok := m.FindBinarySectionSize([]int{2}); !ok || got != 5 {
			t.Errorf("BINARY.SIZE[2] = %d %v, want 5", got, ok)
		}
		return opens() - before
	}
	one := fetchSizes(1)
	if one < 1 {
		t.Fatalf("BINARY.SIZE[1] read the message %d times", one)
	}
	if many := fetchSizes(500); many != one {
		t.Errorf("500 BINARY.SIZE[1] read the message %d times, one read it %d times", many, one)
	}

	// BINARY[1] with BINARY.SIZE[1]: one decoding to size the part, then
	// the literal streamed.
	whole := &goimap.FetchItemBinarySection{Part: []int{1}, Peek: true}
	o := &goimap.FetchOptions{BinarySection: []*goimap.FetchItemBinarySection{whole}}
	for range 100 {
		o.BinarySectionSize = append(o.BinarySectionSize, &goimap.FetchItemBinarySectionSize{Part: []int{1}})
	}
	before := opens()
	m := fetchOne(t, c, goimap.UIDSetNum(4), o)
	if got := string(m.FindBinarySection(whole)); got != payload {
		t.Errorf("BINARY[1]: %d bytes, want %d", len(got), len(payload))
	}
	if got, ok := m.FindBinarySectionSize([]int{1}); !ok || got != uint32(len(payload)) {
		t.Errorf("BINARY.SIZE[1] = %d %v", got, ok)
	}
	if n := opens() - before; n != one+1 {
		t.Errorf("BINARY[1] and 100 BINARY.SIZE[1] read the message %d times, want %d", n, one+1)
	}
	// A partial BINARY still counts from the decoded size.
	part := &goimap.FetchItemBinarySection{Part: []int{1}, Peek: true, Partial: &goimap.SectionPartial{Offset: 16, Size: 10}}
	m = fetchOne(t, c, goimap.UIDSetNum(4), &goimap.FetchOptions{BinarySection: []*goimap.FetchItemBinarySection{part}})
	if got := string(m.FindBinarySection(part)); got != payload[16:26] {
		t.Errorf("BINARY[1]<16.10>: %d bytes, want %q", len(got), payload[16:26])
	}
}

// longKeys returns n distinct strings of 4000 bytes.
func longKeys(n int) []string {
	var ks []string
	for i := range n {
		ks = append(ks, fmt.Sprintf("%04d", i)+strings.Repeat("x", 3996))
	}
	return ks
}

// FuzzMatcher: a matcher fed a text in pieces finds its string exactly when
// the whole text holds it, matches across pieces included.
func FuzzMatcher(f *testing.F) {
	f.Add([]byte("hello world"), []byte("lo w"), uint8(3), uint8(1))
	f.Add([]byte("aaaaab"), []byte("aab"), uint8(1), uint8(2))
	f.Add([]byte("abcabd"), []byte("cabd"), uint8(2), uint8(0))
	f.Fuzz(func(t *testing.T, text, needle []byte, step, first uint8) {
		if len(needle) == 0 {
			return
		}
		m := &matcher{needle: needle}
		rest, n := text, int(first)
		for len(rest) > 0 {
			k := min(n, len(rest))
			m.feed(rest[:k])
			rest, n = rest[k:], int(step)%7+1
		}
		if want := bytes.Contains(text, needle); m.found != want {
			t.Fatalf("found %v, want %v (text %q needle %q)", m.found, want, text, needle)
		}
	})
}

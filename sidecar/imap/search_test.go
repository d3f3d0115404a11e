package imap

import (
	"bufio"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
)

func TestSearch(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	r.ok(`STORE 2 +FLAGS (\Flagged \Seen)`)
	size1 := len(f.msgs["alice"][0])
	for query, want := range map[string]string{
		"ALL":                              "1 2 3",
		"SUBJECT one":                      "1",
		"SUBJECT MULTIPART":                "3",
		"FROM anne":                        "1",
		`FROM "a@example.org"`:             "1 2",
		"TO bob":                           "2",
		"CC anyone":                        "",
		"BCC anyone":                       "",
		"HEADER X-Custom needle":           "3",
		`HEADER x-custom ""`:               "3",
		`HEADER Message-ID "<2@t>"`:        "2",
		`HEADER MIME-Version ""`:           "3",
		`BODY "hello world"`:               "1",
		`BODY "HELLO WORLD"`:               "1",
		`BODY "inner body"`:                "3",
		`BODY "hello binary"`:              "", // an attachment is not text
		`BODY "needle-in-header"`:          "",
		`TEXT "needle-in-header"`:          "3",
		`TEXT "inner subject"`:             "3",
		`TEXT "first line"`:                "1",
		`BODY ""`:                          "1 2 3",
		"LARGER " + itoa(size1-1):          "1 3",
		"SMALLER " + itoa(size1+1):         "1 2",
		"SINCE 1-Jan-2020":                 "2 3",
		"BEFORE 1-Jan-2020":                "1",
		"ON 11-Mar-2020":                   "3",
		"ON 2-Jan-2006":                    "1",
		"SENTBEFORE 1-Jan-2010":            "1",
		"SENTON 10-Mar-2020":               "2",
		"SENTSINCE 11-Mar-2020":            "3",
		"FLAGGED":                          "2",
		"UNSEEN":                           "1 3",
		"SEEN UNFLAGGED":                   "",
		`KEYWORD $Junk`:                    "",
		`UNKEYWORD $Junk`:                  "1 2 3",
		"NEW":                              "",
		"OLD":                              "1 2 3",
		"RECENT":                           "",
		"NOT FLAGGED":                      "1 3",
		"OR SUBJECT one TO bob":            "1 2",
		"OR (SUBJECT one) (BODY inner)":    "1 3",
		"NOT (OR FLAGGED SUBJECT one)":     "3",
		"2:*":                              "2 3",
		"UID 1,3":                          "1 3",
		"UID 2:*":                          "2 3",
		"UID 99:*":                         "3",
		`CHARSET UTF-8 SUBJECT "one"`:      "1",
		`BODY "hello" BODY "world" UNSEEN`: "1",
	} {
		u := r.ok("UID SEARCH %s", query)
		if len(u) != 1 || strings.TrimSpace(strings.TrimPrefix(u[0], "* SEARCH")) != want {
			t.Errorf("UID SEARCH %s = %q, want %q", query, u, want)
		}
	}
	if _, done := r.cmd("SEARCH CHARSET KOI8-R ALL"); !strings.HasPrefix(done, "NO [BADCHARSET]") {
		t.Errorf("unsupported charset: %q", done)
	}

	// Non-ASCII strings (imapclient sends CHARSET UTF-8 and literals):
	// matched against decoded encoded words, quoted-printable and charsets.
	c := login(t, ts.addr, "alice", nil)
	selectBox(t, c, "INBOX")
	for _, tc := range []struct {
		crit goimap.SearchCriteria
		want []goimap.UID
	}{
		{goimap.SearchCriteria{Header: []goimap.SearchCriteriaHeaderField{{Key: "Subject", Value: "GRÜSSE"}}}, nil}, // no full case folding
		{goimap.SearchCriteria{Header: []goimap.SearchCriteriaHeaderField{{Key: "Subject", Value: "GRÜßE"}}}, []goimap.UID{3}},
		{goimap.SearchCriteria{Header: []goimap.SearchCriteriaHeaderField{{Key: "From", Value: "jürgen"}}}, []goimap.UID{3}},
		{goimap.SearchCriteria{Body: []string{"münchen"}}, []goimap.UID{3}},
		{goimap.SearchCriteria{Text: []string{"schöne grüße"}}, []goimap.UID{3}},
		{goimap.SearchCriteria{Body: []string{"M=FCnchen"}}, nil}, // decoded, not raw
	} {
		d, err := c.UIDSearch(&tc.crit, nil).Wait()
		if err != nil {
			t.Fatalf("%+v: %v", tc.crit, err)
		}
		if got := d.AllUIDs(); !slices.Equal(got, tc.want) {
			t.Errorf("UID SEARCH %+v = %v, want %v", tc.crit, got, tc.want)
		}
	}

	// ESEARCH (RFC 4731) and SEARCHRES (RFC 5182).
	if u := r.ok("SEARCH RETURN (MIN MAX COUNT) ALL"); !slices.Equal(u, []string{`* ESEARCH (TAG "T` + itoa(r.n) + `") MIN 1 MAX 3 COUNT 3`}) {
		t.Errorf("ESEARCH = %q", u)
	}
	if u := r.ok("UID SEARCH RETURN () NOT ALL"); !slices.Equal(u, []string{`* ESEARCH (TAG "T` + itoa(r.n) + `") UID`}) {
		t.Errorf("empty ESEARCH = %q", u)
	}
	r.ok("SEARCH RETURN (SAVE) OR SUBJECT shared SUBJECT multipart")
	if u := r.ok("FETCH $ (UID)"); !slices.Equal(u, []string{"* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)"}) {
		t.Errorf("FETCH $ = %q", u)
	}
	if u := r.ok("UID SEARCH $ FLAGGED"); !slices.Equal(u, []string{"* SEARCH 2"}) {
		t.Errorf("SEARCH $ FLAGGED = %q", u)
	}
}

func TestSearchLimit(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", func(o *Options) { o.SearchMaxBytes = 300 }, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	// The summary answers these without reading messages.
	if u := r.ok("UID SEARCH SUBJECT multipart FROM j"); !slices.Equal(u, []string{"* SEARCH 3"}) {
		t.Errorf("summary search under the limit: %q", u)
	}
	// One short message fits; all of them do not.
	if u := r.ok(`UID SEARCH SUBJECT one BODY hello`); !slices.Equal(u, []string{"* SEARCH 1"}) {
		t.Errorf("small body search: %q", u)
	}
	if _, done := r.cmd(`UID SEARCH BODY nowhere`); !strings.HasPrefix(done, "NO [LIMIT]") {
		t.Errorf("body search over the limit: %q", done)
	}
}

func TestDateIn(t *testing.T) {
	d := func(y int, m time.Month, day int) time.Time { return time.Date(y, m, day, 0, 0, 0, 0, time.UTC) }
	late := time.Date(2020, 3, 10, 23, 30, 0, 0, time.FixedZone("x", -8*3600)) // 11 March in UTC
	if !dateIn(late, d(2020, 3, 10), d(2020, 3, 11)) {
		t.Error("date must be taken in the time's own zone")
	}
	if dateIn(late, d(2020, 3, 11), time.Time{}) || !dateIn(late, time.Time{}, time.Time{}) {
		t.Error("SINCE bound")
	}
}

func TestMatcherAcrossWrites(t *testing.T) {
	text := "Ein schöner Tag in MÜNCHEN, sagt Jürgen."
	for split := 0; split <= len(text); split++ {
		sc := &textScan{body: []*matcher{{needle: []byte("münchen")}, {needle: []byte("ürgen.")}, {needle: []byte("absent")}}}
		w := sc.writer(true)
		w.write([]byte(text[:split]))
		w.write([]byte(text[split:]))
		w.flush()
		if !sc.body[0].found || !sc.body[1].found || sc.body[2].found {
			t.Fatalf("split at %d: %v %v %v", split, sc.body[0].found, sc.body[1].found, sc.body[2].found)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A part header of hundreds of thousands of fields costs a bounded amount of
// memory to search past, and the text after it is still searched: go-message
// alone keeps every field of a part header (~300 bytes each).
func TestSearchHugePartHeader(t *testing.T) {
	junk := strings.Repeat("a:b\r\n", 400_000) // 2 MB
	for name, raw := range map[string]string{
		"part": "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
			"--b\r\nContent-Type: application/pdf\r\n" + junk + "\r\nPDF\r\n" +
			"--b\r\nContent-Type: text/plain\r\n" + junk + "\r\nthe needle text\r\n--b--\r\n",
		"embedded": "Subject: x\r\nContent-Type: message/rfc822\r\n\r\n" +
			"Subject: y\r\n" + junk + "\r\nthe needle text\r\n",
	} {
		t.Run(name, func(t *testing.T) { searchHuge(t, raw, name == "embedded") })
	}
}

func searchHuge(t *testing.T, raw string, embedded bool) {
	s := &searcher{words: newWordDecoder()}
	sc := &textScan{body: []*matcher{{needle: []byte("needle")}, {needle: []byte("a: b")}}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := s.walkMessage(bufio.NewReader(strings.NewReader(raw)), sc, 0, true)
	runtime.ReadMemStats(&after)
	if err != nil && !errors.Is(err, errAllFound) {
		t.Fatal(err)
	}
	limit := uint64(len(raw)) + 8<<20
	if embedded {
		// The header of an embedded message is read as the top-level
		// one is (readHeader), its first maxHeaderKept bytes searched
		// field by field.
		limit = 100 * maxHeaderKept
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
		t.Errorf("searching a %d MB message allocated %d MB, limit %d MB", len(raw)>>20, alloc>>20, limit>>20)
	} else {
		t.Logf("searching a %d KB message allocated %d KB", len(raw)>>10, alloc>>10)
	}
	if !sc.body[0].found {
		t.Error("text after the huge part header not searched")
	}
	if sc.body[1].found != embedded {
		// RFC 3501 §6.4.4: BODY searches the header of an embedded
		// message (it is body of the outer one), not of a part.
		t.Errorf("a:b found in BODY: %v", sc.body[1].found)
	}
}

package badgerjournal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
)

// chunksOf returns the stored (compressed) chunks of message id.
func chunksOf(t *testing.T, j *Journal, id journal.ID) [][]byte {
	t.Helper()
	var out [][]byte
	err := j.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(messageKey(id))
		if err != nil {
			return err
		}
		var h recordHead
		if err := item.Value(func(v []byte) error { h, err = decodeRecordHead(v); return err }); err != nil {
			return err
		}
		for i := range h.Chunks {
			item, err := txn.Get(chunkKey(h.Body, i))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChunkCodecs: chunks of at most smallChunk raw bytes are stored as S2,
// larger ones as zstd frames, and every size reads back exactly.
func TestChunkCodecs(t *testing.T) {
	j := openTest(t, t.TempDir(), Options{})
	defer closeTest(t, j)
	r := rand.New(rand.NewPCG(1, 2))
	chunk := j.opts.ChunkSize
	for _, size := range []int{1, 4096, smallChunk, smallChunk + 1, chunk, chunk + 100, 2*chunk + smallChunk + 7} {
		body := make([]byte, size)
		for i := range body {
			body[i] = "abc de\r\nfgh"[r.IntN(11)] // compressible, not trivially
		}
		body = append([]byte("Subject: x\r\n\r\n"), body...)
		res, err := j.Append(t.Context(), testEnv("rcpt@example.com"), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, j, res.ID); !bytes.Equal(got, body) {
			t.Fatalf("size %d: read %d bytes, not what was appended", len(body), len(got))
		}
		chunks := chunksOf(t, j, res.ID)
		for i, c := range chunks {
			raw := min(chunk, len(body)-i*chunk)
			if s2 := c[0] == chunkS2; s2 != (raw <= smallChunk) {
				t.Errorf("size %d, chunk %d of %d raw bytes: stored as S2 %v", len(body), i, raw, s2)
			}
		}
	}
	if problems, err := j.Verify(t.Context()); err != nil || len(problems) > 0 {
		t.Fatalf("Verify: %v %v", problems, err)
	}
}

// TestFormat2Upgrade: a journal of format 2, whose small chunks are zstd
// frames, opens, reads as before and is marked format 3.
func TestFormat2Upgrade(t *testing.T) {
	dir := t.TempDir()
	j := openTest(t, dir, Options{})
	body := []byte("Subject: old\r\n\r\nwritten by a program of format 2\r\n")
	res, err := j.Append(t.Context(), testEnv("rcpt@example.com"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// What format 2 stored: the chunk as a zstd frame.
	err = j.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(messageKey(res.ID))
		if err != nil {
			return err
		}
		var h recordHead
		if err := item.Value(func(v []byte) error { h, err = decodeRecordHead(v); return err }); err != nil {
			return err
		}
		if err := txn.Set(chunkKey(h.Body, 0), j.enc.EncodeAll(body, nil)); err != nil {
			return err
		}
		return txn.Set([]byte(keyFormat), encodeUint64(formatVersionOld))
	})
	if err != nil {
		t.Fatal(err)
	}
	closeTest(t, j)

	j = openTest(t, dir, Options{})
	defer closeTest(t, j)
	if c := chunksOf(t, j, res.ID); c[0][0] == chunkS2 {
		t.Fatal("the test did not store a zstd chunk")
	}
	if got := readAll(t, j, res.ID); !bytes.Equal(got, body) {
		t.Fatalf("read %q, want %q", got, body)
	}
	var format uint64
	err = j.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyFormat))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { format, err = decodeUint64(v); return err })
	})
	if err != nil || format != formatVersion {
		t.Fatalf("format after Open: %d %v, want %d", format, err, formatVersion)
	}
	if problems, err := j.Verify(t.Context()); err != nil || len(problems) > 0 {
		t.Fatalf("Verify: %v %v", problems, err)
	}
}

// FuzzChunk: any stored bytes decode or fail, never panic or inflate past
// maxChunkSize; what encodeChunk stores decodes to itself.
func FuzzChunk(f *testing.F) {
	j, err := Open(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { j.Close() })
	f.Add([]byte("hello"), []byte{chunkS2, 5, 16, 'h', 'e', 'l', 'l', 'o'})
	f.Add(bytes.Repeat([]byte("ab"), 40000), []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Add([]byte{}, []byte{chunkS2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, raw, stored []byte) {
		if out, err := j.decodeChunk(nil, stored); err == nil && len(out) > maxChunkSize {
			t.Fatalf("decoded %d bytes", len(out))
		}
		enc := j.encodeChunk(nil, raw)
		out, err := j.decodeChunk(make([]byte, 0, 10), enc)
		if err != nil || !bytes.Equal(out, raw) {
			t.Fatalf("round trip of %d bytes: %v", len(raw), err)
		}
	})
}

// TestOpenItem: every listed message reads the same through OpenItem as
// through Open, with the body's place from the index or, for an index entry
// written by format 2 (36 bytes), without it; a swept message is not found;
// Verify notices an index entry pointing to another body.
func TestOpenItem(t *testing.T) {
	j := openTest(t, t.TempDir(), Options{ChunkSize: 64 << 10})
	defer closeTest(t, j)
	sizes := []int{0, 10, 5000, 64 << 10, 200000}
	for _, n := range sizes {
		body := append([]byte("Subject: s\r\n\r\n"), bytes.Repeat([]byte("x"), n)...)
		if _, err := j.Append(t.Context(), testEnv("rcpt@example.com"), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	var items []journal.MailboxItem
	if err := j.List(t.Context(), "rcpt@example.com", 1, func(it journal.MailboxItem) error {
		items = append(items, it)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(items) != len(sizes) {
		t.Fatalf("listed %d items", len(items))
	}
	check := func(it journal.MailboxItem) {
		t.Helper()
		rc, err := j.OpenItem(t.Context(), it)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := readAll(t, j, it.ID); !bytes.Equal(got, want) {
			t.Fatalf("UID %d: OpenItem read %d bytes, Open %d", it.UID, len(got), len(want))
		}
	}
	for _, it := range items {
		if it.Body.IsZero() {
			t.Fatalf("UID %d listed without its body", it.UID)
		}
		check(it)
		old := it
		old.Body = journal.BodyRef{}
		check(old)
	}

	// An entry as format 2 wrote it lists without a body and still opens.
	err := j.db.Update(func(txn *badger.Txn) error {
		it := items[2]
		v := item{ID: it.ID, Received: it.Received, Size: it.Size}.encode()[:itemLenOld]
		return txn.Set(uidKey("rcpt@example.com", it.UID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.List(t.Context(), "rcpt@example.com", items[2].UID, func(it journal.MailboxItem) error {
		if !it.Body.IsZero() {
			t.Errorf("a 36-byte entry listed with body %v", it.Body)
		}
		check(it)
		return errors.New("stop")
	}); err == nil {
		t.Fatal("List did not return the first item")
	}
	if problems, err := j.Verify(t.Context()); err != nil || len(problems) > 0 {
		t.Fatalf("Verify: %v %v", problems, err)
	}

	// An entry pointing to another message's body is a problem.
	err = j.db.Update(func(txn *badger.Txn) error {
		it := items[1]
		v := item{ID: it.ID, Received: it.Received, Size: it.Size, Body: items[3].Body.N, Chunks: items[3].Body.Chunks}.encode()
		return txn.Set(uidKey("rcpt@example.com", it.UID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := j.Verify(t.Context()); err != nil || len(problems) != 1 {
		t.Fatalf("Verify of a wrong body ref: %v %v", problems, err)
	}

	// Swept: the body is gone and OpenItem says not found.
	if _, err := j.Sweep(t.Context(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := j.OpenItem(t.Context(), items[4]); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("OpenItem of a swept message: %v", err)
	}
}

// TestReadItems: ReadItems reads whole, into the buffers given, exactly the
// listed messages of one chunk, whatever their order in the call and however
// far apart their bodies (other mailboxes' bodies between them, more than
// seekSteps keys apart); not those of several chunks, without a body place,
// of a wrong size or swept meanwhile, which the caller opens.
func TestReadItems(t *testing.T) {
	j := openTest(t, t.TempDir(), Options{ChunkSize: 64 << 10})
	defer closeTest(t, j)
	const n = 60
	var want [][]byte
	for i := range n {
		size := 20 + i*37
		if i%13 == 5 {
			size = 150 << 10 // three chunks
		}
		body := fmt.Appendf(nil, "Subject: %d\r\n\r\n%s", i, bytes.Repeat([]byte{'a' + byte(i%26)}, size))
		switch i {
		case 11, 12: // exactly one chunk, and one byte more: two
			body = append(body, bytes.Repeat([]byte{'z'}, 64<<10)...)[:64<<10+i-11]
		case 14: // no body at all
			body = fmt.Appendf(nil, "Subject: %d\r\n", i)
		}
		if _, err := j.Append(t.Context(), testEnv("rcpt@example.com"), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
		// Other mailboxes' bodies between this one and the next: a few
		// (stepped over), or more than seekSteps (sought).
		others := 1 + i%3
		if i%10 == 9 {
			others = 2 * seekSteps
		}
		for k := range others {
			other := fmt.Appendf(nil, "Subject: other %d %d\r\n\r\nx\r\n", i, k)
			if _, err := j.Append(t.Context(), testEnv("other@example.com"), bytes.NewReader(other)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var items []journal.MailboxItem
	if err := j.List(t.Context(), "rcpt@example.com", 1, func(it journal.MailboxItem) error {
		items = append(items, it)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(items) != n {
		t.Fatalf("listed %d items", len(items))
	}
	if items[11].Body.Chunks != 1 || items[12].Body.Chunks != 2 {
		t.Fatalf("messages of 64 KiB and one byte more stored in %d and %d chunks", items[11].Body.Chunks, items[12].Body.Chunks)
	}
	read := func(items []journal.MailboxItem) map[int][]byte {
		t.Helper()
		got := map[int][]byte{}
		err := j.ReadItems(t.Context(), items, func(int) []byte { return make([]byte, 0, 8) }, func(k int, msg []byte) {
			if _, dup := got[k]; dup {
				t.Errorf("item %d read twice", k)
			}
			got[k] = msg
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// The items in a shuffled order, with a copy of one of them, one
	// without a body place and one with a wrong size.
	call := slices.Clone(items)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(call), func(a, b int) { call[a], call[b] = call[b], call[a] })
	call = append(call, call[7])
	noPlace, wrongSize := call[3], call[4]
	noPlace.Body = journal.BodyRef{}
	wrongSize.Size++
	call[3], call[4] = noPlace, wrongSize
	got := read(call)
	for k, it := range call {
		msg, ok := got[k]
		switch {
		case k == 3 || k == 4 || it.Body.Chunks != 1:
			if ok {
				t.Errorf("item %d (UID %d, %d chunks, size %d): read", k, it.UID, it.Body.Chunks, it.Size)
			}
		case !ok:
			t.Errorf("item %d (UID %d): not read", k, it.UID)
		case !bytes.Equal(msg, want[it.UID-1]):
			t.Errorf("item %d (UID %d): read %d bytes, not the message", k, it.UID, len(msg))
		}
	}
	if len(got) < n-n/13-4 {
		t.Fatalf("read %d of %d items", len(got), len(call))
	}
	// One item alone (looked up, not iterated).
	if got := read(items[1:2]); len(got) != 1 || !bytes.Equal(got[0], want[1]) {
		t.Fatalf("one item: read %d messages, %d bytes", len(got), len(got[0]))
	}

	// Swept meanwhile: not read.
	if _, err := j.Sweep(t.Context(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := read(items); len(got) != 0 {
		t.Fatalf("read %d swept messages", len(got))
	}
	if got := read(items[1:2]); len(got) != 0 {
		t.Fatal("read one swept message")
	}
}

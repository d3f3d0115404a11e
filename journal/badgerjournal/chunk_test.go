package badgerjournal

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
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
		// ReadItem: messages of one chunk whole, into the buffer given.
		b, ok, err := j.ReadItem(t.Context(), it, make([]byte, 0, 8))
		if ok != (it.Body.Chunks == 1) || err != nil {
			t.Fatalf("UID %d of %d chunks: ReadItem ok %v, %v", it.UID, it.Body.Chunks, ok, err)
		}
		if ok && !bytes.Equal(b, readAll(t, j, it.ID)) {
			t.Fatalf("UID %d: ReadItem read %d bytes, not the message", it.UID, len(b))
		}
		if _, ok, _ := j.ReadItem(t.Context(), old, nil); ok {
			t.Fatalf("UID %d: ReadItem without a body place", it.UID)
		}
		wrong := it
		wrong.Size++
		if _, ok, err := j.ReadItem(t.Context(), wrong, nil); ok && err == nil {
			t.Fatalf("UID %d: ReadItem of a wrong size succeeded", it.UID)
		}
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
	if _, ok, err := j.ReadItem(t.Context(), items[0], nil); !ok || !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("ReadItem of a swept message: %v %v", ok, err)
	}
}

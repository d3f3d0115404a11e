package badgerjournal

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/journaltest"
)

func testEnv(rcpt string) journal.Envelope {
	return journal.Envelope{
		MailFrom: "s@example.org",
		Received: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC),
		Recipients: []journal.Recipient{
			{Address: rcpt, Mailboxes: []string{rcpt}, State: journal.StateMTA},
		},
	}
}

// countKeys counts the keys that start with prefix.
func countKeys(t *testing.T, j *Journal, prefix ...byte) int {
	t.Helper()
	n := 0
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// storedChunks sums the chunks the message records call for.
func storedChunks(t *testing.T, j *Journal) int {
	t.Helper()
	n := 0
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagMessage}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			n += rec.Chunks
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func verifyClean(t *testing.T, j *Journal) {
	t.Helper()
	problems, err := j.Verify(t.Context())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, p := range problems {
		t.Errorf("Verify: %s: %s", p.ID, p.Detail)
	}
}

const crashDirEnv = "BADGERJOURNAL_CRASH_DIR"

// smallChunks makes bodies of a megabyte take many chunks and many batches
// written ahead of their record, so that those paths are tested without
// streaming tens of megabytes under the race detector.
func smallChunks() Options {
	return Options{ChunkSize: 16 << 10, FlushSize: 64 << 10}
}

// TestCrashMidAppend kills a process in the middle of a large append, after some
// of its chunks are committed, and checks that the journal opens with every
// completed message intact, that Verify does not count the leftovers as damage,
// and that Sweep deletes them.
func TestCrashMidAppend(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashHelper(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidAppend$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = tWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var committed []journal.ID
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "committed "); ok {
			parsed, err := journal.ParseID(id)
			if err != nil {
				t.Fatal(err)
			}
			committed = append(committed, parsed)
		}
		if line == "streaming" {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("helper exited by itself")
	}
	if len(committed) != 3 {
		t.Fatalf("helper committed %d messages before streaming, want 3 (%v)", len(committed), sc.Err())
	}

	j := openTest(t, dir, smallChunks())
	defer func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	}()
	for i, id := range committed {
		e, err := j.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("message %d after the crash: %v", i, err)
		}
		if got := readAll(t, j, id); string(got) != crashMessage(i) || e.Size != int64(len(got)) {
			t.Errorf("message %d differs after the crash", i)
		}
	}
	if n := countKeys(t, j, tagPending); n != 1 {
		t.Errorf("%d pending bodies after the crash, want 1", n)
	}
	if countKeys(t, j, tagChunk) <= storedChunks(t, j) {
		t.Error("no chunks of the interrupted append survived; the test did not crash where it meant to")
	}
	verifyClean(t, j)

	if _, err := j.Sweep(t.Context(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, j, tagPending); n != 0 {
		t.Errorf("%d pending bodies after Sweep", n)
	}
	if got, want := countKeys(t, j, tagChunk), storedChunks(t, j); got != want {
		t.Errorf("%d chunks after Sweep, the messages have %d", got, want)
	}
	verifyClean(t, j)
}

func crashMessage(i int) string {
	return fmt.Sprintf("Subject: before the crash %d\r\n\r\n%s", i, strings.Repeat("body\r\n", 1000*i))
}

// crashHelper runs in the child process: it commits three messages, then starts
// a large append whose reader blocks forever once 1 MiB is read, by when
// several batches of chunks are committed. The parent kills it there.
func crashHelper(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	j, err := Open(dir, smallChunks())
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	for i := range 3 {
		res, err := j.Append(ctx, testEnv("a@example.com"), strings.NewReader(crashMessage(i)))
		if err != nil {
			fail(err)
		}
		fmt.Println("committed", res.ID)
	}
	r := &gateReader{r: journaltest.Generated(8<<20, 1), at: 1 << 20, reached: make(chan struct{})}
	go func() {
		<-r.reached
		fmt.Println("streaming")
	}()
	_, err = j.Append(ctx, testEnv("b@example.com"), r)
	fail(fmt.Errorf("append returned: %v", err))
}

// gateReader reads through r until at bytes, then closes reached and blocks
// until release is closed (forever if it is nil).
type gateReader struct {
	r       io.Reader
	at, n   int64
	reached chan struct{}
	release chan struct{}
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.n >= g.at && g.reached != nil {
		close(g.reached)
		g.reached = nil
		if g.release == nil {
			select {}
		}
		<-g.release
	}
	if rest := g.at - g.n; rest > 0 && int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

func readAll(t *testing.T, j *Journal, id journal.ID) []byte {
	t.Helper()
	rc, err := j.Open(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSweepSparesAppendInFlight runs Sweep while a large append has committed
// chunks but not its record: the chunks must survive.
func TestSweepSparesAppendInFlight(t *testing.T) {
	j := openTest(t, t.TempDir(), smallChunks())
	defer closeTest(t, j)
	const size = 3 << 19
	r := &gateReader{r: journaltest.Generated(size, 2), at: 1 << 20, reached: make(chan struct{}), release: make(chan struct{})}
	reached := r.reached
	type result struct {
		res journal.AppendResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := j.Append(t.Context(), testEnv("a@example.com"), r)
		done <- result{res, err}
	}()
	<-reached
	// 1 MiB of base64 is about twelve batches of 64 KiB compressed; each batch
	// is committed before the next is submitted, so most are committed now.
	if n := countKeys(t, j, tagPending); n != 1 {
		t.Fatalf("%d pending bodies while streaming, want 1", n)
	}
	before := countKeys(t, j, tagChunk)
	if _, err := j.Sweep(t.Context(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, j, tagChunk); n < before || countKeys(t, j, tagPending) != 1 {
		t.Fatalf("Sweep took the chunks of an append in flight: %d chunks, were %d", n, before)
	}
	verifyClean(t, j)
	close(r.release)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	want, _ := journaltest.GeneratedSum(size, 2)
	if got := sha256.Sum256(readAll(t, j, res.res.ID)); got != want {
		t.Error("message read back differs")
	}
	if countKeys(t, j, tagPending) != 0 || countKeys(t, j, tagChunk) != storedChunks(t, j) {
		t.Error("leftovers after the append finished")
	}
	verifyClean(t, j)
}

func closeTest(t *testing.T, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestLeftoversCleanedAtOnce checks that a duplicate found after its chunks were
// written, and an append whose reader fails midway, leave nothing behind.
func TestLeftoversCleanedAtOnce(t *testing.T) {
	j := openTest(t, t.TempDir(), smallChunks())
	defer closeTest(t, j)
	ctx := t.Context()
	const size = 1 << 20
	first, err := j.Append(ctx, testEnv("a@example.com"), journaltest.Generated(size, 4))
	if err != nil {
		t.Fatal(err)
	}
	chunks := countKeys(t, j, tagChunk)
	dup, err := j.Append(ctx, testEnv("a@example.com"), journaltest.Generated(size, 4))
	if err != nil || !dup.Duplicate || dup.ID != first.ID {
		t.Fatalf("duplicate: %+v %v", dup, err)
	}
	if n := countKeys(t, j, tagChunk); n != chunks || countKeys(t, j, tagPending) != 0 {
		t.Errorf("after a duplicate: %d chunks (were %d), %d pending", n, chunks, countKeys(t, j, tagPending))
	}

	boom := errors.New("boom")
	r := io.MultiReader(io.LimitReader(journaltest.Generated(size, 5), 700<<10), &errReader{boom})
	if _, err := j.Append(ctx, testEnv("a@example.com"), r); !errors.Is(err, boom) {
		t.Fatalf("failing reader: %v", err)
	}
	if n := countKeys(t, j, tagChunk); n != chunks || countKeys(t, j, tagPending) != 0 {
		t.Errorf("after a failed append: %d chunks (were %d), %d pending", n, chunks, countKeys(t, j, tagPending))
	}
	verifyClean(t, j)
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// TestChunksDurableBeforeRecord checks the crash ordering from the inside: when
// Append is about to submit a large message's record, every chunk written ahead
// is visible to a new read transaction, which in Badger means its commit has
// returned, and with SyncWrites that means it is synced.
func TestChunksDurableBeforeRecord(t *testing.T) {
	j := openTest(t, t.TempDir(), smallChunks())
	defer closeTest(t, j)
	checked := 0
	j.beforeRecord = func(body uint64, flushed int) {
		if flushed == 0 {
			return
		}
		checked++
		err := j.db.View(func(txn *badger.Txn) error {
			for i := range flushed {
				if _, err := txn.Get(chunkKey(body, i)); err != nil {
					return fmt.Errorf("chunk %d of %d: %w", i, flushed, err)
				}
			}
			_, err := txn.Get(pendingKey(body))
			return err
		})
		if err != nil {
			t.Errorf("before the record: %v", err)
		}
	}
	if _, err := j.Append(t.Context(), testEnv("a@example.com"), journaltest.Generated(1<<20, 6)); err != nil {
		t.Fatal(err)
	}
	if checked != 1 {
		t.Fatalf("hook saw %d appends with chunks written ahead, want 1", checked)
	}
}

// TestGroupCommit checks that concurrent appends share commits (and so syncs).
func TestGroupCommit(t *testing.T) {
	j := openTest(t, t.TempDir(), Options{})
	defer closeTest(t, j)
	const writers, each = 64, 10
	errs := make(chan error, writers)
	start := make(chan struct{})
	for w := range writers {
		go func() {
			<-start
			for i := range each {
				raw := fmt.Sprintf("Subject: %d-%d\r\n\r\n%s", w, i, strings.Repeat("x", 4000))
				if _, err := j.Append(t.Context(), testEnv("a@example.com"), strings.NewReader(raw)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	c0 := j.commits.Load()
	close(start)
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	commits := j.commits.Load() - c0
	t.Logf("%d appends in %d commits (%.1f per sync)", writers*each, commits, float64(writers*each)/float64(commits))
	if commits >= writers*each {
		t.Errorf("%d commits for %d concurrent appends: no group commit", commits, writers*each)
	}
}

func TestOpenTwice(t *testing.T) {
	dir := t.TempDir()
	j := openTest(t, dir, Options{})
	defer closeTest(t, j)
	if j2, err := Open(dir, Options{}); err == nil {
		closeTest(t, j2)
		t.Fatal("second Open of the same directory succeeded")
	}
}

func TestFormatVersion(t *testing.T) {
	dir := t.TempDir()
	j := openTest(t, dir, Options{})
	if err := j.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyFormat), encodeUint64(99)) }); err != nil {
		t.Fatal(err)
	}
	closeTest(t, j)
	if j, err := Open(dir, Options{}); err == nil {
		closeTest(t, j)
		t.Fatal("Open accepted a journal of another format")
	} else if !strings.Contains(err.Error(), "format") {
		t.Errorf("error %v does not say format", err)
	}
}

// TestVerifyFindsProblems damages a journal in several ways and checks that
// Verify names each.
func TestVerifyFindsProblems(t *testing.T) {
	j := openTest(t, t.TempDir(), smallChunks())
	defer closeTest(t, j)
	ctx := t.Context()
	a, err := j.Append(ctx, testEnv("x@example.com"), strings.NewReader("Subject: a\r\nMessage-ID: <a@x>\r\n\r\na\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := j.Append(ctx, testEnv("y@example.com"), journaltest.Generated(200<<10, 8))
	if err != nil {
		t.Fatal(err)
	}
	ce := testEnv("z@example.com")
	ce.Recipients[0].State = journal.StateCustody
	c, err := j.Append(ctx, ce, strings.NewReader("Subject: c\r\n\r\nc\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := j.Append(ctx, testEnv("w@example.com"), strings.NewReader("Subject: d\r\n\r\nd\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	verifyClean(t, j)

	err = j.db.Update(func(txn *badger.Txn) error {
		rb, err := getRecord(txn, b.ID)
		if err != nil {
			return err
		}
		rc, err := getRecord(txn, c.ID)
		if err != nil {
			return err
		}
		st, err := getStats(txn)
		if err != nil {
			return err
		}
		st.Messages++
		sa, _, err := get(txn, structureKey(a.ID))
		if err != nil {
			return err
		}
		return errors.Join(
			// Not problems: a message journaled before structures, and one
			// written by a parser of another encoding version.
			txn.Delete(structureKey(a.ID)),
			txn.Set(structureKey(d.ID), []byte{99}),
			// Problems.
			txn.Set(structureKey(b.ID), sa),
			txn.Set(structureKey(c.ID), []byte{1, 0xff}),
			txn.Set(structureKey(journal.ID{7}), sa),
			txn.Delete(chunkKey(rb.Body, 1)),
			txn.Delete(uidKey("x@example.com", 1)),
			txn.Set(chunkKey(1<<40, 0), []byte("stray")),
			txn.Delete(custodyKey(rc.Seq, 0)),
			txn.Set(seqKey(9999), make([]byte, 16)),
			txn.Set([]byte(keyStats), st.encode()),
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	problems, err := j.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, p := range problems {
		all = append(all, p.ID.String()+" "+p.Detail)
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		b.ID.String() + " chunk 1 of",                           // missing chunk
		a.ID.String() + ` mailbox "x@example.com" has no UID 1`, // missing mailbox entry
		"chunks of body 1099511627776 belong to no message",     // stray chunk
		c.ID.String() + " recipient 0 is custody but not in the custody queue",
		"arrival index entry",    // seq 9999 points nowhere
		"stats count 5 messages", // counter off
		b.ID.String() + " structure spans [0,36), the message has 204800 bytes",
		c.ID.String() + " structure: mimestruct: decoding structure",
		journal.ID{7}.String() + " structure of no message",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Verify did not report %q; it said:\n%s", want, text)
		}
	}
	for _, id := range []journal.ID{a.ID, d.ID} {
		if strings.Contains(text, id.String()+" structure") {
			t.Errorf("Verify reported the structure of %s; it said:\n%s", id, text)
		}
		if _, err := j.Structure(ctx, id); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("Structure of a message without a readable one: %v, want ErrNotFound", err)
		}
	}
}

// TestCloseWhileAppendReadsJournal copies a stored message into a new append
// while Close is waiting for that append: the nested read must fail with
// ErrClosed instead of deadlocking, and Close must then finish.
func TestCloseWhileAppendReadsJournal(t *testing.T) {
	j := openTest(t, t.TempDir(), Options{})
	ctx := t.Context()
	src, err := j.Append(ctx, testEnv("a@example.com"), journaltest.Generated(1<<20, 11))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := j.Open(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	closeErr := make(chan error, 1)
	started := false
	r := readerFunc(func(p []byte) (int, error) {
		if !started {
			started = true
			go func() { closeErr <- j.Close() }()
			// Wait until Close has shut the door; it then waits for this append.
			for {
				j.mu.Lock()
				c := j.closed
				j.mu.Unlock()
				if c {
					break
				}
				runtime.Gosched()
			}
		}
		return rc.Read(p)
	})
	_, err = j.Append(ctx, testEnv("b@example.com"), r)
	if !errors.Is(err, journal.ErrClosed) {
		t.Errorf("append reading a closed journal: %v, want ErrClosed", err)
	}
	if err := <-closeErr; err != nil {
		t.Errorf("Close: %v", err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

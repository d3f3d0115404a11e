package imap

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
)

// BenchmarkFetchAll measures UID FETCH 1:* BODY.PEEK[] of a mailbox of
// benchMessages text messages of about 4 KiB (those e2e/imapbench sends),
// with go-imap's imapclient reading every literal to the end, against two
// servers in the same process:
//
//   - lifeline: this package over a badgerjournal in a temporary directory;
//   - files: a minimal IMAP responder that reads the same bytes from one
//     file per message (os.ReadFile) and writes each FETCH response through
//     a bufio.Writer: the cost of the client, the loopback socket and the
//     file system, which is about what a maildir server such as Dovecot adds.
//
// Both report msgs/s and MB/s; the ratio lifeline/files is logged at the end
// (the goal: 1.00).
//
//	go test -run XXX -bench FetchAll -benchtime 3x ./sidecar/imap/
func BenchmarkFetchAll(b *testing.B) {
	const benchMessages = 10000
	f := &fixture{dir: b.TempDir(), msgs: map[string][][]byte{}}
	f.j = openJournal(b, filepath.Join(f.dir, "journal"))
	f.store = userview.New(f.j)
	b.Cleanup(func() { f.j.Close() })
	bodies := fillBench(b, f, "carol", benchMessages)

	files := filepath.Join(f.dir, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		b.Fatal(err)
	}
	for i, body := range bodies {
		if err := os.WriteFile(filepath.Join(files, fmt.Sprint(i+1)), body, 0o600); err != nil {
			b.Fatal(err)
		}
	}

	rates := map[string]float64{}
	run := func(name, addr string) {
		b.Run(name, func(b *testing.B) {
			c := login(b, addr, "carol", nil)
			if d := selectBox(b, c, "INBOX"); d.NumMessages != benchMessages {
				b.Fatalf("SELECT: %d messages", d.NumMessages)
			}
			var msgs, bytes int64
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				n, size := fetchBodies(b, c)
				if n != benchMessages {
					b.Fatalf("fetched %d bodies", n)
				}
				msgs += int64(n)
				bytes += size
			}
			took := time.Since(start).Seconds()
			b.ReportMetric(float64(msgs)/took, "msgs/s")
			b.ReportMetric(float64(bytes)/1e6/took, "MB/s")
			rates[name] = float64(msgs) / took
		})
	}
	// One UID FETCH per message, the first benchEach UIDs, one after the
	// other: the cost of a command.
	const benchEach = 1000
	each := func(name, addr string) {
		b.Run(name, func(b *testing.B) {
			c := login(b, addr, "carol", nil)
			selectBox(b, c, "INBOX")
			var msgs int64
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				for uid := goimap.UID(1); uid <= benchEach; uid++ {
					if n, _ := fetchBodiesOf(b, c, goimap.UIDSetNum(uid)); n != 1 {
						b.Fatalf("UID FETCH %d: %d bodies", uid, n)
					}
					msgs++
				}
			}
			took := time.Since(start).Seconds()
			b.ReportMetric(float64(msgs)/took, "msgs/s")
			rates[name] = float64(msgs) / took
		})
	}
	ts := startServer(b, f, "", nil, nil)
	filesAddr := serveFiles(b, files, benchMessages)
	run("lifeline", ts.addr)
	run("files", filesAddr)
	each("each-lifeline", ts.addr)
	each("each-files", filesAddr)
	for _, k := range []string{"", "each-"} {
		if rates[k+"files"] > 0 {
			b.Logf("%slifeline %.0f msgs/s, %sfiles %.0f msgs/s: ratio %.2f", k, rates[k+"lifeline"], k, rates[k+"files"], rates[k+"lifeline"]/rates[k+"files"])
		}
	}
}

// fillBench journals n text messages for mailbox and returns their bytes in
// UID order.
func fillBench(b *testing.B, f *fixture, mailbox string, n int) [][]byte {
	b.Helper()
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = benchMessage(i, 4096, mailbox+"@example.com")
	}
	// Concurrently, so that the appends share syncs; the UIDs follow the
	// order of arrival, which is read back from the journal.
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 1)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				env := journal.Envelope{MailFrom: "bench@example.net", Received: time.Now(),
					Recipients: []journal.Recipient{{Address: mailbox + "@example.com", Mailboxes: []string{mailbox}, State: journal.StateMTA}}}
				if _, err := f.j.Append(context.Background(), env, strings.NewReader(string(bodies[i]))); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range bodies {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	var ordered [][]byte
	err := f.j.List(context.Background(), mailbox, 1, func(mi journal.MailboxItem) error {
		rc, err := f.j.Open(context.Background(), mi.ID)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		ordered = append(ordered, body)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(ordered) != n {
		b.Fatalf("mailbox holds %d messages, want %d", len(ordered), n)
	}
	return ordered
}

// benchMessage is a text message of about size bytes, as e2e/imapbench makes
// them.
func benchMessage(i, size int, to string) []byte {
	words := strings.Fields("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will")
	r := rand.New(rand.NewPCG(uint64(i), 0x1f1e))
	var b strings.Builder
	b.Grow(size + 100)
	fmt.Fprintf(&b, "Message-ID: <bench-%d@imapbench.lifeline.test>\r\nDate: %s\r\nFrom: Bench Sender <bench@example.net>\r\nTo: %s\r\nSubject: benchmark message %d\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", i, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC1123Z), to, i)
	line := 0
	for b.Len() < size {
		w := words[r.IntN(len(words))]
		if line+len(w)+1 > 72 {
			b.WriteString("\r\n")
			line = 0
		} else if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// fetchBodies runs UID FETCH 1:* BODY.PEEK[] and reads every literal to the
// end, as e2e.IMAPFetchBodies does.
func fetchBodies(b *testing.B, c *imapclient.Client) (int, int64) {
	return fetchBodiesOf(b, c, goimap.UIDSet{{Start: 1, Stop: 0}})
}

func fetchBodiesOf(b *testing.B, c *imapclient.Client, uids goimap.UIDSet) (int, int64) {
	peek := &goimap.FetchItemBodySection{Peek: true}
	cmd := c.Fetch(uids, &goimap.FetchOptions{UID: true, BodySection: []*goimap.FetchItemBodySection{peek}})
	n, size := 0, int64(0)
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			if bs, ok := item.(imapclient.FetchItemDataBodySection); ok && bs.Literal != nil {
				k, err := io.Copy(io.Discard, bs.Literal)
				if err != nil {
					b.Fatal(err)
				}
				n++
				size += k
			}
		}
	}
	if err := cmd.Close(); err != nil {
		b.Fatal(err)
	}
	return n, size
}

// serveFiles is the baseline: an IMAP responder that knows just enough for
// login, SELECT and UID FETCH n:* BODY.PEEK[] of messages 1..n stored as
// files dir/1..dir/n.
func serveFiles(b *testing.B, dir string, n int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFilesConn(c, dir, n)
		}
	}()
	return ln.Addr().String()
}

func serveFilesConn(c net.Conn, dir string, n int) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "* OK [CAPABILITY IMAP4rev1] ready\r\n")
	w.Flush()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		cmd = strings.ToUpper(cmd)
		switch {
		case strings.HasPrefix(cmd, "CAPABILITY"):
			fmt.Fprintf(w, "* CAPABILITY IMAP4rev1\r\n")
		case strings.HasPrefix(cmd, "SELECT"):
			fmt.Fprintf(w, "* %d EXISTS\r\n* OK [UIDVALIDITY 1] x\r\n* OK [UIDNEXT %d] x\r\n* FLAGS ()\r\n", n, n+1)
		case strings.HasPrefix(cmd, "UID FETCH"):
			from, to := 1, n
			if set := strings.Fields(cmd)[2]; set != "1:*" {
				from, _ = strconv.Atoi(set)
				to = from
			}
			for i := from; i <= to; i++ {
				body, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
				if err != nil {
					return
				}
				fmt.Fprintf(w, "* %d FETCH (UID %d BODY[] {%d}\r\n", i, i, len(body))
				w.Write(body)
				w.WriteString(")\r\n")
			}
		case strings.HasPrefix(cmd, "LOGOUT"):
			fmt.Fprintf(w, "* BYE\r\n%s OK bye\r\n", tag)
			w.Flush()
			return
		}
		fmt.Fprintf(w, "%s OK done\r\n", tag)
		if err := w.Flush(); err != nil {
			return
		}
	}
}

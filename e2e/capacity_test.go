package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/journal/badgerjournal"
)

// The capacity figures of docs/operations.md come from these tests. They
// run in the normal suite with few messages (the figures are logged); for
// the documented numbers run them with more:
//
//	LIFELINE_CAPACITY_N=5000 go test -count=1 -v -run 'TestCapacity' ./e2e/
func capacityN(t *testing.T, def int) int {
	if s := os.Getenv("LIFELINE_CAPACITY_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("LIFELINE_CAPACITY_N=%q", s)
		}
		return n
	}
	return def
}

// officeMessage makes the i-th message of a typical office mix, from a
// seeded generator so that runs compare: 70 % plain text of 1–8 KB, 20 %
// text and HTML of 10–40 KB, 10 % with an attachment of 100–600 KB of
// incompressible bytes (a PDF or a photo), base64-encoded as mail carries it.
func officeMessage(r *rand.Rand, i int) []byte {
	words := strings.Fields("the meeting report invoice project quarter please find attached below thanks regards " +
		"schedule customer order delivery budget review team update Monday Friday office contract draft")
	text := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(words[r.IntN(len(words))])
			if r.IntN(12) == 0 {
				b.WriteString(".\r\n")
			} else {
				b.WriteByte(' ')
			}
		}
		return b.String()
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from mx.example.net (mx.example.net [192.0.2.1])\r\n\tby mail.example.com (Postfix) with ESMTPS id 4Q%07d\r\n\tfor <alice@example.com>; Mon, 2 Nov 2026 10:00:00 +0100\r\n", i)
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.net>\r\nTo: Alice <alice@example.com>\r\nCc: bob@example.com\r\n", i%50, i%50)
	fmt.Fprintf(&b, "Subject: %s %d\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <%d.capacity@example.net>\r\nMIME-Version: 1.0\r\n", text(30), i, i)
	switch k := r.IntN(10); {
	case k < 7:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", text(1000+r.IntN(7000)))
	case k < 9:
		body := text(5000 + r.IntN(15000))
		fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>%s</p></body></html>\r\n--b1--\r\n",
			body, strings.ReplaceAll(body, "\r\n", "</p>\r\n<p>"))
	default:
		att := make([]byte, 100_000+r.IntN(500_000))
		for j := range att {
			att[j] = byte(r.Uint32())
		}
		enc := base64.StdEncoding.EncodeToString(att)
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n--b2\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
			text(2000))
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n--b2--\r\n")
	}
	return b.Bytes()
}

// diskUsage is what du reports for dir: allocated blocks, not file lengths
// (Badger's value log is sparse until written).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestCapacityJournal appends messages to a journal as the milter does (two
// recipients each, one mailbox each) and reports the journal's size on disk
// per message and per raw byte, after Close has flushed it: the basis of the
// journal sizing in docs/operations.md.
func TestCapacityJournal(t *testing.T) {
	profiles := []struct {
		name string
		msgs func(n int) [][]byte
	}{
		{"office mix", func(n int) [][]byte {
			r := rand.New(rand.NewPCG(1, 2))
			out := make([][]byte, n)
			for i := range out {
				out[i] = officeMessage(r, i)
			}
			return out
		}},
		{"bounce corpus (sisimai)", func(n int) [][]byte {
			root, err := ModuleRoot()
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(filepath.Dir(root), "shared", "corpus")
			corpus, err := ReadCorpus(dir, "sisimai/bsd")
			if err != nil || len(corpus) == 0 {
				return nil
			}
			out := make([][]byte, n)
			for i := range out {
				// A unique first line keeps every copy from being a duplicate.
				out[i] = append([]byte(fmt.Sprintf("X-Capacity-Id: %d\r\n", i)), corpus[i%len(corpus)].Data...)
			}
			return out
		}},
	}
	n := capacityN(t, 300)
	for _, p := range profiles {
		t.Run(p.name, func(t *testing.T) {
			msgs := p.msgs(n)
			if msgs == nil {
				t.Skip("corpus absent")
			}
			dir := filepath.Join(t.TempDir(), "journal")
			j, err := badgerjournal.Open(dir, badgerjournal.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var raw int64
			start := time.Now()
			for i, m := range msgs {
				env := journal.Envelope{
					MailFrom: "sender@example.net", QueueID: fmt.Sprintf("Q%d", i), Received: time.Now(), Source: "milter",
					Recipients: []journal.Recipient{
						{Address: "alice@example.com", Mailboxes: []string{"alice@example.com"}, Server: "dovecot", State: journal.StateMTA},
						{Address: "bob@example.com", Mailboxes: []string{"bob@example.com"}, Server: "dovecot", State: journal.StateMTA},
					},
				}
				if _, err := j.Append(ctx, env, bytes.NewReader(m)); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
				raw += int64(len(m))
			}
			took := time.Since(start)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			disk := diskUsage(t, dir)
			if disk <= 0 || raw <= 0 {
				t.Fatalf("disk %d raw %d", disk, raw)
			}
			perMsg := float64(disk) / float64(n)
			t.Logf("%s: %d messages, %.1f KiB raw on average; journal on disk %.1f MiB = %.1f KiB per message = %.2f × the raw size; %.0f appends/s (one writer)",
				p.name, n, float64(raw)/float64(n)/1024, float64(disk)/(1<<20), perMsg/1024, float64(disk)/float64(raw), float64(n)/took.Seconds())
			t.Logf("%s: 10,000 messages a day → %.2f GiB a day, %.0f GiB for 90 days of retention",
				p.name, perMsg*10_000/(1<<30), perMsg*10_000*90/(1<<30))
		})
	}
}

// TestCapacityServeMemory measures the resident memory of `lifeline serve`
// (IMAP and POP3 on) idle, and after the milter journaled messages of the
// office mix, read from /proc (VmRSS, VmHWM).
func TestCapacityServeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs lifeline serve")
	}
	ll := StartLifeline(t, LifelineOptions{
		// No LMTP address: no probe, so no outage, whatever the run's length.
		Servers: []LifelineServer{{Name: PrimaryServer, Domains: []string{DefaultDomain}}},
		Sidecar: &SidecarOptions{Users: map[string]string{"alice@example.test": "pw"}},
	})
	idle := readMemoryEventually(t, ll.Pid())
	n := capacityN(t, 300)
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for i := range n {
		if err := milterSend(ll.MilterAddr, "sender@example.net", []string{"alice@example.test"}, officeMessage(r, i)); err != nil {
			t.Fatalf("milter message %d: %v", i, err)
		}
	}
	took := time.Since(start)
	loaded, err := ReadMemory(ll.Pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lifeline serve: RSS idle %.1f MiB; after %d office-mix messages through the milter (%.0f msg/s, one connection at a time): RSS %.1f MiB, peak %.1f MiB",
		float64(idle.RSS)/(1<<20), n, float64(n)/took.Seconds(), float64(loaded.RSS)/(1<<20), float64(loaded.Peak)/(1<<20))
	// The resident set counts the pages of the journal's memory-mapped
	// files (RssFile), which the kernel reclaims like page cache, apart
	// from the process's own memory (RssAnon).
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ll.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "RssAnon:") || strings.HasPrefix(line, "RssFile:") {
			parts = append(parts, strings.Join(strings.Fields(line), " "))
		}
	}
	page, err := ll.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	heap, _ := MetricSum(page, "go_memstats_heap_inuse_bytes")
	t.Logf("lifeline serve after the load: %s; Go heap in use %.1f MiB", strings.Join(parts, ", "), heap/(1<<20))
	if loaded.RSS <= 0 {
		t.Errorf("RSS %d", loaded.RSS)
	}
}

func readMemoryEventually(t *testing.T, pid int) Memory {
	t.Helper()
	var m Memory
	err := Poll(context.Background(), 10*time.Second, func() (bool, error) {
		var err error
		m, err = ReadMemory(pid)
		return err == nil && m.RSS > 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// milterSend offers one message to a milter as Postfix would: connect,
// envelope, each header field, the body in chunks, end of message. An answer
// other than continue (accept at the end) is an error.
func milterSend(addr, from string, to []string, msg []byte) error {
	network, address, _ := strings.Cut(addr, ":")
	bag := gomilter.NewMacroBag()
	sess, err := gomilter.NewClient(network, address, gomilter.WithAction(gomilter.AllClientSupportedActionMasks)).Session(bag)
	if err != nil {
		return err
	}
	defer sess.Close()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		return errors.New("message without a header/body separator")
	}
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) {
			return sess.Conn("mx.example.net", gomilter.FamilyInet, 1234, "192.0.2.1")
		},
		func() (*gomilter.Action, error) { return sess.Helo("mx.example.net") },
		func() (*gomilter.Action, error) { return sess.Mail(from, "") },
	}
	for _, r := range to {
		steps = append(steps, func() (*gomilter.Action, error) { return sess.Rcpt(r, "") })
	}
	steps = append(steps, func() (*gomilter.Action, error) {
		bag.Set(gomilter.MacroQueueId, fmt.Sprintf("Q%x", rand.Uint64()))
		return sess.DataStart()
	})
	// Header fields, unfolded into name and value as the MTA sends them.
	var fields [][2]string
	for _, line := range strings.Split(string(head), "\r\n") {
		if (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(fields) > 0 {
			fields[len(fields)-1][1] += "\r\n" + line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		fields = append(fields, [2]string{name, value})
	}
	for _, f := range fields {
		steps = append(steps, func() (*gomilter.Action, error) { return sess.HeaderField(f[0], f[1], nil) })
	}
	steps = append(steps, func() (*gomilter.Action, error) { return sess.HeaderEnd() })
	for len(body) > 0 {
		chunk := body[:min(len(body), 65535)]
		body = body[len(chunk):]
		steps = append(steps, func() (*gomilter.Action, error) { return sess.BodyChunk(chunk) })
	}
	for i, step := range steps {
		act, err := step()
		if err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		if act.Type != gomilter.ActionContinue {
			return fmt.Errorf("step %d: %v", i, act)
		}
	}
	_, act, err := sess.End()
	if err != nil {
		return fmt.Errorf("end of message: %w", err)
	}
	if act.Type != gomilter.ActionAccept {
		return fmt.Errorf("end of message: %v", act)
	}
	return nil
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// clientCopy is one message as an independent client stored it.
type clientCopy struct {
	how  string // "curl imaps UID 3", "mbsync IMAPS …/new/…", …
	data []byte
	// lf: the client stores line ends as LF (mbsync's maildir); the journal
	// and the IMAP and POP3 wire have CRLF.
	lf bool
}

// TestSidecarClients journals the whole shared corpus (and a 5 MB message)
// through real Postfix and Lifeline's milter into alice's continuity
// mailbox and three messages into bob's, serves them with the lifeline
// binary's IMAP and POP3 servers (serve = "always", plain and implicit-TLS
// listeners, a passwd-file), reads them with independent clients — mbsync
// (plain and IMAPS, then again to show that nothing is fetched twice), curl
// (imaps://, pop3s://), Python's imaplib and poplib — checks that bob cannot
// reach alice's mail, and finally compares every copy a client stored, byte
// for byte, with `lifeline export` of the journal.
func TestSidecarClients(t *testing.T) {
	requireE2E(t)
	corpus, err := ReadCorpus(CorpusDir(t), "sisimai/bsd", "sisimai/err", "sisimai/not")
	if err != nil {
		t.Fatalf("reading the corpus: %v", err)
	}
	mbsync := NeedTool(t, "mbsync", "isync")
	curl := NeedTool(t, "curl", "curl")
	python := NeedTool(t, "python3", "python3")

	alice, bob := qualify("alice", DefaultDomain), qualify("bob", DefaultDomain)
	passwords := map[string]string{alice: "alice-Secret-1", bob: "bob-Secret-2"}
	env := Start(t, Options{
		Milter: true,
		Users:  []string{"alice", "bob"},
		Lifeline: LifelineOptions{Sidecar: &SidecarOptions{
			Serve: ServeAlways, Users: passwords, TLS: true,
		}},
	})
	ll := env.Lifeline
	ctx := context.Background()

	ledger := NewLedger()
	var msgs []*sentMessage
	add := func(name, to string, data []byte) {
		id := ledger.NewID()
		msgs = append(msgs, &sentMessage{id: id, name: name, from: "sender@example.net", to: []string{to}, mailboxes: []string{to}, data: CRLF(WithTestID(id, data))})
		ledger.Expect(id, to)
	}
	for _, c := range corpus {
		add(c.Name, alice, c.Data)
	}
	add("5MB-attachment", alice, MessageOfSize(5<<20, alice))
	for i := 1; i <= 3; i++ {
		add(fmt.Sprintf("bob-%d", i), bob, fmt.Appendf(nil, "From: carol@example.net\nTo: %s\nSubject: for bob only %d\n\nbob's message %d\n", bob, i, i))
	}
	sendAll(t, env, msgs, 8)
	// Postfix's delivery to Dovecot finishes first, so that the clients
	// below do not compete with it for the CPU.
	env.WaitDelivered(t, ledger, 3*time.Minute)
	if t.Failed() {
		t.FailNow()
	}
	aliceIDs, bobIDs := ledger.Expected(alice), ledger.Expected(bob)
	for _, u := range []struct {
		user string
		n    int
	}{{alice, len(aliceIDs)}, {bob, len(bobIDs)}} {
		if err := WaitIMAPCount(ctx, ll.IMAPAddr, u.user, passwords[u.user], uint32(u.n), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("journaled %d corpus messages and a 5 MB one for %s, %d for %s", len(corpus), alice, len(bobIDs), bob)

	// alice's UIDs, for the clients that address messages by UID or number.
	uids := imapUIDs(t, ll.IMAPAddr, alice, passwords[alice])
	if len(uids) != len(aliceIDs) {
		t.Fatalf("UID SEARCH ALL for %s: %d UIDs, want %d", alice, len(uids), len(aliceIDs))
	}
	dir := t.TempDir()
	ca := ll.CAFile // the self-signed certificate: the clients trust it and nothing else
	var copies []clientCopy
	maildirs := map[string]string{} // name → maildir mbsync filled

	t.Run("mbsync", func(t *testing.T) {
		plain := mbsyncConfig{Dir: filepath.Join(dir, "mbsync-plain"), Host: "127.0.0.1", Port: portOf(ll.IMAPAddr), SSLType: "None", User: alice, Pass: passwords[alice]}
		first := plain.run(t, mbsync)
		maildirs["mbsync"] = plain.inbox()
		if first.bodies != len(aliceIDs) {
			t.Errorf("first mbsync run fetched %d message bodies, want %d", first.bodies, len(aliceIDs))
		}
		before := snapshotMaildir(t, plain.inbox())
		if len(before) != len(aliceIDs) {
			t.Errorf("maildir after the first mbsync run has %d messages, want %d", len(before), len(aliceIDs))
		}
		// A second run with the sync state of the first: it may fetch
		// UIDs and flags, never a body again, and the maildir stays as it was.
		second := plain.run(t, mbsync)
		if second.bodies != 0 || second.bodyCmds != 0 {
			t.Errorf("second mbsync run fetched %d bodies (%d bytes, %d BODY.PEEK[] commands), want none", second.bodies, second.bodyBytes, second.bodyCmds)
		}
		if after := snapshotMaildir(t, plain.inbox()); !equalSnapshots(before, after) {
			t.Errorf("the second mbsync run changed the maildir: %d files before, %d after", len(before), len(after))
		}
		t.Logf("mbsync (SSLType None): first run %d bodies, %d bytes, %d commands; second run %d bodies, %d commands in all: %s",
			first.bodies, first.bodyBytes, first.commands, second.bodies, second.commands, strings.Join(second.names, " "))

		secure := mbsyncConfig{Dir: filepath.Join(dir, "mbsync-imaps"), Host: "127.0.0.1", Port: portOf(ll.IMAPTLSAddr), SSLType: "IMAPS", CertificateFile: ca, User: alice, Pass: passwords[alice]}
		r := secure.run(t, mbsync)
		maildirs["mbsync-IMAPS"] = secure.inbox()
		if r.bodies != len(aliceIDs) {
			t.Errorf("mbsync over IMAPS fetched %d message bodies, want %d", r.bodies, len(aliceIDs))
		}
	})
	for name, md := range maildirs {
		files, err := MaildirFiles(md)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			copies = append(copies, clientCopy{how: name + " " + strings.TrimPrefix(f, dir), data: mustRead(t, f), lf: true})
		}
	}

	t.Run("curl", func(t *testing.T) {
		fetch := func(url, user string) ([]byte, error) {
			out, err := exec.Command(curl, "-sS", "--max-time", "60", "--cacert", ca, "--user", user+":"+passwords[user], url).Output()
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return out, err
		}
		imaps := "imaps://127.0.0.1:" + portOf(ll.IMAPTLSAddr)
		pop3s := "pop3s://127.0.0.1:" + portOf(ll.POP3TLSAddr)
		picks := []imap.UID{uids[0], uids[len(uids)/2], uids[len(uids)-1]}
		for _, uid := range picks {
			url := fmt.Sprintf("%s/INBOX;UID=%d", imaps, uid)
			b, err := fetch(url, alice)
			if err != nil {
				t.Errorf("curl %s: %v", url, err)
				continue
			}
			copies = append(copies, clientCopy{how: "curl " + url, data: b})
		}
		for _, n := range []int{1, len(aliceIDs)} {
			url := fmt.Sprintf("%s/%d", pop3s, n)
			b, err := fetch(url, alice)
			if err != nil {
				t.Errorf("curl %s: %v", url, err)
				continue
			}
			copies = append(copies, clientCopy{how: "curl " + url, data: b})
		}
		if list, err := fetch(pop3s+"/", alice); err != nil {
			t.Errorf("curl %s/ (LIST): %v", pop3s, err)
		} else if n := bytes.Count(list, []byte("\n")); n != len(aliceIDs) {
			t.Errorf("curl %s/ (LIST): %d lines, want %d", pop3s, n, len(aliceIDs))
		}
		url := imaps + "/INBOX;UID=1"
		if b, err := fetch(url, bob); err != nil {
			t.Errorf("curl %s as %s: %v", url, bob, err)
		} else {
			copies = append(copies, clientCopy{how: "curl " + url + " (bob)", data: b})
		}
		// bob asks for a UID that exists only in alice's mailbox.
		url = fmt.Sprintf("%s/INBOX;UID=%d", imaps, uids[len(uids)-1])
		if b, _ := fetch(url, bob); len(b) > 0 {
			t.Errorf("curl %s as %s returned %d bytes (test id %q), want nothing", url, bob, len(b), TestIDOfBytes(b))
		}
	})

	t.Run("imaplib", func(t *testing.T) {
		out := filepath.Join(dir, "imaplib")
		mkdirs(t, out)
		var res struct {
			StartTLS       bool     `json:"starttls"`
			List           []string `json:"list"`
			Exists         int      `json:"exists"`
			UIDs           int      `json:"uids"`
			Fetched        []string `json:"fetched"`
			Flagged        []int    `json:"flagged"`
			Flags          string   `json:"flags"`
			FlaggedTLS     []int    `json:"flagged_tls"`
			FlaggedAfter   []int    `json:"flagged_after"`
			SubjectMatches int      `json:"subject_matches"`
		}
		runPython(t, python, imaplibScript, &res, "127.0.0.1", portOf(ll.IMAPAddr), portOf(ll.IMAPTLSAddr), ca, alice, passwords[alice], out)
		t.Logf("imaplib: %+v", res)
		if !res.StartTLS {
			t.Errorf("imaplib: the plain listener does not offer STARTTLS although [tls] is configured")
		}
		if len(res.List) == 0 || !strings.Contains(strings.Join(res.List, "\n"), "INBOX") {
			t.Errorf("imaplib LIST: %q, want INBOX", res.List)
		}
		if res.Exists != len(aliceIDs) || res.UIDs != len(aliceIDs) {
			t.Errorf("imaplib: SELECT INBOX says %d EXISTS, UID SEARCH ALL finds %d, want %d", res.Exists, res.UIDs, len(aliceIDs))
		}
		if len(res.Fetched) != 3 {
			t.Errorf("imaplib fetched %d messages, want 3", len(res.Fetched))
		}
		if len(res.Flagged) != 1 || !strings.Contains(res.Flags, `\Flagged`) {
			t.Errorf("imaplib: after STORE +FLAGS (\\Flagged): SEARCH FLAGGED %v, FETCH FLAGS %q", res.Flagged, res.Flags)
		}
		if fmt.Sprint(res.FlaggedTLS) != fmt.Sprint(res.Flagged) {
			t.Errorf("imaplib: a second session (IMAPS) finds FLAGGED %v, the first set %v", res.FlaggedTLS, res.Flagged)
		}
		if len(res.FlaggedAfter) != 0 {
			t.Errorf("imaplib: after STORE -FLAGS, SEARCH FLAGGED %v, want none", res.FlaggedAfter)
		}
		if res.SubjectMatches != 1 {
			t.Errorf("imaplib: SEARCH SUBJECT \"a large attachment\" found %d, want 1", res.SubjectMatches)
		}
		for _, f := range res.Fetched {
			copies = append(copies, clientCopy{how: "imaplib " + filepath.Base(f), data: mustRead(t, f)})
		}
	})

	t.Run("poplib", func(t *testing.T) {
		out := filepath.Join(dir, "poplib")
		mkdirs(t, out)
		var res struct {
			Stat      int      `json:"stat"`
			UIDL      int      `json:"uidl"`
			Fetched   []string `json:"fetched"`
			BobStat   int      `json:"bob_stat"`
			BobRetr4  string   `json:"bob_retr4"`
			BobWrong  string   `json:"bob_wrong_password"`
			BobBodies []string `json:"bob_bodies"`
		}
		runPython(t, python, poplibScript, &res, "127.0.0.1", portOf(ll.POP3Addr), portOf(ll.POP3TLSAddr), ca,
			alice, passwords[alice], bob, passwords[bob], out)
		t.Logf("poplib: stat %d, uidl %d, bob stat %d, bob RETR 4: %q, bob with alice's password: %q", res.Stat, res.UIDL, res.BobStat, res.BobRetr4, res.BobWrong)
		if res.Stat != len(aliceIDs) || res.UIDL != len(aliceIDs) {
			t.Errorf("poplib: STAT %d, UIDL %d lines, want %d", res.Stat, res.UIDL, len(aliceIDs))
		}
		if res.BobStat != len(bobIDs) {
			t.Errorf("poplib: bob's STAT %d, want %d", res.BobStat, len(bobIDs))
		}
		if !strings.HasPrefix(res.BobRetr4, "-ERR") {
			t.Errorf("poplib: bob's RETR 4 (alice has a message 4, bob has 3): %q, want -ERR", res.BobRetr4)
		}
		if !strings.HasPrefix(res.BobWrong, "-ERR") {
			t.Errorf("poplib: bob logging in with alice's password: %q, want -ERR", res.BobWrong)
		}
		for _, f := range append(res.Fetched, res.BobBodies...) {
			copies = append(copies, clientCopy{how: "poplib " + filepath.Base(f), data: mustRead(t, f)})
		}
	})

	bobOnly := map[string]bool{}
	for _, id := range bobIDs {
		bobOnly[id] = true
	}
	t.Run("isolation", func(t *testing.T) {
		out := filepath.Join(dir, "isolation")
		mkdirs(t, out)
		var res struct {
			Exists      int               `json:"exists"`
			All         []string          `json:"all"`
			Guess       []string          `json:"guess"`
			GuessSeq    string            `json:"guess_seq"`
			Selects     map[string]string `json:"selects"`
			Status      map[string]string `json:"status"`
			WrongPass   string            `json:"wrong_password"`
			SearchAlice int               `json:"search_alice"`
		}
		guess := fmt.Sprintf("%d:%d", len(bobIDs)+1, uids[len(uids)-1]+100)
		runPython(t, python, isolationScript, &res, "127.0.0.1", portOf(ll.IMAPTLSAddr), ca, bob, passwords[bob], passwords[alice], alice, guess, out)
		t.Logf("isolation: %+v", res)
		if res.Exists != len(bobIDs) {
			t.Errorf("bob's INBOX has %d messages, want %d", res.Exists, len(bobIDs))
		}
		if len(res.All) != len(bobIDs) {
			t.Errorf("bob's UID FETCH 1:* returned %d messages, want %d", len(res.All), len(bobIDs))
		}
		for _, f := range res.All {
			b := mustRead(t, f)
			if id := TestIDOfBytes(b); !bobOnly[id] {
				t.Errorf("bob fetched message %q (%s), which is not his", id, f)
			}
			copies = append(copies, clientCopy{how: "imaplib (bob) " + filepath.Base(f), data: b})
		}
		if len(res.Guess) != 0 || res.GuessSeq != "" {
			t.Errorf("bob's UID FETCH %s (alice's UIDs) returned %d messages, FETCH by sequence number past his own %q: want nothing", guess, len(res.Guess), res.GuessSeq)
		}
		for name, typ := range res.Selects {
			if typ == "OK" {
				t.Errorf("bob could SELECT %q", name)
			}
		}
		for name, typ := range res.Status {
			if typ == "OK" {
				t.Errorf("bob could STATUS %q", name)
			}
		}
		if res.WrongPass == "OK" {
			t.Errorf("LOGIN as %s with bob's password worked", alice)
		}
		if res.SearchAlice != 0 {
			t.Errorf("bob's SEARCH for alice's subject found %d messages", res.SearchAlice)
		}
	})

	page, err := ll.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := MetricSum(page, "lifeline_panics_total"); !ok || n != 0 {
		t.Errorf("lifeline_panics_total = %v (exported: %v), want 0", n, ok)
	}
	for _, m := range []string{"lifeline_imap_logins_total", "lifeline_imap_sessions_total", "lifeline_pop3_logins_total"} {
		if n, ok := MetricSum(page, m); ok {
			t.Logf("metric %s = %v", m, n)
		}
	}

	// The journal, read with `lifeline serve` stopped (one process per
	// Badger journal): `lifeline export --format eml` writes each message
	// byte for byte as journaled.
	stopStart := time.Now()
	if err := ll.Stop(); err != nil {
		t.Fatalf("lifeline serve did not stop cleanly: %v", err)
	}
	t.Logf("lifeline serve stopped in %v", time.Since(stopStart).Round(time.Millisecond))
	journal := map[string][]byte{} // test id → journaled bytes
	for _, box := range []string{alice, bob} {
		files, err := ll.ExportEML(ctx, box, filepath.Join(dir, "export", box))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b := mustRead(t, f)
			journal[TestIDOfBytes(b)] = b
		}
		if want := len(ledger.Expected(box)); len(files) != want {
			t.Errorf("export of %s: %d messages, want %d", box, len(files), want)
		}
	}
	compareCopies(t, copies, journal)

	// Each maildir mbsync filled holds every one of alice's messages once.
	for name, md := range maildirs {
		seen := map[string]int{}
		for _, c := range copies {
			if strings.HasPrefix(c.how, name+" ") {
				seen[TestIDOfBytes(c.data)]++
			}
		}
		var missing, twice []string
		for _, id := range aliceIDs {
			switch seen[id] {
			case 0:
				missing = append(missing, id)
			case 1:
			default:
				twice = append(twice, id)
			}
		}
		if len(missing)+len(twice) > 0 || len(seen) != len(aliceIDs) {
			t.Errorf("%s maildir %s: %d distinct messages, %d missing (%s), %d more than once (%s)", name, md, len(seen), len(missing), strings.Join(firstN(missing, 10), " "), len(twice), strings.Join(firstN(twice, 10), " "))
		}
	}
}

// compareCopies checks every client's copy against the journaled bytes of
// the message with its test id. The copies of curl, imaplib and poplib must
// be identical. mbsync's maildir files differ in exactly two ways, both
// mbsync's doing (isync 1.4): every CRLF is LF (a maildir holds LF), and
// mbsync adds one header line "X-TUID: " + 12 characters as the last line of
// the header, its own mark to find the message again if the run is
// interrupted; the comparison removes that line and nothing else.
func compareCopies(t *testing.T, copies []clientCopy, journal map[string][]byte) {
	t.Helper()
	var diffs []string
	counts := map[string]int{}
	tuids := 0
	for _, c := range copies {
		kind, _, _ := strings.Cut(c.how, " ")
		counts[kind]++
		id := TestIDOfBytes(c.data)
		want, ok := journal[id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: test id %q is in no export", c.how, id))
			continue
		}
		got := c.data
		if c.lf {
			want = bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))
			var removed bool
			if got, removed = stripTUID(got); removed {
				tuids++
			}
		}
		if !bytes.Equal(got, want) {
			diffs = append(diffs, fmt.Sprintf("%s (%s): %s", c.how, id, describeDiff(got, want)))
		}
	}
	if tuids > 0 {
		t.Logf("removed mbsync's X-TUID header line from %d maildir copies before comparing", tuids)
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("%d of %d client copies differ from the journal:\n%s", len(diffs), len(copies), strings.Join(firstN(diffs, 20), "\n"))
	}
	t.Logf("compared %d client copies with the journal byte for byte: %v", len(copies), counts)
}

// mbsyncTUIDRE is the header line mbsync adds to each message it stores,
// at the end of the header (LF, in a maildir).
var mbsyncTUIDRE = regexp.MustCompile(`\nX-TUID: [A-Za-z0-9+/]{12}\n\n`)

// stripTUID removes mbsync's X-TUID line if it is the last line of the
// header (before the first empty line).
func stripTUID(b []byte) ([]byte, bool) {
	end := bytes.Index(b, []byte("\n\n"))
	if end < 0 {
		return b, false
	}
	loc := mbsyncTUIDRE.FindIndex(b[:end+2])
	if loc == nil || loc[1] != end+2 {
		return b, false
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[:loc[0]+1]...)
	return append(out, b[loc[1]-1:]...), true
}

// describeDiff says where got first differs from want.
func describeDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	ctx := func(b []byte) []byte { return b[max(i-40, 0):min(i+40, len(b))] }
	return fmt.Sprintf("%d bytes, journal %d; first difference at byte %d: got %q, journal %q", len(got), len(want), i, ctx(got), ctx(want))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imapUIDs returns the UIDs of user's INBOX, ascending.
func imapUIDs(t *testing.T, addr, user, password string) []imap.UID {
	t.Helper()
	c, err := IMAPLogin(addr, nil, user, password)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		t.Fatalf("UID SEARCH ALL: %v", err)
	}
	uids := data.AllUIDs()
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
	return uids
}

// runPython runs script with args and decodes the JSON object it prints as
// its last line into res.
func runPython(t *testing.T, python, script string, res any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{"-c", script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], res); err != nil {
		t.Fatalf("python: its last line is not the JSON result: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
}

// mbsyncConfig is a private mbsync configuration: one IMAP account, a
// maildir, and a channel that pulls INBOX.
type mbsyncConfig struct {
	Dir             string // holds the config, the maildir and the logs
	Host, Port      string
	SSLType         string // "None" or "IMAPS"
	CertificateFile string
	User, Pass      string
	runs            int
}

func (m *mbsyncConfig) path() string  { return filepath.Join(m.Dir, "mbsyncrc") }
func (m *mbsyncConfig) inbox() string { return filepath.Join(m.Dir, "mail", "INBOX") }

func (m *mbsyncConfig) write(t *testing.T) {
	t.Helper()
	mkdirs(t, filepath.Join(m.Dir, "mail"))
	cert := ""
	if m.CertificateFile != "" {
		cert = "CertificateFile " + m.CertificateFile + "\n"
	}
	conf := fmt.Sprintf(`# Generated by Lifeline's e2e tests.
IMAPAccount lifeline
Host %s
Port %s
User %s
Pass %s
SSLType %s
%sTimeout 120

IMAPStore lifeline-far
Account lifeline

MaildirStore local
Path %s/
Inbox %s

Channel lifeline
Far :lifeline-far:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
`, m.Host, m.Port, m.User, strconv.Quote(m.Pass), m.SSLType, cert, filepath.Join(m.Dir, "mail"), m.inbox())
	writeFile(t, m.path(), conf, 0o600)
}

// mbsyncRun is what one run's protocol log (-Dn) shows.
type mbsyncRun struct {
	commands  int      // IMAP commands sent
	names     []string // their names, in order
	bodyCmds  int      // commands that asked for a body (BODY.PEEK[])
	bodies    int      // bodies received (BODY[] {n} literals)
	bodyBytes int64
}

var (
	mbsyncCmdRE  = regexp.MustCompile(`>>> \d+ ([A-Z]+(?: [A-Z]+)?)`)
	mbsyncBodyRE = regexp.MustCompile(`BODY\[\] \{(\d+)\+?\}`)
)

// run runs `mbsync -Dn -c CONFIG lifeline` and reads its protocol log: -Dn
// prints every command and response line but not the literals' contents.
func (m *mbsyncConfig) run(t *testing.T, mbsync string) mbsyncRun {
	t.Helper()
	if m.runs == 0 {
		m.write(t)
	}
	m.runs++
	log := filepath.Join(m.Dir, fmt.Sprintf("run%d.log", m.runs))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, mbsync, "-Dn", "-c", m.path(), "lifeline").CombinedOutput()
	t.Logf("mbsync (SSLType %s) run %d took %v", m.SSLType, m.runs, time.Since(start).Round(time.Millisecond))
	if werr := os.WriteFile(log, out, 0o644); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("mbsync (%s, run %d): %v\n%s", m.SSLType, m.runs, err, tail(log, 16<<10))
	}
	var r mbsyncRun
	for _, line := range strings.Split(string(out), "\n") {
		if c := mbsyncCmdRE.FindStringSubmatch(line); c != nil {
			r.commands++
			r.names = append(r.names, c[1])
			if strings.Contains(line, "BODY.PEEK[]") || strings.Contains(line, "BODY[]") || strings.Contains(line, "RFC822") {
				r.bodyCmds++
			}
			continue
		}
		if b := mbsyncBodyRE.FindStringSubmatch(line); b != nil {
			n, _ := strconv.ParseInt(b[1], 10, 64)
			r.bodies++
			r.bodyBytes += n
		}
	}
	if r.commands == 0 {
		t.Fatalf("mbsync (%s, run %d): no IMAP commands in its -Dn log:\n%s", m.SSLType, m.runs, tail(log, 16<<10))
	}
	return r
}

// maildirEntry is what a maildir file looked like.
type maildirEntry struct {
	size  int64
	mtime time.Time
}

// snapshotMaildir maps each message file of a maildir (new/ and cur/) to
// its size and modification time.
func snapshotMaildir(t *testing.T, maildir string) map[string]maildirEntry {
	t.Helper()
	files, err := MaildirFiles(maildir)
	if err != nil {
		t.Fatal(err)
	}
	snap := map[string]maildirEntry{}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		snap[strings.TrimPrefix(f, maildir)] = maildirEntry{st.Size(), st.ModTime()}
	}
	return snap
}

func equalSnapshots(a, b map[string]maildirEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.size != v.size || !w.mtime.Equal(v.mtime) {
			return false
		}
	}
	return true
}

// imaplibScript: argv host, port, tls port, CA file, user, password, output
// directory. It uses STARTTLS on the plain port, lists, selects, searches,
// fetches three messages (first, middle, last UID) into files, sets and
// clears \Flagged, and checks the flag from a second session over implicit
// TLS.
const imaplibScript = `
import imaplib, json, ssl, sys
imaplib._MAXLINE = 1 << 24
host, port, tlsport, ca, user, pw, out = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
res = {}
M = imaplib.IMAP4(host, int(port), timeout=60)
res['starttls'] = 'STARTTLS' in M.capabilities
if res['starttls']:
    M.starttls(ssl_context=ctx)
typ, _ = M.login(user, pw)
assert typ == 'OK', typ
typ, boxes = M.list()
assert typ == 'OK', (typ, boxes)
res['list'] = [b.decode() for b in boxes if b]
typ, data = M.select('INBOX')
assert typ == 'OK', (typ, data)
res['exists'] = int(data[0])
typ, data = M.uid('SEARCH', None, 'ALL')
assert typ == 'OK', (typ, data)
uids = sorted(int(x) for x in data[0].split())
res['uids'] = len(uids)
res['fetched'] = []
for u in sorted(set([uids[0], uids[len(uids) // 2], uids[-1]])):
    typ, data = M.uid('FETCH', str(u), '(BODY.PEEK[])')
    assert typ == 'OK' and data and isinstance(data[0], tuple), (typ, data)
    path = '%s/uid-%d.eml' % (out, u)
    with open(path, 'wb') as f:
        f.write(data[0][1])
    res['fetched'].append(path)
typ, data = M.uid('SEARCH', None, 'SUBJECT', '"a large attachment"')
assert typ == 'OK', (typ, data)
res['subject_matches'] = len(data[0].split())
flag = str(uids[1])
typ, data = M.uid('STORE', flag, '+FLAGS', '(\\Flagged)')
assert typ == 'OK', (typ, data)
typ, data = M.uid('SEARCH', None, 'FLAGGED')
res['flagged'] = [int(x) for x in data[0].split()]
typ, data = M.uid('FETCH', flag, '(FLAGS)')
res['flags'] = data[0].decode()
M.logout()
M = imaplib.IMAP4_SSL(host, int(tlsport), ssl_context=ctx, timeout=60)
M.login(user, pw)
M.select('INBOX')
typ, data = M.uid('SEARCH', None, 'FLAGGED')
res['flagged_tls'] = [int(x) for x in data[0].split()]
typ, data = M.uid('STORE', flag, '-FLAGS', '(\\Flagged)')
assert typ == 'OK', (typ, data)
typ, data = M.uid('SEARCH', None, 'FLAGGED')
res['flagged_after'] = [int(x) for x in data[0].split()]
M.logout()
print(json.dumps(res))
`

// poplibScript: argv host, port, TLS port, CA file, user, password, user 2,
// password 2, output directory. User 1 over implicit TLS: STAT, UIDL, RETR
// of the first and the last message. User 2 over STLS: STAT, RETR of each,
// then RETR of the number after his last; a login with user 1's password.
const poplibScript = `
import json, poplib, ssl, sys
poplib._MAXLINE = 1 << 24
host, port, tlsport, ca, user, pw, user2, pw2, out = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=ca)
res = {'fetched': [], 'bob_bodies': []}
def retr(p, n, path):
    resp, lines, octets = p.retr(n)
    with open(path, 'wb') as f:
        f.write(b'\r\n'.join(lines) + b'\r\n')
    return path
p = poplib.POP3_SSL(host, int(tlsport), context=ctx, timeout=60)
p.user(user)
p.pass_(pw)
count, size = p.stat()
res['stat'] = count
resp, listing, _ = p.uidl()
res['uidl'] = len(listing)
for n in sorted(set([1, count])):
    res['fetched'].append(retr(p, n, '%s/alice-%d.eml' % (out, n)))
p.quit()
p = poplib.POP3(host, int(port), timeout=60)
p.stls(ctx)
p.user(user2)
p.pass_(pw2)
count, size = p.stat()
res['bob_stat'] = count
for n in range(1, count + 1):
    res['bob_bodies'].append(retr(p, n, '%s/bob-%d.eml' % (out, n)))
try:
    resp = p.retr(count + 1)
    res['bob_retr4'] = resp[0].decode()
except poplib.error_proto as e:
    res['bob_retr4'] = str(e.args[0].decode() if isinstance(e.args[0], bytes) else e.args[0])
p.quit()
p = poplib.POP3(host, int(port), timeout=60)
p.stls(ctx)
p.user(user2)
try:
    res['bob_wrong_password'] = p.pass_(pw).decode()
except poplib.error_proto as e:
    res['bob_wrong_password'] = str(e.args[0].decode() if isinstance(e.args[0], bytes) else e.args[0])
print(json.dumps(res))
`

// isolationScript: argv host, TLS port, CA file, user, password, the other
// user's password, the other user, a UID set that only the other user has,
// output directory. The user fetches everything he has, then guesses.
const isolationScript = `
import imaplib, json, ssl, sys
imaplib._MAXLINE = 1 << 24
host, tlsport, ca, user, pw, otherpw, other, guess, out = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=ca)
res = {'all': [], 'guess': [], 'selects': {}, 'status': {}}
M = imaplib.IMAP4_SSL(host, int(tlsport), ssl_context=ctx, timeout=60)
M.login(user, pw)
for name in [other, 'user/' + other, 'Other Users/' + other, '../' + other, '#shared/' + other, other.split('@')[0], 'INBOX/../' + other]:
    try:
        typ, data = M.select('"%s"' % name, readonly=True)
    except imaplib.IMAP4.error as e:
        typ = 'BAD: %s' % e
    res['selects'][name] = typ
    try:
        typ, data = M.status('"%s"' % name, '(MESSAGES)')
    except imaplib.IMAP4.error as e:
        typ = 'BAD: %s' % e
    res['status'][name] = typ
typ, data = M.select('INBOX')
assert typ == 'OK', (typ, data)
res['exists'] = int(data[0])
typ, data = M.uid('FETCH', '1:*', '(BODY.PEEK[])')
assert typ == 'OK', (typ, data)
i = 0
for d in data:
    if isinstance(d, tuple):
        i += 1
        path = '%s/own-%d.eml' % (out, i)
        with open(path, 'wb') as f:
            f.write(d[1])
        res['all'].append(path)
typ, data = M.uid('FETCH', guess, '(BODY.PEEK[])')
res['guess'] = ['%d bytes' % len(d[1]) for d in data if isinstance(d, tuple)]
try:
    typ, data = M.fetch('%d' % (res['exists'] + 1), '(BODY.PEEK[])')
    res['guess_seq'] = '' if typ != 'OK' or not any(isinstance(d, tuple) for d in data) else repr(data)[:200]
except imaplib.IMAP4.error as e:
    res['guess_seq'] = ''  # BAD: no such message number
typ, data = M.uid('SEARCH', None, 'SUBJECT', '"a large attachment"')
res['search_alice'] = len(data[0].split()) if typ == 'OK' else 0
M.logout()
M = imaplib.IMAP4_SSL(host, int(tlsport), ssl_context=ctx, timeout=60)
try:
    typ, _ = M.login(other, pw)
    res['wrong_password'] = typ
except imaplib.IMAP4.error as e:
    res['wrong_password'] = 'NO: %s' % e
print(json.dumps(res))
`

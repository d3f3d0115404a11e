package milter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
)

// fakeOutage is a scripted OutageChecker: the servers in down are in outage.
// It stands in for health.Monitor to inject outages (fault injection); the
// health package tests the real detection.
type fakeOutage struct {
	mu      sync.Mutex
	down    map[string]bool
	panics  bool // InOutage panics
	queried []string
}

func newFakeOutage(down ...string) *fakeOutage {
	f := &fakeOutage{down: make(map[string]bool)}
	for _, s := range down {
		f.down[s] = true
	}
	return f
}

func (f *fakeOutage) InOutage(server string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panics {
		panic("outage checker exploded")
	}
	f.queried = append(f.queried, server)
	return f.down[server]
}

func (f *fakeOutage) set(server string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[server] = down
}

func (f *fakeOutage) queries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queried)
}

// twoServers maps a.example to mailbox server "mbx1", b.example to "mbx2";
// every other domain is foreign (no server).
type twoServers struct{}

func (twoServers) Resolve(rcpt, _, _ string) ([]string, string) {
	local, domain, _ := strings.Cut(strings.ToLower(rcpt), "@")
	switch domain {
	case "a.example":
		return []string{local}, "mbx1"
	case "b.example":
		return []string{local}, "mbx2"
	}
	return nil, ""
}

// sendMods runs one whole transaction and returns the modifications the
// milter sent at end-of-message and its final answer.
func (m *mta) sendMods(env envelope, raw []byte) ([]gomilter.ModifyAction, *gomilter.Action) {
	m.t.Helper()
	m.begin(env)
	m.content(raw)
	mods, act, err := m.sess.End()
	if err != nil {
		m.t.Fatalf("end of message: %v", err)
	}
	return mods, act
}

// rcptStates returns "address=state" for each stored recipient of the only
// message in j.
func rcptStates(t *testing.T, j journal.Journal) []string {
	t.Helper()
	msgs := storedMessages(t, j)
	if len(msgs) != 1 {
		t.Fatalf("journal holds %d messages, want 1", len(msgs))
	}
	var out []string
	for _, r := range msgs[0].entry.Envelope.Recipients {
		out = append(out, r.Address+"="+r.State.String())
	}
	return out
}

func delRcpts(mods []gomilter.ModifyAction) []string {
	var out []string
	for _, m := range mods {
		if m.Type == gomilter.ActionDelRcpt {
			out = append(out, m.Rcpt)
		} else {
			out = append(out, "unexpected "+m.String())
		}
	}
	return out
}

func TestCustodyAllRecipientsDiscards(t *testing.T) {
	j := newTestJournal(t)
	out := newFakeOutage("mbx1")
	ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: out, Clock: fixedClock})
	m := dial(t, ts.addr)
	if !m.sess.ActionOption(gomilter.OptRemoveRcpt) {
		t.Fatal("SMFIF_DELRCPT was not negotiated")
	}
	env := envelope{from: "s@sender.example", queueID: "Q1", rcpts: []rcpt{
		{"alice@a.example", "lmtp", "mbx1"}, {"Bob@A.example", "lmtp", "mbx1"},
	}}
	mods, act := m.sendMods(env, []byte(simpleMessage("all", "body\r\n")))
	if act.Type != gomilter.ActionDiscard || len(mods) != 0 {
		t.Fatalf("answer %v with modifications %v; want discard and none", act, mods)
	}
	if got, want := rcptStates(t, j), []string{"alice@a.example=custody", "Bob@A.example=custody"}; !slices.Equal(got, want) {
		t.Errorf("stored states %q, want %q", got, want)
	}
	// The custody queue hands both to replay, with their server.
	var items []string
	err := j.Custody(context.Background(), 0, func(it journal.CustodyItem) error {
		items = append(items, fmt.Sprintf("%d/%s/%s", it.Rcpt, it.State, it.Server))
		return nil
	})
	if err != nil {
		t.Fatalf("Custody: %v", err)
	}
	if want := []string{"0/custody/mbx1", "1/custody/mbx1"}; !slices.Equal(items, want) {
		t.Errorf("custody queue %q, want %q", items, want)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "custody"); got != 1 {
		t.Errorf("custody = %v, want 1", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journaled"); got != 0 {
		t.Errorf("journaled = %v, want 0 (counted as custody)", got)
	}
	if got := ts.metric("lifeline_milter_custody_recipients_total"); got != 2 {
		t.Errorf("custody recipients = %v, want 2", got)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "message taken into custody") || !strings.Contains(logs, "queue_id=Q1") || !strings.Contains(logs, "answer=discard") {
		t.Errorf("no custody log line with queue id and answer")
	}
}

func TestCustodyPartialDeletesRecipients(t *testing.T) {
	j := newTestJournal(t)
	out := newFakeOutage("mbx2")
	ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: out})
	m := dial(t, ts.addr)
	env := envelope{from: "s@sender.example", queueID: "Q2", rcpts: []rcpt{
		{"alice@a.example", "lmtp", "mbx1"},
		{"Carol@B.example", "lmtp", "mbx2"}, // deleted in the case the MTA gave it
		{"dave@foreign.example", "smtp", "mx.foreign.example"},
	}}
	mods, act := m.sendMods(env, []byte(simpleMessage("mixed", "body\r\n")))
	if act.Type != gomilter.ActionAccept {
		t.Fatalf("answer %v, want accept", act)
	}
	if got, want := delRcpts(mods), []string{"<Carol@B.example>"}; !slices.Equal(got, want) {
		t.Errorf("modifications %q, want %q", got, want)
	}
	if got, want := rcptStates(t, j), []string{"alice@a.example=mta", "Carol@B.example=custody", "dave@foreign.example=mta"}; !slices.Equal(got, want) {
		t.Errorf("stored states %q, want %q", got, want)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "partial_custody"); got != 1 {
		t.Errorf("partial_custody = %v, want 1", got)
	}
	if got := ts.metric("lifeline_milter_custody_recipients_total"); got != 1 {
		t.Errorf("custody recipients = %v, want 1", got)
	}
	// The foreign recipient (no server) is never asked about.
	if got := out.queries(); !slices.Equal(got, []string{"mbx1", "mbx2"}) {
		t.Errorf("InOutage asked about %q, want [mbx1 mbx2]", got)
	}
}

func TestCustodyJournalFailureTempFails(t *testing.T) {
	fj := &faultJournal{Journal: newTestJournal(t), err: errors.New("disk full")}
	out := newFakeOutage("mbx1")
	// OnJournalError=Accept applies in normal mode only.
	ts := startServer(t, Options{Journal: fj, Resolver: twoServers{}, Outage: out, OnJournalError: Accept})
	m := dial(t, ts.addr)
	mixed := envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}}}
	mods, act := m.sendMods(mixed, []byte(simpleMessage("fail1", "x\r\n")))
	if act.Type != gomilter.ActionTempFail || len(mods) != 0 {
		t.Fatalf("answer %v with modifications %v; want tempfail and none", act, mods)
	}
	// A message with no recipient in outage keeps the configured answer.
	mods, act = m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"carol@b.example", "", ""}}}, []byte(simpleMessage("fail2", "x\r\n")))
	if act.Type != gomilter.ActionAccept || len(mods) != 0 {
		t.Fatalf("normal-mode answer %v with modifications %v; want accept and none", act, mods)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "custody_tempfail"); got != 1 {
		t.Errorf("custody_tempfail = %v, want 1", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "journal_error_accepted"); got != 1 {
		t.Errorf("journal_error_accepted = %v, want 1", got)
	}
	if got := ts.metric("lifeline_journal_append_errors_total"); got != 2 {
		t.Errorf("append errors = %v, want 2", got)
	}
	if got := ts.metric("lifeline_milter_custody_recipients_total"); got != 0 {
		t.Errorf("custody recipients = %v, want 0", got)
	}
	if !strings.Contains(ts.logs.String(), "disk full") {
		t.Errorf("the journal error was not logged")
	}
	if n := len(storedMessages(t, fj)); n != 0 {
		t.Errorf("journal holds %d messages, want 0", n)
	}
}

func TestCustodyFailureBeforeAppendTempFails(t *testing.T) {
	j := newTestJournal(t)
	out := newFakeOutage("mbx1")
	// Every message is spooled to disk, in a directory that does not exist:
	// the message cannot be journaled.
	ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: out, SpoolThreshold: -1}, func(s *Server) {
		s.opts.SpoolDir = filepath.Join(t.TempDir(), "missing")
	})
	m := dial(t, ts.addr)
	mods, act := m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}}}, []byte(simpleMessage("nospool", "x\r\n")))
	if act.Type != gomilter.ActionTempFail || len(mods) != 0 {
		t.Fatalf("answer %v with modifications %v; want tempfail and none", act, mods)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "custody_tempfail"); got != 1 {
		t.Errorf("custody_tempfail = %v, want 1", got)
	}
}

func TestCustodyCheckerPanicTempFails(t *testing.T) {
	j := newTestJournal(t)
	out := newFakeOutage()
	out.panics = true
	ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: out})
	ts.wantPanics = 1
	m := dial(t, ts.addr)
	mods, act := m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}}}, []byte(simpleMessage("p", "x\r\n")))
	if act.Type != gomilter.ActionTempFail || len(mods) != 0 {
		t.Fatalf("answer %v with modifications %v; want tempfail and none", act, mods)
	}
	if n := len(storedMessages(t, j)); n != 0 {
		t.Errorf("journal holds %d messages, want 0", n)
	}
}

// TestCustodyDuplicateUsesStoredStates offers messages again (a retried
// milter connection, postsuper -r): the stored states decide, not the outage
// now, and nothing new is stored.
func TestCustodyDuplicateUsesStoredStates(t *testing.T) {
	j := newTestJournal(t)
	fj := &faultJournal{Journal: j}
	out := newFakeOutage("mbx2")
	ts := startServer(t, Options{Journal: fj, Resolver: twoServers{}, Outage: out})

	mixed := []byte(simpleMessage("dup-mixed", "x\r\n"))
	first := envelope{from: "s@sender.example", queueID: "Q1", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}}}
	mods, act := dial(t, ts.addr).sendMods(first, mixed)
	if act.Type != gomilter.ActionAccept || !slices.Equal(delRcpts(mods), []string{"<carol@b.example>"}) {
		t.Fatalf("first offer: %v %q; want accept, DELRCPT carol", act, delRcpts(mods))
	}
	allCustody := []byte(simpleMessage("dup-all", "x\r\n"))
	allEnv := envelope{from: "s@sender.example", queueID: "Q2", rcpts: []rcpt{{"carol@b.example", "", ""}}}
	if _, act := dial(t, ts.addr).sendMods(allEnv, allCustody); act.Type != gomilter.ActionDiscard {
		t.Fatalf("first offer of the all-custody message: %v, want discard", act)
	}
	// Replay delivered carol of the second message meanwhile.
	var allID journal.ID
	for _, s := range storedMessages(t, j) {
		if s.entry.Envelope.QueueID == "Q2" {
			allID = s.entry.ID
		}
	}
	if err := j.SetState(context.Background(), allID, 0, journal.StateDelivered, "250 2.0.0 ok"); err != nil {
		t.Fatalf("SetState: %v", err)
	}

	// The outage is over; both are offered again on a new connection, the
	// first in another RCPT order and letter case, with a new queue id.
	out.set("mbx2", false)
	m := dial(t, ts.addr)
	again := envelope{from: "S@Sender.example", queueID: "Q3", rcpts: []rcpt{{"CAROL@b.example", "", ""}, {"alice@a.example", "", ""}}}
	mods, act = m.sendMods(again, mixed)
	if act.Type != gomilter.ActionAccept {
		t.Fatalf("second offer: %v, want accept", act)
	}
	// Deleted as this MTA gave it: Postfix compares the address byte for byte.
	if got := delRcpts(mods); !slices.Equal(got, []string{"<CAROL@b.example>"}) {
		t.Errorf("second offer modifications %q, want [<CAROL@b.example>]", got)
	}
	mods, act = m.sendMods(allEnv, allCustody)
	if act.Type != gomilter.ActionDiscard || len(mods) != 0 {
		t.Errorf("second offer of the all-custody message: %v %v, want discard", act, mods)
	}

	// Nothing new was stored; the states are those of the first offer.
	msgs := storedMessages(t, j)
	if len(msgs) != 2 {
		t.Fatalf("journal holds %d messages, want 2", len(msgs))
	}
	var states []string
	for _, s := range msgs {
		for _, r := range s.entry.Envelope.Recipients {
			states = append(states, s.entry.Envelope.QueueID+":"+r.Address+"="+r.State.String())
		}
	}
	want := []string{"Q1:alice@a.example=mta", "Q1:carol@b.example=custody", "Q2:carol@b.example=delivered"}
	if !slices.Equal(states, want) {
		t.Errorf("stored %q, want %q", states, want)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "partial_custody"); got != 2 {
		t.Errorf("partial_custody = %v, want 2", got)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "custody"); got != 2 {
		t.Errorf("custody = %v, want 2", got)
	}
	if got := ts.metric("lifeline_milter_custody_recipients_total"); got != 4 {
		t.Errorf("custody recipients = %v, want 4", got)
	}

	// A message the MTA owned (stored as mta) stays with the MTA when it is
	// offered again during an outage of its server.
	normal := []byte(simpleMessage("dup-normal", "x\r\n"))
	normalEnv := envelope{from: "s@sender.example", rcpts: []rcpt{{"carol@b.example", "", ""}}}
	if mods, act := m.sendMods(normalEnv, normal); act.Type != gomilter.ActionAccept || len(mods) != 0 {
		t.Fatalf("normal mode: %v %v, want accept and no modification", act, mods)
	}
	out.set("mbx2", true)
	if mods, act := m.sendMods(normalEnv, normal); act.Type != gomilter.ActionAccept || len(mods) != 0 {
		t.Errorf("re-offer during outage of an mta message: %v %v, want accept and no modification", act, mods)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "duplicate"); got != 1 {
		t.Errorf("duplicate = %v, want 1", got)
	}

	// If the stored copy cannot be read, the milter cannot know who owns the
	// recipients: TEMPFAIL, the client retries.
	fj.getErr = errors.New("read error")
	if mods, act := m.sendMods(again, mixed); act.Type != gomilter.ActionTempFail || len(mods) != 0 {
		t.Errorf("duplicate with a failing Get: %v %v, want tempfail", act, mods)
	}
	if got := ts.metric("lifeline_milter_messages_total", "result", "custody_tempfail"); got != 1 {
		t.Errorf("custody_tempfail = %v, want 1", got)
	}
}

func TestNoOutageIsUnchanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage OutageChecker
	}{{"no checker", nil}, {"nothing in outage", newFakeOutage()}} {
		t.Run(tc.name, func(t *testing.T) {
			j := newTestJournal(t)
			ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: tc.outage})
			m := dial(t, ts.addr)
			env := envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}, {"x@foreign.example", "", ""}}}
			raw := []byte(simpleMessage("normal", "x\r\n"))
			for i, result := range []string{"journaled", "duplicate"} {
				mods, act := m.sendMods(env, raw)
				if act.Type != gomilter.ActionAccept || len(mods) != 0 {
					t.Fatalf("offer %d: %v with modifications %v; want accept and none", i+1, act, mods)
				}
				if got := ts.metric("lifeline_milter_messages_total", "result", result); got != 1 {
					t.Errorf("%s = %v, want 1", result, got)
				}
			}
			if got, want := rcptStates(t, j), []string{"alice@a.example=mta", "carol@b.example=mta", "x@foreign.example=mta"}; !slices.Equal(got, want) {
				t.Errorf("stored states %q, want %q", got, want)
			}
			if got := ts.metric("lifeline_milter_custody_recipients_total"); got != 0 {
				t.Errorf("custody recipients = %v, want 0", got)
			}
		})
	}
}

// TestCustodyWithoutDelRcpt: an MTA that does not offer SMFIF_DELRCPT. A
// message with every recipient in outage is still discarded (no action
// needed); in a mixed one the recipients stay with the MTA, journaled as mta.
func TestCustodyWithoutDelRcpt(t *testing.T) {
	j := newTestJournal(t)
	ts := startServer(t, Options{Journal: j, Resolver: twoServers{}, Outage: newFakeOutage("mbx2")})
	m := dial(t, ts.addr, gomilter.WithoutAction(gomilter.OptRemoveRcpt))
	if m.sess.ActionOption(gomilter.OptRemoveRcpt) {
		t.Fatal("SMFIF_DELRCPT negotiated although the MTA does not offer it")
	}
	mods, act := m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}}}, []byte(simpleMessage("nodel", "x\r\n")))
	if act.Type != gomilter.ActionAccept || len(mods) != 0 {
		t.Fatalf("mixed: %v %v, want accept and no modification", act, mods)
	}
	if got, want := rcptStates(t, j), []string{"alice@a.example=mta", "carol@b.example=mta"}; !slices.Equal(got, want) {
		t.Errorf("stored states %q, want %q", got, want)
	}
	if _, act := m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"carol@b.example", "", ""}}}, []byte(simpleMessage("nodel2", "x\r\n"))); act.Type != gomilter.ActionDiscard {
		t.Errorf("all in outage: %v, want discard", act)
	}
	if !strings.Contains(ts.logs.String(), "did not negotiate SMFIF_DELRCPT") {
		t.Errorf("the fallback was not logged")
	}
}

// TestCustodyProgressDuringSlowAppend: custody waits for the durable append
// like normal mode, with progress, and answers only afterwards.
func TestCustodyProgressDuringSlowAppend(t *testing.T) {
	j := newTestJournal(t)
	fj := &faultJournal{Journal: j, delay: 500 * time.Millisecond}
	ts := startServer(t, Options{Journal: fj, Resolver: twoServers{}, Outage: newFakeOutage("mbx1"), ProgressInterval: 50 * time.Millisecond})
	m := dial(t, ts.addr, gomilter.WithReadTimeout(300*time.Millisecond))
	mods, act := m.sendMods(envelope{from: "s@sender.example", rcpts: []rcpt{{"alice@a.example", "", ""}, {"carol@b.example", "", ""}}}, []byte(simpleMessage("slow", "x\r\n")))
	if act.Type != gomilter.ActionAccept || !slices.Equal(delRcpts(mods), []string{"<alice@a.example>"}) {
		t.Fatalf("%v %q; want accept, DELRCPT alice", act, delRcpts(mods))
	}
	if got, want := rcptStates(t, j), []string{"alice@a.example=custody", "carol@b.example=mta"}; !slices.Equal(got, want) {
		t.Errorf("stored states %q, want %q", got, want)
	}
}

func TestASCIILower(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "abc", "ABC@X.Example": "abc@x.example", "Ünï@B": "Ünï@b"} {
		if got := asciiLower(in); got != want {
			t.Errorf("asciiLower(%q) = %q, want %q", in, got, want)
		}
	}
}

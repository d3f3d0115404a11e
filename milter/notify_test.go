package milter

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
)

// notifyingOutage is a fakeOutage that also implements CustodyNotifier.
type notifyingOutage struct {
	*fakeOutage
	mu    sync.Mutex
	taken []string
}

func (n *notifyingOutage) CustodyTaken(server string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.taken = append(n.taken, server)
}

func (n *notifyingOutage) told() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.taken)
}

// The Outage checker is told each server whose recipients were newly taken
// into custody, once per message and only after the append is durable
// (replay wakes on it when the outage ended during a slow append); a
// duplicate, whose custody was taken the first time, tells nothing.
func TestCustodyTakenNotified(t *testing.T) {
	j := newTestJournal(t)
	fj := &faultJournal{Journal: j, delay: 100 * time.Millisecond}
	out := &notifyingOutage{fakeOutage: newFakeOutage("mbx1", "mbx2")}
	fj.hook = func(context.Context, journal.Envelope, io.Reader) {
		if got := out.told(); fj.calls.Load() == 1 && len(got) != 0 {
			t.Errorf("told %q before the append returned", got)
		}
	}
	ts := startServer(t, Options{Journal: fj, Resolver: twoServers{}, Outage: out})
	env := envelope{from: "s@sender.example", queueID: "Q1", rcpts: []rcpt{
		{"alice@a.example", "", ""}, {"carol@b.example", "", ""}, {"dave@b.example", "", ""}, {"x@foreign.example", "", ""},
	}}
	raw := []byte(simpleMessage("told", "x\r\n"))
	mods, act := dial(t, ts.addr).sendMods(env, raw)
	if act.Type != gomilter.ActionAccept || len(delRcpts(mods)) != 3 {
		t.Fatalf("%v %q; want accept, three DELRCPT", act, delRcpts(mods))
	}
	if got := out.told(); !slices.Equal(got, []string{"mbx1", "mbx2"}) {
		t.Errorf("told %q, want [mbx1 mbx2]", got)
	}
	if _, act := dial(t, ts.addr).sendMods(env, raw); act.Type != gomilter.ActionAccept {
		t.Fatalf("duplicate: %v", act)
	}
	if got := out.told(); len(got) != 2 {
		t.Errorf("told %q after the duplicate, want [mbx1 mbx2] only", got)
	}
}

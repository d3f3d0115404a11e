package serving

import (
	"sync"
	"testing"

	"github.com/lifelinemail/lifeline/addrmap"
)

// outages is the outage state by server; the health monitor in production.
type outages struct {
	mu sync.Mutex
	m  map[string]bool
}

func (o *outages) InOutage(s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[s]
}

func (o *outages) set(s string, v bool) {
	o.mu.Lock()
	o.m[s] = v
	o.mu.Unlock()
}

func TestOutageMode(t *testing.T) {
	m := addrmap.New(addrmap.Options{Servers: []addrmap.Server{
		{Name: "dovecot", Domains: []string{"example.com"}},
		{Name: "exchange", Domains: []string{"other.org"}},
	}})
	o := &outages{m: map[string]bool{}}
	c, err := New("outage", m, o)
	if err != nil {
		t.Fatal(err)
	}
	check := func(mailbox string, want bool, wantText string) {
		t.Helper()
		ok, text := c.Serves(mailbox)
		if ok != want || text != wantText {
			t.Errorf("Serves(%q) = %v, %q; want %v, %q", mailbox, ok, text, want, wantText)
		}
	}
	check("alice@example.com", false, TextServerUp)
	o.set("dovecot", true)
	check("alice@example.com", true, "")
	check("Alice@Example.COM", true, "")
	check("bob@other.org", false, TextServerUp) // another server's outage does not count
	check("carol@elsewhere.net", false, TextNoServer)
	check("alice", false, TextNoServer) // a bare user name has no server
	o.set("dovecot", false)
	check("alice@example.com", false, TextServerUp)
}

func TestAlwaysMode(t *testing.T) {
	c, err := New("always", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range []string{"alice@example.com", "alice", "x@elsewhere.net"} {
		if ok, text := c.Serves(mb); !ok || text != "" {
			t.Errorf("Serves(%q) = %v, %q", mb, ok, text)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("sometimes", nil, nil); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := New("outage", nil, nil); err == nil {
		t.Error("outage mode without its state accepted")
	}
}

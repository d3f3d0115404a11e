package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePolicy answers Exim's "state <address>" line like Lifeline's policy
// listener, from a fixed table, and records the questions. Fault injection
// only: the real listener is exercised by TestEximLifeline.
type fakePolicy struct {
	ln      net.Listener
	answers map[string]string // address → answer; missing: "unknown"
	silent  bool              // accept and never answer

	mu    sync.Mutex
	asked []string
}

func startFakePolicy(t *testing.T, answers map[string]string, silent bool) *fakePolicy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePolicy{ln: ln, answers: answers, silent: silent}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				what := strings.TrimSpace(strings.TrimPrefix(line, "state "))
				p.mu.Lock()
				p.asked = append(p.asked, what)
				p.mu.Unlock()
				if p.silent {
					select {
					case <-done:
					case <-time.After(10 * time.Second):
					}
					return
				}
				a, ok := p.answers[what]
				if !ok {
					a = "unknown"
				}
				fmt.Fprintf(c, "%s\n", a)
			}()
		}
	}()
	return p
}

func (p *fakePolicy) Addr() string { return p.ln.Addr().String() }

func (p *fakePolicy) Asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]string(nil), p.asked...)
	sort.Strings(out)
	return out
}

var btRouter = regexp.MustCompile(`(?m)^\s*router = (\S+), transport = (\S+)$`)

// routeOf runs `exim4 -C conf -bt addr` and returns "router/transport" of
// each delivery Exim would make, sorted.
func routeOf(t *testing.T, conf, addr string) []string {
	t.Helper()
	out, err := EximExec(t, "-C", conf, "-bt", addr)
	if err != nil {
		t.Fatalf("exim -bt %s: %v\n%s", addr, err, out)
	}
	var got []string
	for _, m := range btRouter.FindAllStringSubmatch(string(out), -1) {
		got = append(got, m[1]+"/"+m[2])
	}
	sort.Strings(got)
	return got
}

// eximConfigs are contrib/exim's two layouts with the policy socket at
// addr: the single file (included from a file that defines the macros) and
// Debian's conf.d with the snippets added, as update-exim4.conf builds it.
func eximConfigs(t *testing.T, policyAddr, timeout string) map[string]string {
	t.Helper()
	macros := fmt.Sprintf("LIFELINE_DOMAINS = %s\nLIFELINE_POLICY_SOCKET = inet:%s\nLIFELINE_POLICY_TIMEOUT = %s\n",
		DefaultDomain, policyAddr, timeout)
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(t.TempDir(), "exim.conf")
	if err := os.WriteFile(single, []byte(macros+".include "+filepath.Join(root, "contrib", "exim", "lifeline.conf")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"single": single,
		"split":  DebianSplitConfig(t, []string{DefaultDomain}, macros),
	}
}

// TestEximRouting checks the routing decisions of both contrib/exim layouts
// with Exim's address test mode (-bt, -bv): one policy question per
// recipient; "up" and "unknown" go to Dovecot plus the journal copy,
// "outage" only to custody; an unreachable or silent Lifeline counts as up
// (mail still flows); RCPT-time verification asks nothing.
func TestEximRouting(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped under -short")
	}
	RequireExim(t)
	alice, bob, carol := "alice@"+DefaultDomain, "bob@"+DefaultDomain, "carol@"+DefaultDomain
	normal := []string{"dovecot_primary/dovecot_lmtp", "lifeline_copy/lifeline_journal"}
	custody := []string{"lifeline_custody/lifeline_custody"}

	p := startFakePolicy(t, map[string]string{alice: "up", bob: "outage"}, false)
	for layout, conf := range eximConfigs(t, p.Addr(), "3s") {
		t.Run(layout, func(t *testing.T) {
			if out, err := EximExec(t, "-C", conf, "-bV"); err != nil {
				t.Fatalf("exim -bV: %v\n%s", err, out)
			}
			before := len(p.Asked())
			for _, c := range []struct {
				addr string
				want []string
			}{{alice, normal}, {bob, custody}, {carol, normal}} {
				if got := routeOf(t, conf, c.addr); strings.Join(got, " ") != strings.Join(c.want, " ") {
					t.Errorf("%s: routed to %v, want %v", c.addr, got, c.want)
				}
			}
			if asked := p.Asked(); len(asked)-before != 3 {
				t.Errorf("policy asked %d times for 3 addresses (one question per recipient): %v", len(asked)-before, asked)
			}
			// Verification (the RCPT ACL's verify = recipient) routes in
			// verify mode: no question, and bob is verified even in outage.
			before = len(p.Asked())
			if out, err := EximExec(t, "-C", conf, "-bv", bob); err != nil || !strings.Contains(string(out), "verified") {
				t.Errorf("exim -bv %s: %v\n%s", bob, err, out)
			}
			if n := len(p.Asked()) - before; n != 0 {
				t.Errorf("verification asked the policy %d times, want 0", n)
			}
		})
	}

	// Lifeline unreachable: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for layout, conf := range eximConfigs(t, closed, "3s") {
		if got := routeOf(t, conf, bob); strings.Join(got, " ") != strings.Join(normal, " ") {
			t.Errorf("%s, lifeline unreachable: %s routed to %v, want %v", layout, bob, got, normal)
		}
	}

	// Lifeline accepts but never answers: the timeout, then "up".
	silent := startFakePolicy(t, nil, true)
	for layout, conf := range eximConfigs(t, silent.Addr(), "1s") {
		start := time.Now()
		got := routeOf(t, conf, bob)
		took := time.Since(start)
		if strings.Join(got, " ") != strings.Join(normal, " ") {
			t.Errorf("%s, lifeline silent: %s routed to %v, want %v", layout, bob, got, normal)
		}
		if took < time.Second || took > 10*time.Second {
			t.Errorf("%s, lifeline silent: routing took %v, want the 1s timeout", layout, took)
		}
		t.Logf("%s, lifeline silent: routing took %v", layout, took.Round(time.Millisecond))
	}
}

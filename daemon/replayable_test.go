package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/emersion/go-smtp"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
)

// runDaemon runs the daemon on cfg until the test ends and returns the admin
// client (token "t0ken").
func runDaemon(t *testing.T, cfg *config.Config, httpAddr string) *admin.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", Ready: ready})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return admin.NewClient(httpAddr, "t0ken")
}

// serverStatus polls the status of server name until cond holds.
func serverStatus(t *testing.T, api *admin.Client, name, what string, cond func(admin.ServerStatus) bool) admin.ServerStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last admin.Status
	for {
		st, err := api.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		last = st
		for _, s := range st.Servers {
			if s.Name == name && cond(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: last status %+v", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A [[server]] without lmtp in replay mode lmtp: replay has nowhere to
// deliver its custody, so the milter must leave its recipients to the MTA
// during its outage (ACCEPT, no DELRCPT), while a server with lmtp in outage
// at the same time still has its recipients taken.
func TestNoCustodyWithoutReplayTarget(t *testing.T) {
	dir := t.TempDir()
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg := adminConfig(t, dir, milterAddr, httpAddr, fmt.Sprintf(`
[[server]]
name = "dc"
domains = ["dc.test"]
lmtp = "tcp:%s"
[[server]]
name = "ex"
domains = ["ex.test"]
`, freePort(t)))
	api := runDaemon(t, cfg, httpAddr)
	ctx := context.Background()
	for _, s := range []string{"dc", "ex"} {
		if _, err := api.StartOutage(ctx, s, "test"); err != nil {
			t.Fatalf("start outage %s: %v", s, err)
		}
	}
	act, mods := sendMilter(t, milterAddr, "ex1", "u@ex.test")
	if act.Type != gomilter.ActionAccept || len(mods) != 0 {
		t.Errorf("server without lmtp in outage: %v %+v, want ACCEPT and no change (the MTA keeps it)", act, mods)
	}
	act, mods = sendMilter(t, milterAddr, "mix1", "u@ex.test", "v@dc.test")
	if act.Type != gomilter.ActionAccept || len(mods) != 1 || mods[0].Type != gomilter.ActionDelRcpt || mods[0].Rcpt != "<v@dc.test>" {
		t.Errorf("mixed: %v %+v, want ACCEPT with DELRCPT of v@dc.test only", act, mods)
	}
	serverStatus(t, api, "dc", "dc backlog 1", func(s admin.ServerStatus) bool { return s.Backlog == 1 })
	if s := serverStatus(t, api, "ex", "ex status", func(admin.ServerStatus) bool { return true }); s.Backlog != 0 {
		t.Errorf("ex backlog %d, want 0", s.Backlog)
	}
}

// In replay mode smtp every [[server]] can be replayed (re-injection into
// the MTA needs no lmtp): custody of a server without lmtp is taken, counted
// in its backlog, and re-injected once its outage ends.
func TestSMTPReplayServerWithoutLMTP(t *testing.T) {
	mta := newCaptureMTA(t)
	dir := t.TempDir()
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg := adminConfig(t, dir, milterAddr, httpAddr, fmt.Sprintf(`
[[server]]
name = "ex"
domains = ["ex.test"]
[replay]
mode = "smtp"
reinject = "tcp:%s"
retry_min = "1s"
retry_max = "2s"
`, mta.addr))
	api := runDaemon(t, cfg, httpAddr)
	ctx := context.Background()
	if _, err := api.StartOutage(ctx, "ex", "test"); err != nil {
		t.Fatal(err)
	}
	if act, mods := sendMilter(t, milterAddr, "s1", "u@ex.test"); act.Type != gomilter.ActionDiscard {
		t.Fatalf("custody in smtp mode: %v %+v, want DISCARD", act, mods)
	}
	serverStatus(t, api, "ex", "backlog 1 during the outage", func(s admin.ServerStatus) bool { return s.Outage && s.Backlog == 1 })
	if _, err := api.EndOutage(ctx, "ex"); err != nil {
		t.Fatal(err)
	}
	serverStatus(t, api, "ex", "replay drained", func(s admin.ServerStatus) bool {
		return !s.Outage && s.Backlog == 0 && s.Replay.Delivered == 1
	})
	if got := mta.rcpts(); len(got) != 1 || got[0] != "u@ex.test" {
		t.Errorf("re-injected to %v, want [u@ex.test] once", got)
	}
}

// captureMTA is the MTA's milter-free SMTP port for replay mode smtp: a
// go-smtp server that accepts everything and records the recipients.
type captureMTA struct {
	addr string
	mu   sync.Mutex
	to   []string
}

func newCaptureMTA(t *testing.T) *captureMTA {
	t.Helper()
	c := &captureMTA{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &captureSess{c: c}, nil }))
	srv.Domain = "mta.test"
	srv.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("capture MTA shutdown: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("capture MTA: %v", err)
		}
	})
	return c
}

func (c *captureMTA) rcpts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.to...)
}

type captureSess struct {
	c  *captureMTA
	to []string
}

func (s *captureSess) Reset()                                    { s.to = nil }
func (s *captureSess) Logout() error                             { return nil }
func (s *captureSess) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *captureSess) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *captureSess) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.c.mu.Lock()
	s.c.to = append(s.c.to, s.to...)
	s.c.mu.Unlock()
	return nil
}

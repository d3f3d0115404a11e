package webmail

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/admin"
)

// fakeControl stands in for the daemon's outage object (admin.Control),
// whose own tests are in package daemon.
type fakeControl struct {
	mu     sync.Mutex
	status admin.Status
	calls  []string
}

func newFakeControl() *fakeControl {
	return &fakeControl{status: admin.Status{Servers: []admin.ServerStatus{
		{Name: "mx", Up: true, LastProbe: time.Now()},
		{Name: "other", Up: true},
	}}}
}

func (c *fakeControl) Status(context.Context) (admin.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Servers = append([]admin.ServerStatus(nil), st.Servers...)
	return st, nil
}

func (c *fakeControl) set(name string, f func(*admin.ServerStatus)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.status.Servers {
		if c.status.Servers[i].Name == name {
			f(&c.status.Servers[i])
		}
	}
}

func (c *fakeControl) StartOutage(_ context.Context, server, reason, by string) error {
	c.mu.Lock()
	c.calls = append(c.calls, "start "+server+" "+reason+" "+by)
	c.mu.Unlock()
	if server == "nope" {
		return errors.New("no such server")
	}
	c.set(server, func(s *admin.ServerStatus) {
		s.Outage, s.Since, s.Cause, s.Reason = true, time.Now(), "operator", reason
	})
	return nil
}

func (c *fakeControl) EndOutage(_ context.Context, server, by string) error {
	c.mu.Lock()
	c.calls = append(c.calls, "end "+server+" "+by)
	c.mu.Unlock()
	c.set(server, func(s *admin.ServerStatus) { s.Outage = false; s.Backlog = 3; s.Replay.Running = true })
	return nil
}

func (c *fakeControl) AddWindow(context.Context, admin.Window) (admin.Window, error) {
	return admin.Window{}, errors.New("not used")
}
func (c *fakeControl) RemoveWindow(context.Context, string) error { return errors.New("not used") }
func (c *fakeControl) Transitions(_ context.Context, server string, _ int) ([]admin.Transition, error) {
	return []admin.Transition{{Server: server, Time: time.Now().Add(-time.Hour), Outage: true, Cause: "probe"},
		{Server: server, Time: time.Now(), Outage: false, Cause: "operator", By: "admin-history-marker"}}, nil
}
func (c *fakeControl) Restore(context.Context, admin.RestoreRequest, func(admin.RestoreProgress)) (admin.RestoreProgress, error) {
	return admin.RestoreProgress{}, errors.New("not used")
}

// fakeServers maps every mailbox to server "mx".
type fakeServers struct{}

func (fakeServers) ServerOf(string) (string, bool) { return "mx", true }

func TestAdminPageAndBanner(t *testing.T) {
	f, _, _, _ := stdFixture(t)
	ctl := newFakeControl()
	e := start(t, f, false, func(o *Options) { o.Control = ctl; o.Servers = fakeServers{} })
	user := e.client(t)
	utok := user.login("alice@example.com", "alice-pw")
	if r := user.get("/admin"); r.StatusCode != http.StatusNotFound {
		t.Errorf("admin page for a user: %d", r.StatusCode)
	}
	if r := user.post("/admin/outage", url.Values{"csrf": {utok}, "server": {"mx"}, "action": {"start"}}); r.StatusCode != http.StatusNotFound {
		t.Errorf("outage start by a user: %d", r.StatusCode)
	}
	if r := user.get("/mail/inbox"); strings.Contains(r.body, `class="banner`) || strings.Contains(r.body, `href="/admin"`) {
		t.Errorf("banner or admin link without an outage:\n%s", r.body)
	}
	adm := e.client(t)
	tok := adm.login("postmaster@example.com", "pm-pw")
	r := adm.get("/admin")
	if r.StatusCode != 200 || !strings.Contains(r.body, "<h2>mx</h2>") || !strings.Contains(r.body, "admin-history-marker") {
		t.Fatalf("admin page: %d\n%s", r.StatusCode, r.body)
	}
	r = adm.post("/admin/outage", url.Values{"csrf": {tok}, "server": {"mx"}, "action": {"start"}, "reason": {"dovecot upgrade"}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("start: %d\n%s", r.StatusCode, r.body)
	}
	if len(ctl.calls) != 1 || ctl.calls[0] != "start mx dovecot upgrade webmail:postmaster@example.com" {
		t.Errorf("calls %q", ctl.calls)
	}
	if r := user.get("/mail/inbox"); !strings.Contains(r.body, "unavailable since") || !strings.Contains(r.body, "continuity mailbox") {
		t.Errorf("no outage banner:\n%s", r.body)
	}
	if r := adm.post("/admin/outage", url.Values{"csrf": {tok}, "server": {"mx"}, "action": {"end"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("end: %d", r.StatusCode)
	}
	if r := user.get("/mail/inbox"); !strings.Contains(r.body, "being given back") {
		t.Errorf("no recovery note:\n%s", r.body)
	}
	if r := adm.post("/admin/outage", url.Values{"csrf": {tok}, "server": {"nope"}, "action": {"start"}}); r.StatusCode != http.StatusConflict || !strings.Contains(r.body, "no such server") {
		t.Errorf("failed start: %d\n%s", r.StatusCode, r.body)
	}
}

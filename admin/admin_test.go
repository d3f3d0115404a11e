package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// control records what the API asked for. The API layer is what is under test
// here; the daemon test and e2e drive the real health monitor behind it.
type control struct {
	outage map[string]string
}

func (c *control) Status(context.Context) (Status, error) {
	st := Status{Time: time.Now()}
	for _, name := range []string{"mx"} {
		_, on := c.outage[name]
		st.Servers = append(st.Servers, ServerStatus{Name: name, Outage: on, Reason: c.outage[name]})
	}
	return st, nil
}

func (c *control) StartOutage(_ context.Context, server, reason, _ string) error {
	if server != "mx" {
		return ErrUnknownServer
	}
	c.outage[server] = reason
	return nil
}

func (c *control) EndOutage(_ context.Context, server, _ string) error {
	if server != "mx" {
		return ErrUnknownServer
	}
	delete(c.outage, server)
	return nil
}

func (c *control) AddWindow(_ context.Context, w Window) (Window, error) { w.ID = "w1"; return w, nil }
func (c *control) RemoveWindow(context.Context, string) error            { return ErrNotFound }
func (c *control) Transitions(context.Context, string, int) ([]Transition, error) {
	return nil, nil
}

func (c *control) Restore(ctx context.Context, req RestoreRequest, progress func(RestoreProgress)) (RestoreProgress, error) {
	p := RestoreProgress{Total: 3}
	for range 3 {
		p.Done++
		p.Delivered++
		progress(p)
	}
	if req.Folder == "broken" {
		return p, errors.New("connection refused")
	}
	return p, nil
}

func newServer(t *testing.T) (*Client, *control) {
	t.Helper()
	c := &control{outage: map[string]string{}}
	h, err := NewHandler("s3cret", c, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return NewClient(strings.TrimPrefix(srv.URL, "http://"), "s3cret"), c
}

func TestAuth(t *testing.T) {
	if _, err := NewHandler("", &control{}, nil); err == nil {
		t.Error("NewHandler accepted an empty token")
	}
	cl, _ := newServer(t)
	for _, tok := range []string{"", "wrong", "s3cre", "s3cret2"} {
		bad := NewClient(strings.TrimPrefix(cl.base, "http://"), tok)
		_, err := bad.Status(t.Context())
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("token %q: %v, want 401", tok, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error reveals the token: %v", err)
		}
	}
	if _, err := cl.Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestOutageAndErrors(t *testing.T) {
	cl, c := newServer(t)
	ctx := t.Context()
	st, err := cl.StartOutage(ctx, "mx", "disk swap")
	if err != nil || !st.Servers[0].Outage || c.outage["mx"] != "disk swap" {
		t.Fatalf("start: %+v, %v", st, err)
	}
	if _, err := cl.StartOutage(ctx, "nope", "x"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown server: %v", err)
	}
	if _, err := cl.StartOutage(ctx, "mx", " "); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("no reason: %v", err)
	}
	if st, err := cl.EndOutage(ctx, "mx"); err != nil || st.Servers[0].Outage {
		t.Errorf("end: %+v, %v", st, err)
	}
	if err := cl.RemoveWindow(ctx, "zz"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("remove unknown window: %v", err)
	}
	w, err := cl.AddWindow(ctx, Window{Server: "mx", Start: time.Now(), End: time.Now().Add(time.Hour)})
	if err != nil || w.ID != "w1" || w.Source != "api" {
		t.Errorf("add window: %+v, %v", w, err)
	}
	if _, err := cl.AddWindow(ctx, Window{Server: "mx", Start: time.Now()}); err == nil {
		t.Error("window without end accepted")
	}
	// Unknown fields are refused rather than ignored: a typo must not pass.
	req, _ := http.NewRequest(http.MethodPost, cl.base+"/v1/outage/start", strings.NewReader(`{"server":"mx","reson":"x"}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field: %s", resp.Status)
	}
}

func TestRestoreStream(t *testing.T) {
	cl, _ := newServer(t)
	since := time.Now().Add(-time.Hour)
	final, err := cl.Restore(t.Context(), RestoreRequest{Mailbox: "a@x", Since: since}, nil)
	if err != nil || !final.Finished || final.Delivered != 3 {
		t.Errorf("restore: %+v, %v", final, err)
	}
	final, err = cl.Restore(t.Context(), RestoreRequest{Mailbox: "a@x", Since: since, Folder: "broken"}, nil)
	if err == nil || final.Done != 3 || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("failed restore: %+v, %v", final, err)
	}
	if _, err := cl.Restore(t.Context(), RestoreRequest{Mailbox: "a@x"}, nil); err == nil {
		t.Error("restore without since accepted")
	}
}

func TestEnsureToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "admin.token")
	tok, err := EnsureToken("", file)
	if err != nil || len(tok) != 64 {
		t.Fatalf("EnsureToken: %q, %v", tok, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	again, err := EnsureToken("", file)
	if err != nil || again != tok {
		t.Errorf("second EnsureToken: %q, %v", again, err)
	}
	if got, err := ReadToken("", file); err != nil || got != tok {
		t.Errorf("ReadToken: %q, %v", got, err)
	}
	if got, _ := ReadToken("inline", file); got != "inline" {
		t.Errorf("configured token not preferred: %q", got)
	}
	if _, err := ReadToken("", filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("ReadToken of a missing file succeeded")
	}
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// TestSIGHUPReload sends the built `lifeline serve` a real SIGHUP (what
// `systemctl reload` sends) after editing its config file and its
// passwd-file: the log level and the users change, an IMAP session logged in
// before goes on, the change of milter.on_journal_error is reported as
// needing a restart, and the process keeps serving.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs lifeline serve")
	}
	alice := qualify("alice", DefaultDomain)
	ll := StartLifeline(t, LifelineOptions{
		Servers: []LifelineServer{{Name: PrimaryServer, Domains: []string{DefaultDomain}}},
		Sidecar: &SidecarOptions{Serve: "always", Users: map[string]string{alice: "old-Secret-1"}},
	})
	old, err := IMAPLogin(ll.IMAPAddr, nil, alice, "old-Secret-1")
	if err != nil {
		t.Fatalf("login before the reload: %v", err)
	}
	defer old.Close()
	if _, err := old.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	cfg, err := os.ReadFile(ll.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(cfg, []byte(`level = "info"`), []byte(`level = "debug"`), 1)
	edited = bytes.Replace(edited, []byte(`on_journal_error = "accept"`), []byte(`on_journal_error = "tempfail"`), 1)
	if bytes.Equal(edited, cfg) || bytes.Count(edited, []byte("debug")) != 1 || !bytes.Contains(edited, []byte("tempfail")) {
		t.Fatalf("the generated config changed shape:\n%s", cfg)
	}
	if err := os.WriteFile(ll.ConfigPath, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePasswdFile(ll.PasswdFile, map[string]string{alice: "new-Secret-2"}); err != nil {
		t.Fatal(err)
	}
	logged := func(s string) (bool, error) {
		b, err := os.ReadFile(ll.LogPath)
		return bytes.Contains(b, []byte(s)), err
	}
	if ok, err := logged("level=DEBUG"); ok || err != nil {
		t.Fatalf("debug lines at level info (%v)", err)
	}
	if err := syscall.Kill(ll.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	err = Poll(context.Background(), 20*time.Second, func() (bool, error) { return logged("config reloaded") })
	if err != nil {
		t.Fatalf("no \"config reloaded\" log line after SIGHUP: %v\n%s", err, tail(ll.LogPath, 4096))
	}
	for _, want := range []string{"log level changed", "restart needed for: milter", "passwd-file reloaded"} {
		if ok, _ := logged(want); !ok {
			t.Errorf("the log lacks %q after SIGHUP", want)
		}
	}
	if err := old.Noop().Wait(); err != nil {
		t.Errorf("NOOP on the session from before SIGHUP: %v", err)
	}
	if _, err := IMAPLogin(ll.IMAPAddr, nil, alice, "old-Secret-1"); err == nil {
		t.Error("the old password works after SIGHUP")
	} else {
		var ierr *imap.Error
		if !errors.As(err, &ierr) {
			t.Errorf("login with the old password: %v (want a NO)", err)
		}
	}
	c, err := IMAPLogin(ll.IMAPAddr, nil, alice, "new-Secret-2")
	if err != nil {
		t.Fatalf("the new password fails after SIGHUP: %v", err)
	}
	if err := errors.Join(c.Logout().Wait(), old.Logout().Wait()); err != nil {
		t.Error(err)
	}
	// Debug lines now appear (the IMAP server logs its commands at debug).
	if b, err := os.ReadFile(ll.LogPath); err != nil || !strings.Contains(string(b), "level=DEBUG") {
		t.Errorf("no debug line after the level changed to debug (%v)", err)
	}
	if err := ll.Stop(); err != nil {
		t.Errorf("lifeline serve did not stop cleanly after SIGHUP: %v", err)
	}
}

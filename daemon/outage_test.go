package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/e2e"
)

// sendMilter offers one message to the milter as Postfix would and returns
// the final action and the modifications asked for.
func sendMilter(t *testing.T, addr, id string, rcpts ...string) (*gomilter.Action, []gomilter.ModifyAction) {
	t.Helper()
	bag := gomilter.NewMacroBag()
	sess, err := gomilter.NewClient("tcp", addr, gomilter.WithAction(gomilter.AllClientSupportedActionMasks)).Session(bag)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) {
			return sess.Conn("mx.example.net", gomilter.FamilyInet, 1234, "192.0.2.1")
		},
		func() (*gomilter.Action, error) { return sess.Helo("mx.example.net") },
		func() (*gomilter.Action, error) { return sess.Mail("s@example.org", "") },
	}
	for _, r := range rcpts {
		steps = append(steps, func() (*gomilter.Action, error) { return sess.Rcpt(r, "") })
	}
	steps = append(steps,
		func() (*gomilter.Action, error) { bag.Set(gomilter.MacroQueueId, "Q"+id); return sess.DataStart() },
		func() (*gomilter.Action, error) { return sess.HeaderField("Subject", " "+id, nil) },
		func() (*gomilter.Action, error) { return sess.HeaderField("Message-ID", " <"+id+"@example.org>", nil) },
		func() (*gomilter.Action, error) { return sess.HeaderEnd() },
		func() (*gomilter.Action, error) { return sess.BodyChunk([]byte("body " + id + "\r\n")) },
	)
	for i, step := range steps {
		act, err := step()
		if err != nil || act.Type != gomilter.ActionContinue {
			t.Fatalf("message %s step %d: %v %v", id, i, act, err)
		}
	}
	mods, act, err := sess.End()
	if err != nil {
		t.Fatalf("message %s end: %v", id, err)
	}
	return act, mods
}

// TestManualOutageCustodyReplayRestore drives the wired daemon through an
// operator outage against a real Dovecot: the admin API starts it, the milter
// takes custody (DISCARD, or DELRCPT beside a foreign recipient), status shows
// the backlog, ending the outage replays it over LMTP into Dovecot once, and
// restore brings the mail back again into a folder.
func TestManualOutageCustodyReplayRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dovecot")
	}
	d := e2e.StartDovecot(t, e2e.DovecotOptions{Users: []string{"alice", "bob"}})
	dir := t.TempDir()
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[journal]
path = %q
[milter]
listen = "tcp:%s"
[pop3]
enabled = false
[imap]
enabled = false
[http]
listen = %q
admin_token = "t0ken"
[[server]]
name = "dc"
domains = [%q]
lmtp = "tcp:%s"
interval = "200ms"
  [[server.probe]]
  type = "lmtp"
  canary = "bob@%s"
[replay]
retry_min = "1s"
retry_max = "2s"
`, filepath.Join(dir, "journal"), milterAddr, httpAddr, d.Domain, d.LMTPAddr, d.Domain)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	api := admin.NewClient(httpAddr, "t0ken")
	if _, err := admin.NewClient(httpAddr, "wrong").Status(ctx); err == nil {
		t.Fatal("admin API accepted a wrong token")
	}
	st, err := api.StartOutage(ctx, "dc", "disk replacement")
	if err != nil || !st.Servers[0].Outage || st.Servers[0].Cause != "operator" {
		t.Fatalf("start outage: %+v, %v", st, err)
	}
	alice := "alice@" + d.Domain
	act, mods := sendMilter(t, milterAddr, "m1", alice)
	if act.Type != gomilter.ActionDiscard {
		t.Errorf("all in custody: %v, want DISCARD", act)
	}
	act, mods = sendMilter(t, milterAddr, "m2", alice, "x@foreign.net")
	if act.Type != gomilter.ActionAccept || len(mods) != 1 || mods[0].Type != gomilter.ActionDelRcpt || mods[0].Rcpt != "<"+alice+">" {
		t.Errorf("mixed: %v %+v, want ACCEPT with DELRCPT of %s", act, mods, alice)
	}
	waitStatus(t, api, "backlog of 2", func(s admin.ServerStatus) bool { return s.Backlog == 2 && s.Outage })
	if n := countMaildir(t, d.Maildir(alice)); n != 0 {
		t.Fatalf("%d messages reached Dovecot during the outage", n)
	}

	// Probes succeed all along, yet the operator's outage holds.
	waitStatus(t, api, "probes up", func(s admin.ServerStatus) bool { return s.Up && s.Outage })

	if _, err := api.EndOutage(ctx, "dc"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, api, "replay drained", func(s admin.ServerStatus) bool {
		return !s.Outage && s.Backlog == 0 && s.Replay.Delivered == 2
	})
	if n := countMaildir(t, d.Maildir(alice)); n != 2 {
		t.Errorf("alice has %d messages after replay, want 2", n)
	}
	metrics := get(t, "http://"+httpAddr+"/metrics")
	for _, want := range []string{
		`lifeline_outage_transitions_total{cause="operator",server="dc"} 2`,
		`lifeline_replay_recipients_total{result="delivered",server="dc"} 2`,
		`lifeline_outage_active{server="dc"} 0`,
		`lifeline_mailbox_server_up{server="dc"} 1`,
		`lifeline_custody_backlog{server="dc"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	ts, err := api.Transitions(ctx, "dc")
	if err != nil || len(ts) != 2 || !ts[0].Outage || ts[0].Reason != "disk replacement" || ts[1].Outage {
		t.Errorf("transitions: %+v, %v", ts, err)
	}

	final, err := api.Restore(ctx, admin.RestoreRequest{Mailbox: alice, Since: time.Now().Add(-time.Hour), Folder: "restored"}, nil)
	if err != nil || final.Total != 2 || final.Delivered != 2 {
		t.Fatalf("restore: %+v, %v", final, err)
	}
	if n := countMaildir(t, filepath.Join(d.Maildir(alice), ".restored")); n != 2 {
		t.Errorf("restored folder has %d messages, want 2", n)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

func waitStatus(t *testing.T, api *admin.Client, what string, cond func(admin.ServerStatus) bool) {
	t.Helper()
	var last admin.Status
	err := e2e.Poll(context.Background(), 20*time.Second, func() (bool, error) {
		st, err := api.Status(context.Background())
		if err != nil {
			return false, err
		}
		last = st
		return len(st.Servers) == 1 && cond(st.Servers[0]), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v; last status %+v", what, err, last)
	}
}

func countMaildir(t *testing.T, maildir string) int {
	t.Helper()
	files, err := e2e.MaildirFiles(maildir)
	if err != nil {
		t.Fatal(err)
	}
	// Only this maildir, not its folders, when asked for the inbox.
	n := 0
	for _, f := range files {
		if filepath.Dir(filepath.Dir(f)) == maildir {
			n++
		}
	}
	return n
}

// TestDiskFullDuringOutage puts the journal on a small filesystem and fills
// it: during an outage the milter must answer TEMPFAIL (the sender retries;
// nothing acknowledged is lost), outside one mail keeps flowing (ACCEPT, the
// default on_journal_error), and once space is back custody works again.
func TestDiskFullDuringOutage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	milterAddr, httpAddr := freePort(t), freePort(t)
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[journal]
path = %q
min_free = "16MiB"
[milter]
listen = "tcp:%s"
[pop3]
enabled = false
[imap]
enabled = false
[http]
listen = %q
admin_token = "t0ken"
[[server]]
name = "dc"
domains = ["example.test"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), milterAddr, httpAddr)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test", Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	api := admin.NewClient(httpAddr, "t0ken")
	if _, err := api.StartOutage(ctx, "dc", "test"); err != nil {
		t.Fatal(err)
	}
	// Leave less than min_free.
	filler := filepath.Join(dir, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=30").CombinedOutput(); err != nil {
		t.Logf("dd: %v: %s", err, out) // it stops at the end of the filesystem; fine
	}
	if act, _ := sendMilter(t, milterAddr, "full1", "alice@example.test"); act.Type != gomilter.ActionTempFail {
		t.Errorf("custody on a full disk: %v, want TEMPFAIL", act)
	}
	if act, _ := sendMilter(t, milterAddr, "full2", "x@foreign.net"); act.Type != gomilter.ActionAccept {
		t.Errorf("normal mail on a full disk: %v, want ACCEPT (mail flow never stops)", act)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if act, _ := sendMilter(t, milterAddr, "full1", "alice@example.test"); act.Type != gomilter.ActionDiscard {
		t.Errorf("custody after space came back: %v, want DISCARD", act)
	}
	metrics := get(t, "http://"+httpAddr+"/metrics")
	if !strings.Contains(metrics, `lifeline_milter_messages_total{result="custody_tempfail"} 1`) {
		t.Errorf("metrics do not count the custody tempfail")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

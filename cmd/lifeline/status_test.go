package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/daemon"
)

// statusDaemon runs `lifeline serve`'s daemon in-process with a mailbox
// server whose probes never declare an outage, and returns the config path
// for the CLI.
func statusDaemon(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	port := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	cfgPath := filepath.Join(dir, "lifeline.toml")
	text := fmt.Sprintf(`
[journal]
path = %q
retention = "30d"
[milter]
listen = "tcp:%s"
[http]
listen = %q
admin_token = "status-test-token"
[imap]
enabled = false
[pop3]
enabled = false
[[server]]
name = "dovecot"
domains = ["example.com"]
lmtp = "tcp:127.0.0.1:1"
fail_after = 1000
`, filepath.Join(dir, "journal"), port(), port())
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Version: "test", Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return cfgPath
}

// pollStatus runs `lifeline status ARGS` until cond holds for its output.
func pollStatus(t *testing.T, cond func(code int, out string) bool, args ...string) (int, string, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errs := runCmd(t, append([]string{"status"}, args...)...)
		if cond(code, out) {
			return code, out, errs
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %v: exit %d\n%s%s", args, code, out, errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatusExitCodes drives `lifeline status` against a running daemon:
// exit 0 and a table when all is well (with the journal's size and the
// retention horizon once the first statistics are read), 2 during an
// operator outage (CRITICAL with --nagios), the state inside --json with
// the same exit status, and 1 (UNKNOWN with --nagios) when Lifeline cannot be reached.
// TestStatusUsageExitCodes: a usage error of status exits 1 (3, UNKNOWN, with
// --nagios), never 2, which means an outage (CRITICAL).
func TestStatusUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--bogus"}, 1},
		{[]string{"--json", "--nagios"}, nagiosUnknown},
		{[]string{"--nagios", "--bogus"}, nagiosUnknown},
		{[]string{"-nagios=true", "extra"}, nagiosUnknown},
		{[]string{"-h"}, 1},
	} {
		code, out, errs := runCmd(t, append([]string{"status"}, tc.args...)...)
		if code != tc.want {
			t.Errorf("status %v: exit %d, want %d\n%s%s", tc.args, code, tc.want, out, errs)
		}
		if errs == "" {
			t.Errorf("status %v: nothing on stderr", tc.args)
		}
	}
}

func TestStatusExitCodes(t *testing.T) {
	cfgPath := statusDaemon(t)

	code, out, _ := pollStatus(t, func(code int, out string) bool { return strings.Contains(out, "retention: 30d") }, "-c", cfgPath)
	if code != 0 {
		t.Fatalf("healthy: exit %d\n%s", code, out)
	}
	for _, want := range []string{"SERVER", "dovecot", "up", "journal: 0 messages", "free on its filesystem", "the journal is empty"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := runCmd(t, "status", "--nagios", "-c", cfgPath); code != 0 || !strings.HasPrefix(out, "LIFELINE OK - 1 mailbox servers up") || !strings.Contains(out, "| backlog=0") {
		t.Errorf("nagios healthy: exit %d %q", code, out)
	}

	if code, out, errs := runCmd(t, "outage", "start", "-c", cfgPath, "--server", "dovecot", "--reason", "disk swap"); code != 0 {
		t.Fatalf("outage start: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCmd(t, "status", "-c", cfgPath)
	t.Logf("lifeline status during the outage:\n%s", out)
	if code != statusOutage || !strings.Contains(out, "OUTAGE") || !strings.Contains(out, "operator (disk swap)") {
		t.Errorf("outage: exit %d, want %d\n%s", code, statusOutage, out)
	}
	code, out, _ = runCmd(t, "status", "--nagios", "-c", cfgPath)
	if code != nagiosCritical || !strings.HasPrefix(out, "LIFELINE CRITICAL - dovecot in outage since ") || strings.Count(out, "\n") != 1 {
		t.Errorf("nagios outage: exit %d %q", code, out)
	}
	code, out, _ = runCmd(t, "status", "--json", "-c", cfgPath)
	var doc struct {
		State    string `json:"state"`
		ExitCode int    `json:"exit_code"`
		Servers  []struct {
			Name   string `json:"name"`
			Outage bool   `json:"outage"`
		} `json:"servers"`
		Journal *struct {
			Retention float64   `json:"retention_seconds"`
			Horizon   time.Time `json:"horizon"`
		} `json:"journal"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != statusOutage {
		t.Fatalf("json: exit %d, %v\n%s", code, err, out)
	}
	if doc.State != "outage" || doc.ExitCode != statusOutage || len(doc.Servers) != 1 || !doc.Servers[0].Outage {
		t.Errorf("json: %+v", doc)
	}
	if doc.Journal == nil || doc.Journal.Retention != 30*86400 || time.Since(doc.Journal.Horizon) < 30*24*time.Hour-time.Minute {
		t.Errorf("json journal: %+v", doc.Journal)
	}

	if code, out, errs := runCmd(t, "outage", "end", "-c", cfgPath, "--server", "dovecot"); code != 0 {
		t.Fatalf("outage end: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := runCmd(t, "status", "-c", cfgPath); code != 0 {
		t.Errorf("after the outage: exit %d\n%s", code, out)
	}

	if code, _, _ := runCmd(t, "status", "--json", "--nagios", "-c", cfgPath); code != nagiosUnknown {
		t.Errorf("--json --nagios: exit %d, want %d (usage, UNKNOWN)", code, nagiosUnknown)
	}
}

func TestStatusUnreachable(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfgPath := filepath.Join(dir, "c.toml")
	text := fmt.Sprintf("[journal]\npath = %q\n[http]\nlisten = %q\nadmin_token = \"x\"\n", filepath.Join(dir, "j"), addr)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, "status", "-c", cfgPath); code != 1 || !strings.Contains(errs, "is `lifeline serve` running?") {
		t.Errorf("unreachable: exit %d %q", code, errs)
	}
	if code, out, _ := runCmd(t, "status", "--nagios", "-c", cfgPath); code != nagiosUnknown || !strings.HasPrefix(out, "LIFELINE UNKNOWN - ") {
		t.Errorf("nagios unreachable: exit %d %q", code, out)
	}
}

// TestStatusReplayFailed: permanently failed replay recipients are exit 3
// (WARNING with --nagios), outranked by an outage on another server.
func TestStatusReplayFailed(t *testing.T) {
	st := admin.Status{Time: time.Now(), Servers: []admin.ServerStatus{
		{Name: "a", Up: true, Backlog: 2, Replay: admin.Replay{Delivered: 5, Failed: 2}},
		{Name: "b", Up: true},
	}}
	if code, state := statusState(st); code != statusReplayFailed || state != "replay_failed" {
		t.Errorf("statusState = %d %q", code, state)
	}
	var b strings.Builder
	if code := printNagios(&b, st); code != nagiosWarning || !strings.HasPrefix(b.String(), "LIFELINE WARNING - a: 2 replay recipients failed, custody backlog 2 |") {
		t.Errorf("nagios = %d %q", code, b.String())
	}
	b.Reset()
	if err := printStatus(&b, st); err != nil || !strings.Contains(b.String(), "delivered 5, retrying 0, failed 2") {
		t.Errorf("table: %v\n%s", err, b.String())
	}
	st.Servers[1].Outage = true
	if code, state := statusState(st); code != statusOutage || state != "outage" {
		t.Errorf("with an outage: statusState = %d %q", code, state)
	}
}

func TestAgeAndBytes(t *testing.T) {
	for d, want := range map[time.Duration]string{
		90 * time.Second:                   "1m30s",
		3*time.Hour + 20*time.Minute + 5e9: "3h20m",
		(89*24 + 23) * time.Hour:           "89d23h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{512: "512 B", 1536: "1.5 KiB", 44237209600: "41.2 GiB"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
	if got := retention(90 * 86400); got != "90d" {
		t.Errorf("retention = %q", got)
	}
}

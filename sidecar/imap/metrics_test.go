package imap

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/internal/promreg"
	"github.com/lifelinemail/lifeline/sidecar/pop3"
)

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	ts := startServer(t, f, "", nil, nil)
	r := dialRaw(t, ts.addr)
	r.login("alice")
	r.ok("SELECT INBOX")
	r.ok("FETCH 1:* (BODY.PEEK[])")
	r.ok("UID FETCH 1 (FLAGS)")
	r.ok("SEARCH ALL")
	if _, done := r.cmd("LOGIN x y"); done == "" {
		t.Fatal("no answer")
	}
	if n := counterValue(ts.metrics.sessions); n != 1 {
		t.Errorf("sessions = %v", n)
	}
	if n := counterValue(ts.metrics.commands.WithLabelValues("FETCH")); n != 2 {
		t.Errorf("FETCH commands = %v", n)
	}
	if n := counterValue(ts.metrics.commands.WithLabelValues("SELECT")); n != 1 {
		t.Errorf("SELECT commands = %v", n)
	}
	total := 0
	for _, m := range f.msgs["alice"] {
		total += len(m)
	}
	if n := counterValue(ts.metrics.bytesSent); n < float64(total) {
		t.Errorf("bytes sent %v < %d bytes of messages", n, total)
	}
	if n := counterValue(ts.metrics.logins.WithLabelValues("imap", promreg.LoginOK)); n != 1 {
		t.Errorf("logins = %v", n)
	}
}

// TestMetricsSharedWithPOP3 registers both servers on one registry: the
// shared lifeline_logins_total and lifeline_panics_total must not conflict.
func TestMetricsSharedWithPOP3(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	if _, err := pop3.New(pop3.Options{Store: f.store, Journal: f.j, Auth: users, Registerer: reg, Logger: log}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: f.store, Journal: f.j, Auth: users, Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Store: f.store, Journal: f.j, Auth: users, Registerer: reg, Logger: log}); err != nil {
		t.Fatalf("second IMAP server on the same registry: %v", err)
	}
	s.metrics.logins.WithLabelValues("imap", promreg.LoginOK).Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
	}
	for _, name := range []string{"lifeline_logins_total", "lifeline_panics_total", "lifeline_imap_sessions",
		"lifeline_imap_commands_total", "lifeline_imap_bytes_sent_total", "lifeline_pop3_sessions"} {
		if !found[name] {
			t.Errorf("%s not gathered", name)
		}
	}
}

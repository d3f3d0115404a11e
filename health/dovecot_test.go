package health_test

import (
	"context"
	"errors"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/e2e"
	"github.com/lifelinemail/lifeline/health"
)

// This file is an external test package so that it may import e2e even if
// e2e comes to import health.

// TestProbesAgainstDovecot runs the lmtp and imap probes against a private
// Dovecot, the server they are for.
func TestProbesAgainstDovecot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dovecot")
	}
	d := e2e.StartDovecot(t, e2e.DovecotOptions{Users: []string{"canary", "alice"}})
	canary := "canary@" + d.Domain
	missing := "nobody@" + d.Domain

	t.Run("lmtp", func(t *testing.T) {
		if err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeLMTP, Address: "tcp:" + d.LMTPAddr})); err != nil {
			t.Fatalf("without canary: %v", err)
		}
		if err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeLMTP, Address: d.LMTPAddr, Canary: canary})); err != nil {
			t.Fatalf("with canary: %v", err)
		}
	})
	t.Run("lmtp canary missing", func(t *testing.T) {
		// The server accepts TCP and LHLO but not the canary: a broken
		// user database is an unhealthy server.
		err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeLMTP, Address: d.LMTPAddr, Canary: missing}))
		health.MustErrContainT(t, err, "lmtp probe", "RCPT TO:<"+missing+">", "550")
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 550 {
			t.Fatalf("error %v does not carry the 550 reply", err)
		}
	})
	t.Run("smtp dialect against lmtp", func(t *testing.T) {
		// Dovecot's LMTP refuses EHLO (RFC 2033 §4.1): the smtp probe must
		// report the step and the reply rather than pass.
		err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeSMTP, Address: d.LMTPAddr}))
		health.MustErrContainT(t, err, "smtp probe", "EHLO")
	})
	t.Run("imap", func(t *testing.T) {
		if err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeIMAP, Address: d.IMAPAddr})); err != nil {
			t.Fatalf("without login: %v", err)
		}
		if err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeIMAP, Address: d.IMAPAddr, User: "alice@" + d.Domain, Password: d.Password})); err != nil {
			t.Fatalf("login: %v", err)
		}
	})
	t.Run("imap wrong password", func(t *testing.T) {
		secret := "not-the-password"
		err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeIMAP, Address: d.IMAPAddr, User: "alice@" + d.Domain, Password: secret, Timeout: 15 * time.Second}))
		health.MustErrContainT(t, err, "imap probe", "LOGIN alice@", "NO")
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error shows the password: %v", err)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		if err := health.CheckT(health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeTCP, Address: d.POP3Addr})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("monitor detects stop and start", func(t *testing.T) {
		j, _ := health.OpenStoreT(t, t.TempDir())
		rec := &health.RecorderT{}
		reg := prometheus.NewRegistry()
		m, err := health.New(health.Options{
			Servers: []health.Server{{
				Name:     "dovecot",
				Probes:   []health.Probe{health.NewProbeT(t, health.ProbeConfig{Type: health.ProbeLMTP, Address: d.LMTPAddr, Canary: canary, Timeout: time.Second})},
				Interval: 50 * time.Millisecond, FailAfter: 3, RecoverAfter: 3,
			}},
			Store: j, Logger: health.TestLoggerT(t), Registerer: reg, OnTransition: rec.Add,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		done := make(chan error, 1)
		go func() { done <- m.Serve(ctx) }()
		defer func() {
			if err := m.Shutdown(ctx); err != nil {
				t.Error(err)
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		health.PollT(t, 10*time.Second, "first good round", func() bool {
			return health.MetricValueT(t, reg, "lifeline_mailbox_server_up", "server", "dovecot") == 1
		})
		stopped := time.Now()
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		health.PollT(t, 10*time.Second, "outage", func() bool { return m.InOutage("dovecot") })
		t.Logf("outage declared %v after Dovecot stopped", time.Since(stopped).Round(time.Millisecond))
		if st := m.Status()[0]; !strings.Contains(st.Reason, "connect") {
			t.Errorf("outage reason %q does not say the connect failed", st.Reason)
		}
		d.Restart(t)
		health.PollT(t, 10*time.Second, "recovery", func() bool { return !m.InOutage("dovecot") })
		health.PollT(t, 5*time.Second, "OnTransition", func() bool { return len(rec.Get()) == 2 })
		health.WantTransitionsT(t, rec.Get(),
			health.Transition{Server: "dovecot", Outage: true, Cause: health.CauseProbe},
			health.Transition{Server: "dovecot", Outage: false, Cause: health.CauseProbe},
		)
	})
}

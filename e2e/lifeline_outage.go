package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server names the harness gives the mailbox servers in Lifeline's config.
const (
	PrimaryServer = "dovecot"  // the Dovecot of Options.Domain
	SecondServer  = "dovecot2" // the Dovecot of Options.SecondDomain
)

// CanaryUser is the mailbox every Dovecot gets when LifelineOptions.Outage is
// set: the lmtp probe's RCPT TO, which must be accepted while the server is
// healthy (a server whose user database is broken refuses it).
const CanaryUser = "lifeline-canary"

// LifelineServer is one [[server]] table.
type LifelineServer struct {
	Name     string
	Domains  []string
	LMTPAddr string // 127.0.0.1:PORT; written as lmtp = "tcp:…"
	// Canary, when set (and Outage is), adds an lmtp [[server.probe]] whose
	// RCPT TO is this address.
	Canary string
}

// OutageOptions are the health, custody and replay settings of the outage
// tests. Zero fields take the defaults noted, chosen so that an outage is
// declared and ended within about a second instead of Lifeline's production
// defaults (interval 10s).
type OutageOptions struct {
	Interval     string // every server's probe interval (default "200ms")
	FailAfter    int    // consecutive failed probes that declare an outage (default 3)
	RecoverAfter int    // consecutive good probes that end it (default 3)
	ProbeTimeout string // each probe's timeout (default "1s")
	Windows      []Window
	Replay       ReplayOptions
}

// Window is a [[window]] maintenance window.
type Window struct {
	Server     string
	Start, End time.Time
	Reason     string
}

// ReplayOptions is the [replay] table; zero fields are left out (Lifeline's
// defaults), except RetryMin and RetryMax (defaults "1s" and "5s" here, so
// a recipient deferred while Dovecot comes back is retried within the test).
type ReplayOptions struct {
	Concurrency int
	Rate        int
	RetryMin    string
	RetryMax    string
	GiveUpAfter string
	Mode        string // "lmtp" or "smtp"
	Reinject    string
	DSN         *bool
}

func (o OutageOptions) withDefaults() OutageOptions {
	if o.Interval == "" {
		o.Interval = "200ms"
	}
	if o.FailAfter == 0 {
		o.FailAfter = 3
	}
	if o.RecoverAfter == 0 {
		o.RecoverAfter = 3
	}
	if o.ProbeTimeout == "" {
		o.ProbeTimeout = "1s"
	}
	if o.Replay.RetryMin == "" {
		o.Replay.RetryMin = "1s"
	}
	if o.Replay.RetryMax == "" {
		o.Replay.RetryMax = "5s"
	}
	return o
}

// DetectionTime is the interval × fail_after the options configure: how long
// after the mailbox server fails the outage should be declared.
func (o OutageOptions) DetectionTime() time.Duration {
	o = o.withDefaults()
	iv, err := time.ParseDuration(o.Interval)
	if err != nil {
		return 0
	}
	return iv * time.Duration(o.FailAfter)
}

// RecoveryTime is the interval × recover_after the options configure.
func (o OutageOptions) RecoveryTime() time.Duration {
	o = o.withDefaults()
	iv, err := time.ParseDuration(o.Interval)
	if err != nil {
		return 0
	}
	return iv * time.Duration(o.RecoverAfter)
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// serversTOML writes the [[server]] tables; the health keys only when
// outage is set, so that a config without it is what Lifeline read before
// outage mode existed.
func serversTOML(servers []LifelineServer, outage *OutageOptions) string {
	q := strconv.Quote
	var b strings.Builder
	for _, s := range servers {
		var doms []string
		for _, d := range s.Domains {
			doms = append(doms, q(d))
		}
		fmt.Fprintf(&b, "[[server]]\nname = %s\ndomains = [%s]\n", q(s.Name), strings.Join(doms, ", "))
		if s.LMTPAddr != "" {
			fmt.Fprintf(&b, "lmtp = %s\n", q("tcp:"+s.LMTPAddr))
		}
		if outage != nil {
			o := outage.withDefaults()
			fmt.Fprintf(&b, "interval = %s\nfail_after = %d\nrecover_after = %d\n", q(o.Interval), o.FailAfter, o.RecoverAfter)
			if s.Canary != "" {
				fmt.Fprintf(&b, "  [[server.probe]]\n  type = \"lmtp\"\n  canary = %s\n  timeout = %s\n", q(s.Canary), q(o.ProbeTimeout))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// outageTOML writes the [[window]] tables and [replay].
func outageTOML(outage *OutageOptions) string {
	if outage == nil {
		return ""
	}
	o := outage.withDefaults()
	q := strconv.Quote
	var b strings.Builder
	for _, w := range o.Windows {
		// TOML offset date-times (RFC 3339), unquoted.
		fmt.Fprintf(&b, "\n[[window]]\nserver = %s\nstart = %s\nend = %s\nreason = %s\n",
			q(w.Server), w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339), q(w.Reason))
	}
	r := o.Replay
	b.WriteString("\n[replay]\n")
	if r.Concurrency > 0 {
		fmt.Fprintf(&b, "concurrency = %d\n", r.Concurrency)
	}
	if r.Rate > 0 {
		fmt.Fprintf(&b, "rate = %d\n", r.Rate)
	}
	fmt.Fprintf(&b, "retry_min = %s\nretry_max = %s\n", q(r.RetryMin), q(r.RetryMax))
	if r.GiveUpAfter != "" {
		fmt.Fprintf(&b, "give_up_after = %s\n", q(r.GiveUpAfter))
	}
	if r.Mode != "" {
		fmt.Fprintf(&b, "mode = %s\n", q(r.Mode))
	}
	if r.Reinject != "" {
		fmt.Fprintf(&b, "reinject = %s\n", q(r.Reinject))
	}
	if r.DSN != nil {
		fmt.Fprintf(&b, "dsn = %t\n", *r.DSN)
	}
	return b.String()
}

// ServerStatus is one server in `lifeline status --json` (and GET
// /v1/status). Fields the harness does not know are kept in Raw.
type ServerStatus struct {
	Name    string   `json:"name"`
	Outage  bool     `json:"outage"`
	Since   flexTime `json:"since"`
	Cause   string   `json:"cause"` // probe, operator, window
	Reason  string   `json:"reason"`
	Backlog int64    `json:"backlog"` // custody recipients not yet delivered
	Oldest  flexTime `json:"oldest"`  // arrival of the oldest of them
	Replay  struct {
		Running   bool  `json:"running"`
		Delivered int64 `json:"delivered"` // recipients, since the current run began
		Retrying  int64 `json:"retrying"`
		Failed    int64 `json:"failed"`
	} `json:"replay"`

	Raw json.RawMessage `json:"-"`
}

func (s ServerStatus) String() string {
	if len(s.Raw) > 0 {
		var b bytes.Buffer
		if json.Compact(&b, s.Raw) == nil {
			return b.String()
		}
		return string(s.Raw)
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// flexTime reads an RFC 3339 string, a Unix time in seconds, or null.
type flexTime struct{ time.Time }

func (t *flexTime) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "null" || s == `""`:
		t.Time = time.Time{}
		return nil
	case strings.HasPrefix(s, `"`):
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		v, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			return fmt.Errorf("status time %q: %w", str, err)
		}
		t.Time = v
		return nil
	default:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("status time %s: %w", s, err)
		}
		sec := int64(f)
		t.Time = time.Unix(sec, int64((f-float64(sec))*1e9))
		return nil
	}
}

// Status is what `lifeline status` reports, by server name.
type Status map[string]ServerStatus

// parseStatus reads {"servers":[…]} or a bare array of servers.
func parseStatus(b []byte) (Status, error) {
	b = bytes.TrimSpace(b)
	var raws []json.RawMessage
	if bytes.HasPrefix(b, []byte("[")) {
		if err := json.Unmarshal(b, &raws); err != nil {
			return nil, fmt.Errorf("status: %w: %q", err, b)
		}
	} else {
		var top struct {
			Servers []json.RawMessage `json:"servers"`
		}
		if err := json.Unmarshal(b, &top); err != nil {
			return nil, fmt.Errorf("status: %w: %q", err, b)
		}
		raws = top.Servers
	}
	st := Status{}
	for _, r := range raws {
		var s ServerStatus
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("status: %w: %s", err, r)
		}
		s.Raw = r
		st[s.Name] = s
	}
	return st, nil
}

// Status runs `lifeline status --json -c CONFIG`, what an operator runs
// (the CLI finds the admin API and its token through the config).
func (l *Lifeline) Status(ctx context.Context) (Status, error) {
	out, err := l.runNoLog(ctx, "status", "--json", "-c", l.ConfigPath)
	// status exits 2 during an outage and 3 after failed replays, with the
	// whole document on stdout.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && (ee.ExitCode() == 2 || ee.ExitCode() == 3) && len(out) > 0) {
		l.logFailure([]string{"status", "--json"}, err)
		return nil, err
	}
	return parseStatus(out)
}

// StatusHTTP reads GET /v1/status of the admin API with the bearer token.
func (l *Lifeline) StatusHTTP(ctx context.Context) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.HTTPAddr+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+l.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /v1/status: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /v1/status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return parseStatus(b)
}

// logFailure appends a failed command to serve's log, where a test's
// failure output shows it.
func (l *Lifeline) logFailure(args []string, err error) {
	if f, ferr := os.OpenFile(l.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
		fmt.Fprintf(f, "=== lifeline %s: %v\n", strings.Join(args, " "), err)
		f.Close()
	}
}

// runQuiet is Run without the log line, for commands polled many times a
// second; a failure is still logged.
func (l *Lifeline) runQuiet(ctx context.Context, args ...string) ([]byte, error) {
	out, err := l.runNoLog(ctx, args...)
	if err != nil {
		l.logFailure(args, err)
	}
	return out, err
}

func (l *Lifeline) runNoLog(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, l.Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("lifeline %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// OutageStart runs `lifeline outage start --server NAME --reason TEXT`.
func (l *Lifeline) OutageStart(ctx context.Context, server, reason string) error {
	_, err := l.Run(ctx, "outage", "start", "-c", l.ConfigPath, "--server", server, "--reason", reason)
	return err
}

// OutageEnd runs `lifeline outage end --server NAME`.
func (l *Lifeline) OutageEnd(ctx context.Context, server string) error {
	_, err := l.Run(ctx, "outage", "end", "-c", l.ConfigPath, "--server", server)
	return err
}

// WaitOutage polls the status until server's outage flag is want, and
// returns that status and when the poll saw it. It polls at least every
// 50 ms, so that a measured detection time is that precise.
func (l *Lifeline) WaitOutage(ctx context.Context, server string, want bool, timeout time.Duration) (ServerStatus, time.Time, error) {
	var last ServerStatus
	var seen time.Time
	err := PollUpTo(ctx, timeout, 50*time.Millisecond, func() (bool, error) {
		st, err := l.Status(ctx)
		if err != nil {
			return false, err
		}
		s, ok := st[server]
		if !ok {
			return false, fmt.Errorf("status has no server %q: %v", server, st)
		}
		last = s
		if s.Outage == want {
			seen = time.Now()
			return true, nil
		}
		return false, errNotYet
	})
	if err != nil {
		return last, seen, fmt.Errorf("waiting for %s outage=%t: %w; last status %s", server, want, err, last)
	}
	return last, seen, nil
}

// WaitBacklog polls the status until server's custody backlog is at most
// atMost recipients.
func (l *Lifeline) WaitBacklog(ctx context.Context, server string, atMost int64, timeout time.Duration) (ServerStatus, error) {
	return l.WaitStatus(ctx, server, timeout, func(s ServerStatus) bool { return s.Backlog <= atMost })
}

// WaitStatus polls the status until cond holds for server.
func (l *Lifeline) WaitStatus(ctx context.Context, server string, timeout time.Duration, cond func(ServerStatus) bool) (ServerStatus, error) {
	var last ServerStatus
	err := Poll(ctx, timeout, func() (bool, error) {
		st, err := l.Status(ctx)
		if err != nil {
			return false, err
		}
		s, ok := st[server]
		if !ok {
			return false, fmt.Errorf("status has no server %q", server)
		}
		last = s
		if cond(s) {
			return true, nil
		}
		return false, errNotYet
	})
	if err != nil {
		return last, fmt.Errorf("waiting for %s status: %w; last %s", server, err, last)
	}
	return last, nil
}

// Kill ends `lifeline serve` with SIGKILL (a crash: nothing is flushed or
// closed) and waits until it is gone. Restart starts it again.
func (l *Lifeline) Kill() error {
	if l.proc == nil {
		return errors.New("lifeline serve is not running")
	}
	p := l.proc
	l.proc = nil
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL lifeline serve: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("lifeline serve still running 30 s after SIGKILL")
	}
}

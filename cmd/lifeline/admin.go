package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
)

// adminClient reads the config for the admin API's address and token.
func adminClient(cfgPath string) (*admin.Client, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	token, err := admin.ReadToken(cfg.HTTP.AdminToken, cfg.HTTP.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	return admin.NewClient(cfg.HTTP.Listen, token), nil
}

// relTime accepts what parseTime does plus a duration back from now ("24h", "7d").
func relTime(s string, now time.Time) (time.Time, error) {
	if d, err := config.ParseDuration(s); err == nil && s != "" {
		return now.Add(-d), nil
	}
	return parseTime(s)
}

// Exit statuses of `lifeline status` (and, with --nagios, the plugin
// statuses of the Nagios plugin guidelines: 0 OK, 1 WARNING, 2 CRITICAL,
// 3 UNKNOWN). An error reaching Lifeline is 1 (3 with --nagios).
const (
	statusOK           = 0
	statusOutage       = 2 // a mailbox server is in outage
	statusReplayFailed = 3 // a replay run has permanently failed recipients

	nagiosOK       = 0
	nagiosWarning  = 1
	nagiosCritical = 2
	nagiosUnknown  = 3
)

// statusState sums up the status: an outage outranks replay failures (it
// is what the operator must act on first).
func statusState(st admin.Status) (code int, state string) {
	code, state = statusOK, "ok"
	for _, s := range st.Servers {
		switch {
		case s.Outage:
			return statusOutage, "outage"
		case s.Replay.Failed > 0:
			code, state = statusReplayFailed, "replay_failed"
		}
	}
	return code, state
}

// statusUsage ends status after a usage error with 1, as when Lifeline
// cannot be asked, or 3 (UNKNOWN) when --nagios is among the arguments:
// not the 2 of other commands' usage errors, which is status's code for an
// outage (CRITICAL for Nagios), so that a typo in a monitoring check does
// not page anyone about an outage.
func statusUsage(err error, args []string, stderr io.Writer) error {
	fmt.Fprintf(stderr, "lifeline: %v\n", err)
	for _, a := range args {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); name == "nagios" && strings.HasPrefix(a, "-") {
			return exitError(nagiosUnknown)
		}
	}
	return exitError(1)
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON (with the same exit status as the table)")
	nagios := fs.Bool("nagios", false, "print one line and exit as a Nagios plugin (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
	if err := parse(fs, args); err != nil {
		return statusUsage(err, args, stderr)
	}
	if *asJSON && *nagios {
		return statusUsage(errors.New("status: --json and --nagios exclude each other"), args, stderr)
	}
	st, err := fetchStatus(*cfgPath)
	if err != nil {
		if *nagios {
			fmt.Fprintf(stdout, "LIFELINE UNKNOWN - %s\n", oneLine(err.Error()))
			return exitError(nagiosUnknown)
		}
		return err
	}
	code, state := statusState(st)
	switch {
	case *asJSON:
		// The exit status is the table's (issue 7: scripts test it); the
		// document is printed in full either way, with the state in it.
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			admin.Status
			State    string `json:"state"`
			ExitCode int    `json:"exit_code"` // the exit status of this command
		}{st, state, code}); err != nil {
			return err
		}
		if code != statusOK {
			return exitError(code)
		}
		return nil
	case *nagios:
		return exitError(printNagios(stdout, st))
	}
	if err := printStatus(stdout, st); err != nil {
		return err
	}
	if code != statusOK {
		return exitError(code)
	}
	return nil
}

func fetchStatus(cfgPath string) (admin.Status, error) {
	c, err := adminClient(cfgPath)
	if err != nil {
		return admin.Status{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Status(ctx)
}

// printNagios prints one plugin line, "LIFELINE CRITICAL - … | perfdata",
// and returns the plugin status: CRITICAL for an outage, WARNING for
// permanently failed replay recipients, else OK.
func printNagios(w io.Writer, st admin.Status) int {
	code, label := nagiosOK, "OK"
	var outages, failed, parts []string
	backlog := 0
	for _, s := range st.Servers {
		backlog += s.Backlog
		if s.Outage {
			outages = append(outages, fmt.Sprintf("%s in outage since %s (%s)", s.Name, s.Since.UTC().Format(time.RFC3339), s.Cause))
		}
		if s.Replay.Failed > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d replay recipients failed", s.Name, s.Replay.Failed))
		}
	}
	switch {
	case len(outages) > 0:
		code, label = nagiosCritical, "CRITICAL"
	case len(failed) > 0:
		code, label = nagiosWarning, "WARNING"
	}
	parts = append(append(parts, outages...), failed...)
	if len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("%d mailbox servers up", len(st.Servers)))
	}
	perf := fmt.Sprintf("backlog=%d;;;0", backlog)
	if j := st.Journal; j != nil {
		perf += fmt.Sprintf(" journal_bytes=%dB;;;0 journal_messages=%d;;;0", j.BytesOnDisk, j.Messages)
	}
	fmt.Fprintf(w, "LIFELINE %s - %s, custody backlog %d | %s\n", label, oneLine(strings.Join(parts, "; ")), backlog, perf)
	return code
}

// oneLine keeps a message on one line (a plugin's output is its first line).
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printStatus(w io.Writer, st admin.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tSTATE\tSINCE\tCAUSE\tPROBE\tBACKLOG\tOLDEST\tREPLAY")
	for _, s := range st.Servers {
		state := "up"
		if s.Outage {
			state = "OUTAGE"
		}
		probe := "ok"
		if !s.Up {
			probe = "failing"
			if s.LastError != "" {
				probe += ": " + trim(s.LastError, 40)
			}
		}
		cause := s.Cause
		if s.Reason != "" {
			cause += " (" + trim(s.Reason, 30) + ")"
		}
		if cause == "" {
			cause = "-"
		}
		oldest := "-"
		if !s.Oldest.IsZero() {
			oldest = age(st.Time.Sub(s.Oldest)) + " ago"
		}
		replay := "idle"
		if s.Replay.Running || s.Replay.Delivered+s.Replay.Failed+s.Replay.Retrying > 0 {
			replay = fmt.Sprintf("delivered %d, retrying %d, failed %d", s.Replay.Delivered, s.Replay.Retrying, s.Replay.Failed)
			if s.Replay.Running {
				replay = "running: " + replay
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, state, since(s.Since, st.Time), cause, probe, s.Backlog, oldest, replay)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if j := st.Journal; j != nil {
		fmt.Fprintf(w, "\njournal: %d messages, %d mailboxes, %s on disk (%s raw)", j.Messages, j.Mailboxes, bytesIEC(j.BytesOnDisk), bytesIEC(j.BytesRaw))
		if j.DiskSize > 0 {
			fmt.Fprintf(w, ", %s of %s free on its filesystem", bytesIEC(j.DiskFree), bytesIEC(j.DiskSize))
		}
		fmt.Fprintf(w, "\nretention: %s; horizon %s", retention(j.Retention), j.Horizon.Local().Format("2006-01-02 15:04"))
		if j.Oldest.IsZero() {
			fmt.Fprint(w, "; the journal is empty\n")
		} else {
			fmt.Fprintf(w, "; oldest message kept %s (%s ago)\n", j.Oldest.Local().Format("2006-01-02 15:04"), age(st.Time.Sub(j.Oldest)))
		}
	}
	if len(st.Windows) > 0 {
		fmt.Fprintln(w, "\nmaintenance windows:")
		for _, win := range st.Windows {
			fmt.Fprintf(w, "  %s  %s  %s .. %s  %s\n", win.ID, win.Server, win.Start.Format(time.RFC3339), win.End.Format(time.RFC3339), win.Reason)
		}
	}
	return nil
}

// age prints a duration for a reader: to the second below an hour, to the
// minute below two days, else in days and hours ("89d23h").
func age(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// bytesIEC prints a byte count with a binary unit, "1.5 GiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// retention prints a retention in days when it is whole days, as configured.
func retention(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + now.Sub(t).Round(time.Second).String() + ")"
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func cmdOutage(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "start" && args[0] != "end" && args[0] != "history") {
		return usageError{fmt.Errorf("outage: want start, end or history")}
	}
	sub := args[0]
	fs, cfgPath := newFlags("outage "+sub, stderr)
	server := fs.String("server", "", "mailbox server name (as in [[server]] name)")
	reason := fs.String("reason", "", "why (start: required; kept in the outage history)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *server == "" && sub != "history" {
		return usageError{fmt.Errorf("outage %s: --server is required", sub)}
	}
	if sub == "start" && strings.TrimSpace(*reason) == "" {
		return usageError{fmt.Errorf("outage start: --reason is required")}
	}
	c, err := adminClient(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st admin.Status
	switch sub {
	case "start":
		st, err = c.StartOutage(ctx, *server, *reason)
	case "end":
		st, err = c.EndOutage(ctx, *server)
	case "history":
		ts, err := c.Transitions(ctx, *server)
		if err != nil {
			return err
		}
		for _, t := range ts {
			what := "outage ended"
			if t.Outage {
				what = "outage started"
			}
			fmt.Fprintf(stdout, "%s  %s  %s  cause=%s by=%s  %s\n", t.Time.Local().Format(time.RFC3339), t.Server, what, t.Cause, t.By, t.Reason)
		}
		return nil
	}
	if err != nil {
		return err
	}
	return printStatus(stdout, st)
}

func cmdWindow(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "remove") {
		return usageError{fmt.Errorf("window: want add or remove")}
	}
	sub := args[0]
	fs, cfgPath := newFlags("window "+sub, stderr)
	server := fs.String("server", "", "mailbox server name")
	start := fs.String("start", "", "start (RFC 3339)")
	end := fs.String("end", "", "end (RFC 3339)")
	reason := fs.String("reason", "", "why")
	id := fs.String("id", "", "window id (remove)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	c, err := adminClient(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if sub == "remove" {
		if *id == "" {
			return usageError{fmt.Errorf("window remove: --id is required")}
		}
		return c.RemoveWindow(ctx, *id)
	}
	s, err := parseTime(*start)
	if err != nil {
		return usageError{fmt.Errorf("--start: %w", err)}
	}
	e, err := parseTime(*end)
	if err != nil {
		return usageError{fmt.Errorf("--end: %w", err)}
	}
	w, err := c.AddWindow(ctx, admin.Window{Server: *server, Start: s, End: e, Reason: *reason})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "window %s: %s %s .. %s\n", w.ID, w.Server, w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
	return nil
}

func cmdRestore(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("restore", stderr)
	mailbox := fs.String("mailbox", "", "continuity mailbox (address) to restore")
	sinceS := fs.String("since", "", "from (RFC 3339, YYYY-MM-DD, or a duration back from now: 24h, 7d)")
	untilS := fs.String("until", "", "up to, exclusive (default: now)")
	folder := fs.String("folder", "", "deliver into this folder (user+folder@domain; Dovecot lmtp_save_to_detail_mailbox)")
	dryRun := fs.Bool("dry-run", false, "count what would be restored, deliver nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	now := time.Now()
	since, err := relTime(*sinceS, now)
	if err != nil || since.IsZero() {
		return usageError{fmt.Errorf("restore: --since is required (%v)", err)}
	}
	until, err := relTime(*untilS, now)
	if err != nil {
		return usageError{fmt.Errorf("restore: --until: %w", err)}
	}
	if *mailbox == "" {
		return usageError{fmt.Errorf("restore: --mailbox is required")}
	}
	c, err := adminClient(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tty := false
	if f, ok := stderr.(*os.File); ok {
		// A character device is a terminal (or /dev/null, where the bar is harmless).
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	final, err := c.Restore(ctx, admin.RestoreRequest{Mailbox: *mailbox, Since: since, Until: until, Folder: *folder, DryRun: *dryRun},
		func(p admin.RestoreProgress) {
			if tty {
				fmt.Fprintf(stderr, "\r%s", bar(p, 30))
			}
		})
	if tty {
		fmt.Fprintln(stderr)
	}
	verb := "restored"
	if *dryRun {
		verb = "would restore"
	}
	fmt.Fprintf(stdout, "%s %d of %d messages (%d bytes) of %s; delivered %d, failed %d\n",
		verb, final.Done, final.Total, final.Bytes, *mailbox, final.Delivered, final.Failed)
	if err != nil {
		return err
	}
	if final.Failed > 0 {
		fmt.Fprintf(stderr, "lifeline: last failure: %s\n", final.Last)
		return exitError(1)
	}
	return nil
}

// bar draws a one-line progress bar.
func bar(p admin.RestoreProgress, width int) string {
	filled := width
	if p.Total > 0 {
		filled = p.Done * width / p.Total
	}
	return fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.Done, p.Total)
}

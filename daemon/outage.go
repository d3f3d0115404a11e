package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/health"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
	"github.com/lifelinemail/lifeline/replay"
	"github.com/lifelinemail/lifeline/restore"
)

// outage is outage mode: the health monitor that decides it, the replayer that
// gives custody mail back when it ends, and the notifier that tells people.
type outage struct {
	cfg     *config.Config
	j       journal.Journal
	log     *slog.Logger
	monitor *health.Monitor
	replay  *replay.Replayer
	notify  *notify.Notifier
	// stats is the journal snapshot runStats keeps, for Status.
	stats journalStats
	clock func() time.Time // the wall clock (Options.Clock)
	// horizon gives the retention sweeps' horizons, and Status the next one.
	horizon *retentionHorizon
	// replayable holds the servers replay has a queue for; read-only after
	// newOutage (a reload does not change the servers' identity).
	replayable map[string]bool
	// replayStopped reports the end of the drain stopReplay began.
	replayStopped chan error
}

func newOutage(cfg *config.Config, j journal.Journal, log *slog.Logger, reg prometheus.Registerer, m *metrics, clock func() time.Time) (_ *outage, err error) {
	o := &outage{cfg: cfg, j: j, log: log, clock: clock, horizon: newRetentionHorizon(cfg.Journal.Retention.D())}
	o.notify, err = notify.New(notify.Options{
		Webhook:    cfg.Notify.Webhook,
		Postmaster: cfg.Notify.Postmaster,
		From:       cfg.Notify.From,
		Submit:     cfg.Notify.Submit,
		Logger:     log.With("component", "notify"),
		Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.notify.Close(context.Background()))
		}
	}()

	servers, err := healthServers(cfg)
	if err != nil {
		return nil, err
	}
	// Every server replay can deliver to gets a queue: in smtp mode all of
	// them (re-injection goes to the MTA, whatever the server), in lmtp mode
	// those with an lmtp address. Only those may have custody taken
	// (custodyOutage), so that no custody is ever left without a queue.
	rservers := make([]replay.Server, 0, len(cfg.Servers))
	o.replayable = make(map[string]bool, len(cfg.Servers))
	for i, s := range cfg.Servers {
		switch {
		case cfg.Replay.Mode == replay.ModeSMTP:
			rservers = append(rservers, replay.Server{Name: s.Name})
		case s.LMTP != "":
			network, addr, err := config.SplitListen(s.LMTP)
			if err != nil {
				return nil, fmt.Errorf("server.%d.lmtp: %w", i, err)
			}
			rservers = append(rservers, replay.Server{Name: s.Name, Network: network, Address: addr})
		default:
			continue // config.Warnings says so
		}
		o.replayable[s.Name] = true
	}
	windows := make([]health.Window, len(cfg.Windows))
	for i, w := range cfg.Windows {
		windows[i] = health.Window{Server: w.Server, Start: w.Start, End: w.End, Reason: w.Reason}
	}
	o.monitor, err = health.New(health.Options{
		Servers:      servers,
		Windows:      windows,
		Store:        j,
		Logger:       log.With("component", "health"),
		Registerer:   reg,
		Panics:       m.panics.WithLabelValues("health"),
		Clock:        clock,
		OnTransition: o.transition,
	})
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}

	dsn := cfg.Replay.DSN != nil && *cfg.Replay.DSN && cfg.Notify.Submit != ""
	if cfg.Replay.DSN != nil && *cfg.Replay.DSN && cfg.Notify.Submit == "" {
		log.Warn("replay.dsn is on but notify.submit is empty: senders get no DSN for permanent replay failures")
	}
	o.replay, err = replay.New(replay.Options{
		Journal:     j,
		Servers:     rservers,
		Outage:      o.monitor,
		Mode:        cfg.Replay.Mode,
		Reinject:    cfg.Replay.Reinject,
		Concurrency: cfg.Replay.Concurrency,
		Rate:        cfg.Replay.Rate,
		RetryMin:    cfg.Replay.RetryMin.D(),
		RetryMax:    cfg.Replay.RetryMax.D(),
		GiveUpAfter: cfg.Replay.GiveUpAfter.D(),
		DSN:         dsn,
		Submit:      cfg.Notify.Submit,
		Notifier:    o.notify,
		Logger:      log.With("component", "replay"),
		Registerer:  reg,
		Panics:      m.panics.WithLabelValues("replay"),
		Clock:       clock,
	})
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return o, nil
}

// healthServers builds the health monitor's servers and probes from the
// config: at start, and again on SIGHUP (health.Monitor.Reconfigure).
func healthServers(cfg *config.Config) ([]health.Server, error) {
	servers := make([]health.Server, len(cfg.Servers))
	for i, s := range cfg.Servers {
		hs := health.Server{Name: s.Name, Interval: s.Interval.D(), FailAfter: s.FailAfter, RecoverAfter: s.RecoverAfter}
		for k, p := range s.Probes {
			probe, err := health.NewProbe(health.ProbeConfig{
				Type: p.Type, Address: p.Address, URL: p.URL, ExpectStatus: p.ExpectStatus,
				Canary: p.Canary, User: p.User, Password: p.Password, Timeout: p.Timeout.D(),
			})
			if err != nil {
				return nil, fmt.Errorf("server.%d.probe.%d: %w", i, k, err)
			}
			hs.Probes = append(hs.Probes, probe)
		}
		servers[i] = hs
	}
	return servers, nil
}

// custodyOutage is outage mode as the milter sees it (milter.OutageChecker):
// a server is in outage for custody only if replay has a queue for it.
// Custody of a server replay cannot deliver to (lmtp mode, no lmtp address)
// would be acknowledged to the MTA, taken from it and then never delivered;
// left with the MTA, its recipients are queued and retried by the MTA itself
// (and still journaled for the continuity mailbox).
type custodyOutage struct{ o *outage }

func (c custodyOutage) InOutage(server string) bool {
	return c.o.replayable[server] && c.o.monitor.InOutage(server)
}

// CustodyTaken runs once custody of a recipient of server is durable
// (milter.CustodyNotifier). Custody committed just after the outage ended (a
// slow append) would otherwise wait for the scheduler's next rescan, up to
// replay.retry_max: the Wake at the outage's end came before it.
func (c custodyOutage) CustodyTaken(server string) {
	if !c.o.monitor.InOutage(server) {
		c.o.replay.Wake(server)
	}
}

// transition runs for each outage start and end, after it is durable.
func (o *outage) transition(t health.Transition) {
	kind := notify.KindOutageStart
	if !t.Outage {
		kind = notify.KindOutageEnd
	}
	// At the end, replay starts at once rather than at the scheduler's next
	// look; at the start, the scheduler pauses and begins counting the
	// backlog for status at once instead of after its rescan interval.
	o.replay.Wake(t.Server)
	o.log.Info("outage "+map[bool]string{true: "started", false: "ended"}[t.Outage],
		"server", t.Server, "cause", t.Cause, "reason", t.Reason, "by", t.By)
	o.notify.Notify(context.Background(), notify.Event{Kind: kind, Server: t.Server, Time: t.Time, Reason: t.Reason, Cause: t.Cause})
}

// serve runs the monitor and the replayer until ctx ends.
func (o *outage) serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- o.monitor.Serve(ctx) }()
	go func() { errc <- o.replay.Serve(ctx) }()
	var errs []error
	for range 2 {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, health.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopReplay begins replay's shutdown: dispatching stops at once, and the
// transactions in flight get drain of their own to finish and record their
// outcome, in the background, beside the milter's and the mailbox servers'
// drain. Sharing their context instead, replay would go on dispatching while
// the milter waits, then find the context used up and cut the transaction in
// flight after the final dot: the server has the message (RFC 2033 §4.2),
// the journal records retrying, and it is delivered again after the restart.
// shutdown waits for it.
func (o *outage) stopReplay(drain time.Duration) {
	done := make(chan error, 1)
	o.replayStopped = done
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		done <- o.replay.Shutdown(ctx)
	}()
}

// shutdown stops probing and lets in-flight replay transactions record their
// outcome (an outcome not recorded means a redelivery after restart); after
// stopReplay it waits for that drain, whose own timeout bounds it.
func (o *outage) shutdown(ctx context.Context) error {
	var rerr error
	if o.replayStopped != nil {
		rerr = <-o.replayStopped
	} else {
		rerr = o.replay.Shutdown(ctx)
	}
	return errors.Join(rerr, o.monitor.Shutdown(ctx), o.notify.Close(ctx))
}

// The admin API's Control.

func (o *outage) Status(ctx context.Context) (admin.Status, error) {
	st := admin.Status{Time: o.clock().UTC()}
	progress := map[string]replay.ServerProgress{}
	for _, p := range o.replay.Progress() {
		progress[p.Server] = p
	}
	for _, s := range o.monitor.Status() {
		p := progress[s.Name]
		st.Servers = append(st.Servers, admin.ServerStatus{
			Name: s.Name, Outage: s.Outage, Since: s.Since, Cause: s.Cause, Reason: s.Reason, Manual: s.Manual,
			Up: s.Up, LastProbe: s.LastProbe, LastError: s.LastError,
			Backlog: p.Backlog, Oldest: p.Oldest,
			Replay: admin.Replay{Running: p.Running, Started: p.RunStarted, Delivered: p.Delivered, Retrying: p.Retrying, Failed: p.Failed},
		})
	}
	for _, w := range o.monitor.Windows() {
		st.Windows = append(st.Windows, adminWindow(w))
	}
	if snap, ok := o.stats.get(); ok {
		ret := o.cfg.Journal.Retention.D()
		st.Journal = &admin.JournalStatus{
			Updated: snap.At.UTC(), Messages: snap.Messages, Mailboxes: snap.Mailboxes,
			BytesOnDisk: snap.BytesOnDisk, BytesRaw: snap.BytesRaw, DiskFree: snap.DiskFree, DiskSize: snap.DiskSize,
			Oldest: snap.Oldest.UTC(), Retention: ret.Seconds(), Horizon: o.horizon.peek(st.Time, time.Now()).UTC(),
		}
	}
	return st, nil
}

func adminWindow(w health.Window) admin.Window {
	src := "api"
	if w.Configured {
		src = "config"
	}
	return admin.Window{ID: w.ID, Server: w.Server, Start: w.Start, End: w.End, Reason: w.Reason, Source: src}
}

// adminErr maps the monitor's errors to the API's.
func adminErr(err error) error {
	switch {
	case errors.Is(err, health.ErrUnknownServer):
		return fmt.Errorf("%w: %v", admin.ErrUnknownServer, err)
	case errors.Is(err, health.ErrUnknownWindow):
		return fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	case errors.Is(err, health.ErrWindowActive):
		return fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return err
}

func (o *outage) StartOutage(ctx context.Context, server, reason, by string) error {
	return adminErr(o.monitor.StartOutage(ctx, server, reason, by))
}

func (o *outage) EndOutage(ctx context.Context, server, by string) error {
	return adminErr(o.monitor.EndOutage(ctx, server, by))
}

func (o *outage) AddWindow(ctx context.Context, w admin.Window) (admin.Window, error) {
	hw, err := o.monitor.AddWindow(ctx, health.Window{Server: w.Server, Start: w.Start, End: w.End, Reason: w.Reason})
	if err != nil {
		return admin.Window{}, adminErr(err)
	}
	return adminWindow(hw), nil
}

func (o *outage) RemoveWindow(ctx context.Context, id string) error {
	return adminErr(o.monitor.RemoveWindow(ctx, id))
}

func (o *outage) Transitions(ctx context.Context, server string, limit int) ([]admin.Transition, error) {
	ts, err := o.monitor.Transitions(ctx, server, limit)
	if err != nil {
		return nil, adminErr(err)
	}
	out := make([]admin.Transition, len(ts))
	for i, t := range ts {
		out[i] = admin.Transition{Server: t.Server, Time: t.Time, Outage: t.Outage, Cause: t.Cause, Reason: t.Reason, By: t.By}
	}
	return out, nil
}

// Restore delivers a mailbox's journaled mail back to the LMTP address of the
// server that serves its domain.
func (o *outage) Restore(ctx context.Context, req admin.RestoreRequest, progress func(admin.RestoreProgress)) (admin.RestoreProgress, error) {
	srv, err := o.serverFor(req.Mailbox)
	if err != nil {
		return admin.RestoreProgress{}, err
	}
	network, addr, err := config.SplitListen(srv.LMTP)
	if err != nil {
		return admin.RestoreProgress{}, err
	}
	d := replay.NewDeliverer(replay.DelivererOptions{Network: network, Address: addr, MaxIdle: 1})
	defer d.Close()
	conv := func(p restore.Progress) admin.RestoreProgress {
		return admin.RestoreProgress{Total: p.Total, Done: p.Done, Delivered: p.Delivered, Failed: p.Failed, Bytes: p.Bytes, Last: p.Last}
	}
	p, err := restore.Run(ctx, o.j, oneDeliverer{d}, restore.Request{
		Mailbox: strings.ToLower(req.Mailbox), Since: req.Since, Until: req.Until, Folder: req.Folder, DryRun: req.DryRun,
	}, o.cfg.Mapping.DetailDelimiter, func(p restore.Progress) { progress(conv(p)) })
	if errors.Is(err, journal.ErrNotFound) {
		err = fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	}
	return conv(p), err
}

func (o *outage) serverFor(mailbox string) (config.Server, error) {
	at := strings.LastIndexByte(mailbox, '@')
	if at < 0 {
		return config.Server{}, fmt.Errorf("%w: mailbox %q is not an address", admin.ErrInvalid, mailbox)
	}
	domain := strings.ToLower(mailbox[at+1:])
	for _, s := range o.cfg.Servers {
		for _, d := range s.Domains {
			if strings.EqualFold(d, domain) {
				if s.LMTP == "" {
					return s, fmt.Errorf("%w: server %q has no lmtp address", admin.ErrInvalid, s.Name)
				}
				return s, nil
			}
		}
	}
	return config.Server{}, fmt.Errorf("%w: no [[server]] serves %q", admin.ErrInvalid, domain)
}

// oneDeliverer adapts replay's Deliverer to restore's one-recipient calls.
type oneDeliverer struct{ d *replay.Deliverer }

func (o oneDeliverer) DeliverOne(ctx context.Context, from, rcpt string, body io.Reader) (int, string, error) {
	rs, err := o.d.Deliver(ctx, from, []string{rcpt}, body)
	if err != nil {
		return 0, "", err
	}
	if len(rs) != 1 {
		return 0, "", fmt.Errorf("restore: %d replies for one recipient", len(rs))
	}
	if rs[0].Code == 0 {
		return 0, "", fmt.Errorf("restore: no reply from %s: %s", rs[0].Rcpt, rs[0].Text)
	}
	return rs[0].Code, rs[0].String(), nil
}

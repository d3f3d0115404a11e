package daemon

import (
	"log/slog"
	"reflect"
	"strings"

	"github.com/lifelinemail/lifeline/config"
)

// reloader applies SIGHUP. What can change safely while serving does:
//
//   - the TLS certificate and the passwd-file are read again (also when the
//     config cannot be read: renewing a certificate must not depend on it);
//   - the probe settings of each [[server]] (interval, fail_after,
//     recover_after, probes and their timeouts) go to the health monitor,
//     keeping the outage states;
//   - log.level sets the handler's level.
//
// Everything else (listeners, the journal, the mailbox servers' names,
// domains and LMTP addresses, mapping, replay, notify, windows, the TLS and
// passwd-file paths, login limits, log.format) is compared with the config
// serve started with and named in a "restart needed" log line: a listener
// cannot move without dropping its sessions, and a journal path cannot change
// under open transactions.
type reloader struct {
	running *config.Config // what serve started with; never modified
	reread  func() (*config.Config, error)
	level   *slog.LevelVar // nil: the level is fixed
	out     *outage
	access  *mailAccess
	log     *slog.Logger
}

func (r *reloader) reload() {
	r.log.Info("reloading on SIGHUP")
	if r.reread != nil {
		next, err := r.reread()
		if err != nil {
			r.log.Error("config reload failed; the running settings stay (the TLS certificate and the passwd-file are read again)", "err", err)
		} else {
			r.apply(next)
		}
	}
	r.access.reload()
}

// apply takes the reloadable settings of next and reports the rest.
func (r *reloader) apply(next *config.Config) {
	var applied []string
	if r.level != nil {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(next.Log.Level)); err != nil {
			r.log.Error("log.level not applied", "level", next.Log.Level, "err", err)
		} else if lvl != r.level.Level() {
			r.log.Info("log level changed", "from", r.level.Level().String(), "to", lvl.String())
			r.level.Set(lvl)
			applied = append(applied, "log.level")
		}
	}
	if servers, err := healthServers(next); err != nil {
		r.log.Error("probe settings not applied", "err", err)
	} else if err := r.out.monitor.Reconfigure(servers); err != nil {
		r.log.Error("probe settings not applied", "err", err)
	} else {
		applied = append(applied, "server probe settings")
	}
	if restart := restartNeeded(r.running, next); len(restart) > 0 {
		r.log.Warn("config changes not applied: restart needed for: "+strings.Join(restart, ", "),
			"restart_needed_for", strings.Join(restart, ", "))
	}
	r.log.Info("config reloaded", "applied", strings.Join(applied, ", "))
}

// restartNeeded names the config sections (TOML keys) that differ between
// the running config and next, other than what apply takes. It walks the
// Config struct, so that a section added later is covered without a change
// here.
func restartNeeded(running, next *config.Config) []string {
	var out []string
	rv, nv := reflect.ValueOf(running).Elem(), reflect.ValueOf(next).Elem()
	t := rv.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" {
			key = f.Name
		}
		a, b := rv.Field(i).Interface(), nv.Field(i).Interface()
		switch f.Name {
		case "Log":
			if running.Log.Format != next.Log.Format {
				out = append(out, "log.format")
			}
			continue
		case "Servers":
			a, b = serverIdentity(running.Servers), serverIdentity(next.Servers)
			key = "server (name, domains, lmtp)"
		}
		if !reflect.DeepEqual(a, b) {
			out = append(out, key)
		}
	}
	return out
}

// serverIdentity is what of the [[server]] tables the probe settings leave:
// what the milter's mapping, the replayer and the metrics are built from.
func serverIdentity(ss []config.Server) []config.Server {
	out := make([]config.Server, len(ss))
	for i, s := range ss {
		out[i] = config.Server{Name: s.Name, Domains: s.Domains, LMTP: s.LMTP}
	}
	return out
}

package health

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// ErrServersChanged is returned by Reconfigure when the set of server names
// differs from the Monitor's: a server's outage state, metrics and replay
// queue are keyed by its name, so adding or removing one needs a restart.
var ErrServersChanged = errors.New("health: mailbox servers added or removed")

// Reconfigure replaces the probe settings of the servers (Probes, Interval,
// FailAfter, RecoverAfter, with New's defaults for zero values) while Serve
// runs: SIGHUP applies a changed config this way. servers must name exactly
// the Monitor's servers, in any order; otherwise nothing changes and the
// error wraps ErrServersChanged. Outage states are kept; the consecutive
// failure and success counts are kept too and meet the new thresholds at the
// next round. A server whose settings changed runs a round at once.
func (m *Monitor) Reconfigure(servers []Server) error {
	byName := make(map[string]Server, len(servers))
	var errs []error
	var added []string
	for _, cfg := range servers {
		switch {
		case m.servers[cfg.Name] == nil:
			added = append(added, cfg.Name)
			continue
		case cfg.Interval < 0 || cfg.FailAfter < 0 || cfg.RecoverAfter < 0:
			errs = append(errs, fmt.Errorf("health: server %q: negative interval, fail_after or recover_after", cfg.Name))
		case slices.Contains(cfg.Probes, nil):
			errs = append(errs, fmt.Errorf("health: server %q: a probe is nil", cfg.Name))
		}
		if _, dup := byName[cfg.Name]; dup {
			errs = append(errs, fmt.Errorf("health: server %q twice", cfg.Name))
		}
		byName[cfg.Name] = cfg
	}
	var removed []string
	for _, s := range m.order {
		if _, ok := byName[s.cfg.Name]; !ok {
			removed = append(removed, s.cfg.Name)
		}
	}
	if len(added) > 0 || len(removed) > 0 {
		errs = append(errs, fmt.Errorf("%w (added: %s; removed: %s)", ErrServersChanged, list(added), list(removed)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.order {
		cfg := byName[s.cfg.Name]
		if cfg.Interval == 0 {
			cfg.Interval = DefaultInterval
		}
		if cfg.FailAfter == 0 {
			cfg.FailAfter = DefaultFailAfter
		}
		if cfg.RecoverAfter == 0 {
			cfg.RecoverAfter = DefaultRecoverAfter
		}
		changes := settingChanges(s.cfg, cfg)
		if len(changes) == 0 {
			continue
		}
		// Field by field: cfg.Name is read without the lock.
		s.cfg.Probes = append([]Probe(nil), cfg.Probes...)
		s.cfg.Interval, s.cfg.FailAfter, s.cfg.RecoverAfter = cfg.Interval, cfg.FailAfter, cfg.RecoverAfter
		for _, p := range s.cfg.Probes {
			m.metrics.probeFailures.WithLabelValues(s.cfg.Name, p.Type())
		}
		m.log.Info("health: probe settings changed", "server", s.cfg.Name, "changes", strings.Join(changes, ", "))
		kick(s.reconfigured)
	}
	return nil
}

// settingChanges describes what differs between two settings of a server.
// Probes are compared by their description, which covers every setting.
func settingChanges(old, cur Server) []string {
	var out []string
	if old.Interval != cur.Interval {
		out = append(out, fmt.Sprintf("interval %s → %s", old.Interval, cur.Interval))
	}
	if old.FailAfter != cur.FailAfter {
		out = append(out, fmt.Sprintf("fail_after %d → %d", old.FailAfter, cur.FailAfter))
	}
	if old.RecoverAfter != cur.RecoverAfter {
		out = append(out, fmt.Sprintf("recover_after %d → %d", old.RecoverAfter, cur.RecoverAfter))
	}
	if !slices.EqualFunc(old.Probes, cur.Probes, sameProbe) {
		out = append(out, fmt.Sprintf("probes [%s] → [%s]", describe(old.Probes), describe(cur.Probes)))
	}
	return out
}

// sameProbe compares two probes by their settings. An http probe's client
// holds functions, which never compare equal: its settings are compared.
func sameProbe(a, b Probe) bool {
	ha, okA := a.(*httpProbe)
	hb, okB := b.(*httpProbe)
	if okA || okB {
		return okA && okB && ha.url == hb.url && ha.expect == hb.expect && ha.timeout == hb.timeout
	}
	return reflect.DeepEqual(a, b)
}

// describe lists probes as logs show them (type and address; never a
// password).
func describe(ps []Probe) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if s, ok := p.(fmt.Stringer); ok {
			out[i] = s.String()
		} else {
			out[i] = p.Type()
		}
	}
	return strings.Join(out, ", ")
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

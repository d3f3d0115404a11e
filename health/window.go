package health

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Window is a scheduled maintenance window: the server is in outage during
// [Start, End).
type Window struct {
	ID     string    `json:"id"`
	Server string    `json:"server"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason,omitempty"`
	// Configured marks a window from the config file ([[window]]): it is not
	// stored in the journal and RemoveWindow refuses it.
	Configured bool `json:"configured,omitempty"`
}

const windowPrefix = "window/"

// maxWindowSleep caps the window timer. Go timers run on the monotonic
// clock while windows are wall-clock times; after a wall-clock step (NTP,
// a resumed VM) a long timer would fire early or late, so the loop looks
// again at least this often.
const maxWindowSleep = time.Minute

func (w *Window) validate() error {
	switch {
	case w.Server == "":
		return errors.New("window without a server")
	case w.Start.IsZero() || w.End.IsZero():
		return fmt.Errorf("window %s: start and end are required", w.ID)
	case !w.End.After(w.Start):
		return fmt.Errorf("window %s: end %s is not after start %s", w.ID, w.End.Format(time.RFC3339), w.Start.Format(time.RFC3339))
	case strings.ContainsAny(w.ID, "/\x00"):
		return fmt.Errorf("window id %q: no slash", w.ID)
	}
	return nil
}

func newWindowID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("health: window id: %w", err)
	}
	return "w" + hex.EncodeToString(b[:]), nil
}

// activeWindowLocked returns the window that holds server in outage at
// now: of those that cover now, the one that ends last (then the lowest ID,
// to be deterministic).
func (m *Monitor) activeWindowLocked(server string, now time.Time) (Window, bool) {
	var best Window
	found := false
	for _, w := range m.windows {
		if w.Server != server || now.Before(w.Start) || !now.Before(w.End) {
			continue
		}
		if !found || w.End.After(best.End) || (w.End.Equal(best.End) && w.ID < best.ID) {
			best, found = w, true
		}
	}
	return best, found
}

// nextBoundaryLocked is the first window start or end after now, zero if
// there is none.
func (m *Monitor) nextBoundaryLocked(now time.Time) time.Time {
	var next time.Time
	for _, w := range m.windows {
		for _, t := range []time.Time{w.Start, w.End} {
			if t.After(now) && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
	}
	return next
}

// evaluateLocked brings every server's window cause up to date with the
// clock, forgets windows that have ended, and returns the transitions.
func (m *Monitor) evaluateLocked(ctx context.Context) (time.Time, []Transition) {
	now := m.now()
	var trs []Transition
	for _, s := range m.order {
		w, ok := m.activeWindowLocked(s.cfg.Name, now)
		if w.ID == s.ctl.windowID && w.Reason == s.ctl.windowReason && !s.dirty && len(m.unlogged) == 0 {
			continue
		}
		old := s.ctl.windowID
		end := ending{cause: CauseWindow, reason: "maintenance window " + old + " ended", window: old}
		tr, _ := m.changeLocked(ctx, s, now, false, end, func(c *control) {
			c.windowID, c.windowReason = "", ""
			if ok {
				c.windowID, c.windowReason = w.ID, w.Reason
			}
		})
		if tr != nil {
			trs = append(trs, *tr)
		}
	}
	for id, w := range m.windows {
		if w.End.After(now) {
			continue
		}
		// An ended window does nothing more; the transitions log keeps its
		// record. Forget it so that Windows and the store do not grow.
		if !w.Configured {
			if err := m.store.SetControl(ctx, windowPrefix+id, nil); err != nil {
				m.log.Error("health: removing ended window", "window", id, "err", err)
				continue
			}
		}
		delete(m.windows, id)
	}
	return now, trs
}

// AddWindow schedules a maintenance window, stores it in the journal and
// returns it with its new ID (w.ID and w.Configured are ignored). A window
// that has already begun takes effect at once.
func (m *Monitor) AddWindow(ctx context.Context, w Window) (Window, error) {
	if _, ok := m.servers[w.Server]; !ok {
		return Window{}, fmt.Errorf("health: add window: %w: %q", ErrUnknownServer, w.Server)
	}
	id, err := newWindowID()
	if err != nil {
		return Window{}, err
	}
	w.ID, w.Configured = id, false
	w.Start, w.End = w.Start.UTC(), w.End.UTC()
	if err := w.validate(); err != nil {
		return Window{}, fmt.Errorf("health: add window: %w", err)
	}
	if !w.End.After(m.now()) {
		return Window{}, fmt.Errorf("health: add window: it ended at %s", w.End.Format(time.RFC3339))
	}
	b, err := json.Marshal(w)
	if err != nil {
		return Window{}, fmt.Errorf("health: add window: %w", err)
	}
	m.mu.Lock()
	if err := m.store.SetControl(ctx, windowPrefix+id, b); err != nil {
		m.mu.Unlock()
		return Window{}, fmt.Errorf("health: add window: %w", err)
	}
	m.windows[id] = w
	_, trs := m.evaluateLocked(ctx)
	m.enqueueLocked(trs...)
	m.mu.Unlock()
	m.log.Info("health: maintenance window added", "window", id, "server", w.Server,
		"start", w.Start, "end", w.End, "reason", w.Reason)
	kick(m.windowKick)
	return w, nil
}

// RemoveWindow deletes a window added with AddWindow; a window in effect
// stops holding its server in outage at once.
func (m *Monitor) RemoveWindow(ctx context.Context, id string) error {
	m.mu.Lock()
	w, ok := m.windows[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("health: remove window: %w: %q", ErrUnknownWindow, id)
	}
	if w.Configured {
		m.mu.Unlock()
		return fmt.Errorf("health: remove window %s: it comes from the config file; remove it there", id)
	}
	if err := m.store.SetControl(ctx, windowPrefix+id, nil); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("health: remove window %s: %w", id, err)
	}
	delete(m.windows, id)
	_, trs := m.evaluateLocked(ctx)
	m.enqueueLocked(trs...)
	m.mu.Unlock()
	m.log.Info("health: maintenance window removed", "window", id, "server", w.Server)
	kick(m.windowKick)
	return nil
}

// Windows returns the windows that have not ended, by start time.
func (m *Monitor) Windows() []Window {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.windowsLocked("")
}

func (m *Monitor) windowsLocked(server string) []Window {
	ws := make([]Window, 0, len(m.windows))
	for _, w := range m.windows {
		if server == "" || w.Server == server {
			ws = append(ws, w)
		}
	}
	sort.Slice(ws, func(i, j int) bool {
		if !ws[i].Start.Equal(ws[j].Start) {
			return ws[i].Start.Before(ws[j].Start)
		}
		return ws[i].ID < ws[j].ID
	})
	return ws
}

// windowLoop evaluates windows at each boundary (a timer to the next start
// or end, not polling) and whenever AddWindow or RemoveWindow kicks it.
func (m *Monitor) windowLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-m.windowKick:
		}
		wait := safely(m, "window evaluation", func() time.Duration {
			m.mu.Lock()
			defer m.mu.Unlock()
			now, trs := m.evaluateLocked(context.WithoutCancel(ctx))
			next := m.nextBoundaryLocked(now)
			m.enqueueLocked(trs...)
			if next.IsZero() {
				return maxWindowSleep
			}
			return min(next.Sub(now), maxWindowSleep)
		})
		if wait <= 0 {
			wait = time.Second // after a panic: do not spin
		}
		timer.Reset(wait)
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

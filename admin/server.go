package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrUnknownServer is returned by a Control for a server name not in the config.
var ErrUnknownServer = errors.New("unknown mailbox server")

// ErrInvalid marks a request the caller got wrong (400 rather than 500).
var ErrInvalid = errors.New("invalid request")

// Control is what the API needs from the rest of Lifeline. The daemon adapts
// the health monitor, the replayer and restore to it.
type Control interface {
	Status(ctx context.Context) (Status, error)
	StartOutage(ctx context.Context, server, reason, by string) error
	EndOutage(ctx context.Context, server, by string) error
	AddWindow(ctx context.Context, w Window) (Window, error)
	RemoveWindow(ctx context.Context, id string) error
	Transitions(ctx context.Context, server string, limit int) ([]Transition, error)
	// Restore delivers the selected mail and calls progress as it goes; it
	// returns the final tally.
	Restore(ctx context.Context, req RestoreRequest, progress func(RestoreProgress)) (RestoreProgress, error)
}

// maxBody bounds request bodies: every request is a small JSON object.
const maxBody = 64 << 10

// Handler serves /v1/.
type Handler struct {
	token   []byte
	control Control
	log     *slog.Logger
	mux     *http.ServeMux
	restore sync.Mutex // one restore at a time: they compete for the same LMTP server
}

// NewHandler returns the API handler. The token must not be empty: an admin API
// without authentication would let any local user end an outage.
func NewHandler(token string, control Control, log *slog.Logger) (*Handler, error) {
	if token == "" {
		return nil, errors.New("admin: empty token")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{token: []byte(token), control: control, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v1/status", h.status)
	h.mux.HandleFunc("POST /v1/outage/start", h.outageStart)
	h.mux.HandleFunc("POST /v1/outage/end", h.outageEnd)
	h.mux.HandleFunc("GET /v1/windows", h.windows)
	h.mux.HandleFunc("POST /v1/windows", h.addWindow)
	h.mux.HandleFunc("DELETE /v1/windows/{id}", h.removeWindow)
	h.mux.HandleFunc("GET /v1/transitions", h.transitions)
	h.mux.HandleFunc("POST /v1/restore", h.doRestore)
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	got, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), h.token) != 1 {
		// RFC 6750 §3: say which scheme is expected; never echo the token.
		w.Header().Set("WWW-Authenticate", `Bearer realm="lifeline"`)
		writeError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
		return
	}
	h.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknownServer), errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	}
	if code == http.StatusInternalServerError {
		h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err)
}

// ErrNotFound is returned by a Control for an unknown window id.
var ErrNotFound = errors.New("not found")

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return nil
}

// by names who asked, for the outage history: the API has one token, so the
// best it knows is the client's own label (the CLI sends the Unix user).
func by(r *http.Request) string {
	b := r.Header.Get("X-Lifeline-User")
	if b == "" || len(b) > 64 {
		return "api"
	}
	return "api:" + b
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	st, err := h.control.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) outageStart(w http.ResponseWriter, r *http.Request) {
	var req OutageRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Server == "" || strings.TrimSpace(req.Reason) == "" {
		h.fail(w, r, fmt.Errorf("%w: server and reason are required", ErrInvalid))
		return
	}
	if err := h.control.StartOutage(r.Context(), req.Server, req.Reason, by(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("outage started by operator", "server", req.Server, "reason", req.Reason, "by", by(r))
	h.status(w, r)
}

func (h *Handler) outageEnd(w http.ResponseWriter, r *http.Request) {
	var req OutageRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Server == "" {
		h.fail(w, r, fmt.Errorf("%w: server is required", ErrInvalid))
		return
	}
	if err := h.control.EndOutage(r.Context(), req.Server, by(r)); err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("outage ended by operator", "server", req.Server, "by", by(r))
	h.status(w, r)
}

func (h *Handler) windows(w http.ResponseWriter, r *http.Request) {
	st, err := h.control.Status(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st.Windows)
}

func (h *Handler) addWindow(w http.ResponseWriter, r *http.Request) {
	var win Window
	if err := decode(r, &win); err != nil {
		h.fail(w, r, err)
		return
	}
	if win.Server == "" || win.Start.IsZero() || !win.End.After(win.Start) {
		h.fail(w, r, fmt.Errorf("%w: a window needs server, start and end after start", ErrInvalid))
		return
	}
	win.ID, win.Source = "", "api"
	added, err := h.control.AddWindow(r.Context(), win)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, added)
}

func (h *Handler) removeWindow(w http.ResponseWriter, r *http.Request) {
	if err := h.control.RemoveWindow(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) transitions(w http.ResponseWriter, r *http.Request) {
	ts, err := h.control.Transitions(r.Context(), r.URL.Query().Get("server"), 100)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

// doRestore streams progress as NDJSON so that the CLI can draw a progress bar
// and a long restore is not cut by a response timeout.
func (h *Handler) doRestore(w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Mailbox == "" || req.Since.IsZero() {
		h.fail(w, r, fmt.Errorf("%w: mailbox and since are required", ErrInvalid))
		return
	}
	if !req.Until.IsZero() && !req.Until.After(req.Since) {
		h.fail(w, r, fmt.Errorf("%w: until must be after since", ErrInvalid))
		return
	}
	if !h.restore.TryLock() {
		writeError(w, http.StatusConflict, errors.New("a restore is already running"))
		return
	}
	defer h.restore.Unlock()
	h.log.Info("restore started", "mailbox", req.Mailbox, "since", req.Since, "until", req.Until,
		"folder", req.Folder, "dry_run", req.DryRun, "by", by(r))
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	last := time.Time{}
	final, err := h.control.Restore(r.Context(), req, func(p RestoreProgress) {
		// At most ten lines a second: a terminal cannot show more.
		if now := time.Now(); now.Sub(last) >= 100*time.Millisecond {
			last = now
			if enc.Encode(p) == nil && flusher != nil {
				flusher.Flush()
			}
		}
	})
	final.Finished = true
	if err != nil {
		final.Error = err.Error()
		h.log.Warn("restore stopped", "mailbox", req.Mailbox, "err", err)
	} else {
		h.log.Info("restore finished", "mailbox", req.Mailbox, "delivered", final.Delivered, "failed", final.Failed)
	}
	_ = enc.Encode(final) // the client went away: the log has the outcome
}

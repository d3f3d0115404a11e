package webmail

import (
	"errors"
	"net/http"
	"strings"

	"github.com/lifelinemail/lifeline/admin"
)

type adminServer struct {
	S       admin.ServerStatus
	History []admin.Transition
}

// historyLimit is how many outage transitions the admin page shows per server.
const historyLimit = 20

// adminGate answers 404 to anyone who is not an admin: the page's existence
// is nobody else's business.
func (s *Server) adminGate(w http.ResponseWriter, rq *request) bool {
	if !s.isAdmin(rq.sess) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return false
	}
	return true
}

func (s *Server) adminPage(w http.ResponseWriter, r *http.Request, rq *request) {
	if !s.adminGate(w, rq) {
		return
	}
	st, err := s.opts.Control.Status(rq.ctx)
	if err != nil {
		s.log.Error("webmail: admin status", "err", err)
		s.errorPage(w, rq, http.StatusInternalServerError, "internal")
		return
	}
	var d []adminServer
	for _, ss := range st.Servers {
		h, err := s.opts.Control.Transitions(rq.ctx, ss.Name, historyLimit)
		if err != nil {
			s.log.Warn("webmail: admin transitions", "server", ss.Name, "err", err)
		}
		// Newest first on the page; the API returns newest last.
		for i, j := 0, len(h)-1; i < j; i, j = i+1, j-1 {
			h[i], h[j] = h[j], h[i]
		}
		d = append(d, adminServer{S: ss, History: h})
	}
	p := &page{Title: tr(rq.lang, "admin"), Data: d}
	if r.URL.Query().Get("done") == "1" {
		p.Notice = tr(rq.lang, "done")
	}
	s.render(w, rq, http.StatusOK, "admin", p)
}

// outage starts or ends an outage through the admin API's Control, recorded
// as done by the admin's login name.
func (s *Server) outage(w http.ResponseWriter, r *http.Request, rq *request) {
	if !s.adminGate(w, rq) {
		return
	}
	server := r.PostFormValue("server")
	by := "webmail:" + rq.sess.user
	var err error
	switch r.PostFormValue("action") {
	case "start":
		err = s.opts.Control.StartOutage(rq.ctx, server, strings.TrimSpace(r.PostFormValue("reason")), by)
	case "end":
		err = s.opts.Control.EndOutage(rq.ctx, server, by)
	default:
		s.errorPage(w, rq, http.StatusBadRequest, "forbidden")
		return
	}
	if err != nil {
		s.log.Warn("webmail: outage control", "server", server, "by", by, "err", err)
		code := http.StatusConflict
		var he interface{ StatusCode() int }
		if errors.As(err, &he) {
			code = he.StatusCode()
		}
		s.render(w, rq, code, "error", &page{Title: tr(rq.lang, "error"), Error: oneLine(err.Error())})
		return
	}
	s.log.Info("webmail: outage control", "server", server, "action", r.PostFormValue("action"), "by", by)
	http.Redirect(w, r, "/admin?done=1", http.StatusSeeOther)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern, page string, auth bool, h handlerFunc) {
		mux.Handle(pattern, s.wrap(page, auth, h))
	}
	handle("GET /{$}", "other", false, func(w http.ResponseWriter, r *http.Request, rq *request) {
		if s.sessions.get(s.cookie(r, rq)) != nil {
			http.Redirect(w, r, "/mail/inbox", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	})
	handle("GET /static/{file}", "static", false, s.static)
	handle("GET /login", "login", false, s.loginPage)
	handle("POST /login", "login", false, s.login)
	handle("POST /logout", "logout", true, s.logout)
	handle("GET /mail/{folder}", "list", true, s.list)
	handle("GET /mail/{folder}/{ref}", "message", true, s.message)
	handle("GET /mail/{folder}/{ref}/body", "body", true, s.body)
	handle("GET /mail/{folder}/{ref}/part/{part}", "part", true, s.part)
	handle("GET /mail/{folder}/{ref}/cid/{cid}", "part", true, s.cid)
	handle("GET /mail/{folder}/{ref}/raw", "raw", true, s.raw)
	handle("POST /mail/{folder}/{ref}/flags", "flags", true, s.flags)
	handle("GET /compose", "compose", true, s.composePage)
	handle("POST /compose", "send", true, s.send)
	handle("GET /admin", "admin", true, s.adminPage)
	handle("POST /admin/outage", "outage", true, s.outage)
	handle("/", "other", false, func(w http.ResponseWriter, r *http.Request, rq *request) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
	})
	return mux
}

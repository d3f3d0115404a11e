package webmail

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// page is what every template gets.
type page struct {
	Lang, Title string
	CSRF        string // the session's token, or the login form's
	User        string // "" before login
	Admin       bool
	Folder      string // the folder shown, for the navigation
	Banner      string
	Recovery    bool // the banner is the "being given back" note
	Error       string
	Notice      string
	Data        any
}

var funcs = template.FuncMap{
	"t":    tr,
	"time": formatTime,
	"size": formatSize,
	"add":  func(a, b int) int { return a + b },
}

// templates are parsed once: the layout, then each page on a clone of it.
type templates map[string]*template.Template

func parseTemplates() (templates, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := templates{}
	for _, n := range names {
		name := n[len("templates/") : len(n)-len(".html")]
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

var pageTemplates = func() templates {
	t, err := parseTemplates()
	if err != nil {
		panic(err) // the embedded templates are broken: every test fails here
	}
	return t
}()

// render writes a whole page; an execution error is logged and answered 500
// before anything is written.
func (s *Server) render(w http.ResponseWriter, rq *request, code int, name string, p *page) {
	p.Lang = rq.lang
	if rq.sess != nil {
		p.User = rq.sess.mailbox
		p.CSRF = rq.sess.csrf
		p.Admin = s.isAdmin(rq.sess)
		s.banner(rq, p)
	}
	var buf bytes.Buffer
	if err := pageTemplates[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		s.log.Error("webmail: template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes()) // a client gone away is not an error of ours
}

// errorPage shows a short, translated error.
func (s *Server) errorPage(w http.ResponseWriter, rq *request, code int, key string) {
	s.render(w, rq, code, "error", &page{Title: tr(rq.lang, "error"), Error: tr(rq.lang, key)})
}

// banner fills in the outage banner from the state of the user's mailbox
// server: in outage, the continuity note; back up with mail still held or
// being replayed, the "being given back" note.
func (s *Server) banner(rq *request, p *page) {
	if s.opts.Control == nil || s.opts.Servers == nil {
		return
	}
	server, ok := s.opts.Servers.ServerOf(rq.sess.mailbox)
	if !ok {
		return
	}
	st, err := s.opts.Control.Status(rq.ctx)
	if err != nil {
		s.log.Warn("webmail: outage status", "err", err)
		return
	}
	for _, ss := range st.Servers {
		if ss.Name != server {
			continue
		}
		switch {
		case ss.Outage:
			since := ss.Since
			if since.IsZero() {
				since = time.Now()
			}
			p.Banner = tr(rq.lang, "banner.outage", formatTime(rq.lang, since))
		case ss.Backlog > 0 || ss.Replay.Running:
			p.Banner, p.Recovery = tr(rq.lang, "banner.recovery"), true
		}
	}
}

func (s *Server) static(w http.ResponseWriter, r *http.Request, rq *request) {
	name := r.PathValue("file")
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch {
	case len(name) > 4 && name[len(name)-4:] == ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case len(name) > 4 && name[len(name)-4:] == ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(b)
}

package webmail

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/internal/promreg"
	"github.com/lifelinemail/lifeline/sidecar"
)

// Cookie names. Under TLS the "__Host-" prefix makes the browser refuse the
// cookie unless it is Secure, has Path=/ and no Domain (RFC 6265bis §4.1.3.2),
// so no other host of the domain can set or shadow it.
func (s *Server) cookieName(rq *request, base string) string {
	if rq.tls {
		return "__Host-" + base
	}
	return base
}

func (s *Server) cookie(r *http.Request, rq *request) string {
	c, err := r.Cookie(s.cookieName(rq, "lifeline"))
	if err != nil {
		return ""
	}
	return c.Value
}

func (s *Server) setCookie(w http.ResponseWriter, rq *request, base, value string, maxAge time.Duration) {
	c := &http.Cookie{
		Name:     s.cookieName(rq, base),
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		Secure:   rq.tls,
		SameSite: http.SameSiteStrictMode,
	}
	if maxAge < 0 {
		c.MaxAge = -1
	} else if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

// csrfOK checks the synchronizer token of a logged-in POST (OWASP CSRF
// prevention): the form field must equal the session's token.
func (s *Server) csrfOK(r *http.Request, rq *request) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = formValue(r, "csrf")
	}
	return tokenOK(got, rq.sess.csrf)
}

// formValue reads a field of an urlencoded or multipart form (wrap has
// bounded and parsed the body): a form that does not parse has no token,
// which is a 403.
func formValue(r *http.Request, name string) string { return r.PostFormValue(name) }

// loginPage shows the form. The login form has its own CSRF token, a
// double-submit cookie: there is no session yet to bind a token to, and a
// forged login (into the attacker's account) is a CSRF attack too.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, rq *request) {
	if sess := s.sessions.get(s.cookie(r, rq)); sess != nil {
		http.Redirect(w, r, "/mail/inbox", http.StatusSeeOther)
		return
	}
	s.showLogin(w, rq, http.StatusOK, "", "")
}

func (s *Server) showLogin(w http.ResponseWriter, rq *request, code int, user, msg string) {
	token := randomToken()
	s.setCookie(w, rq, "lifeline_login", token, time.Hour)
	s.render(w, rq, code, "login", &page{Title: tr(rq.lang, "login"), CSRF: token, Error: msg, Data: user})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, rq *request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	c, err := r.Cookie(s.cookieName(rq, "lifeline_login"))
	if err != nil || !tokenOK(r.PostFormValue("csrf"), c.Value) {
		s.errorPage(w, rq, http.StatusForbidden, "forbidden")
		return
	}
	user := strings.TrimSpace(r.PostFormValue("user"))
	password := r.PostFormValue("password")
	m := s.metrics.logins
	mailbox, err := s.opts.Auth.Login(r.Context(), rq.ip, user, password)
	if err != nil {
		if sidecar.TemporaryError(err) {
			m.WithLabelValues("webmail", promreg.LoginError).Inc()
			s.log.Warn("webmail: login error", "user", auth.LogUser(user), "ip", rq.ip, "err", err)
			s.showLogin(w, rq, http.StatusTooManyRequests, user, tr(rq.lang, "login.later"))
			return
		}
		m.WithLabelValues("webmail", promreg.LoginFailed).Inc()
		s.log.Info("webmail: login failed", "user", auth.LogUser(user), "ip", rq.ip)
		s.showLogin(w, rq, http.StatusUnauthorized, user, tr(rq.lang, "login.failed"))
		return
	}
	if !validMailbox(mailbox) {
		m.WithLabelValues("webmail", promreg.LoginError).Inc()
		s.log.Error("webmail: authenticator returned an unusable mailbox name", "user", auth.LogUser(user), "mailbox", mailbox)
		s.showLogin(w, rq, http.StatusForbidden, user, tr(rq.lang, "login.unusable"))
		return
	}
	if s.opts.Serving != nil {
		if ok, text := s.opts.Serving.Serves(mailbox); !ok {
			m.WithLabelValues("webmail", promreg.LoginNotServing).Inc()
			s.log.Info("webmail: login while not serving", "user", auth.LogUser(user), "mailbox", mailbox)
			msg := tr(rq.lang, "login.notserving")
			if text != "" {
				msg += " " + text
			}
			s.showLogin(w, rq, http.StatusForbidden, user, msg)
			return
		}
	}
	m.WithLabelValues("webmail", promreg.LoginOK).Inc()
	id, _ := s.sessions.create(user, mailbox)
	s.log.Info("webmail: login", "user", auth.LogUser(user), "mailbox", mailbox, "ip", rq.ip)
	s.setCookie(w, rq, "lifeline", id, 0)
	s.setCookie(w, rq, "lifeline_login", "", -1)
	http.Redirect(w, r, "/mail/inbox", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, rq *request) {
	s.sessions.remove(rq.sess)
	s.log.Info("webmail: logout", "mailbox", rq.sess.mailbox)
	s.setCookie(w, rq, "lifeline", "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// validMailbox rejects names from which "<name>/Sent" could be another
// mailbox's name (the rule of sidecar/imap's login).
func validMailbox(name string) bool {
	if name == "" || strings.ContainsAny(name, "\x00\r\n") {
		return false
	}
	domain := name[strings.LastIndexByte(name, '@')+1:]
	return !strings.Contains(domain, "/")
}

func (s *Server) isAdmin(sess *session) bool {
	if sess == nil || s.opts.Control == nil {
		return false
	}
	return slices.Contains(s.opts.Admins, strings.ToLower(sess.user)) ||
		slices.Contains(s.opts.Admins, strings.ToLower(sess.mailbox))
}

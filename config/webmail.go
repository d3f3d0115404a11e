package config

import (
	"fmt"
	"strings"
	"time"
)

// Webmail configures the webmail server (sidecar/webmail). It is off unless
// enabled; it serves users by the [mailbox_access] rule, with the [auth]
// passwd-file and login limits and the [tls] certificate of IMAP and POP3.
type Webmail struct {
	// Enabled turns the webmail on (default false).
	Enabled bool `toml:"enabled"`
	// Listen is the plain HTTP listener, HOST:PORT (default 127.0.0.1:8080
	// when enabled; "" = off). Plain HTTP serves loopback clients only (a
	// reverse proxy on the host); anyone else is told to use HTTPS.
	Listen *string `toml:"listen"`
	// ListenTLS is the HTTPS listener; it needs [tls]. "" = off (default).
	ListenTLS string `toml:"listen_tls"`
	// SMTP is the relay composed mail is submitted to, HOST:PORT (default
	// 127.0.0.1:25, the local MTA). STARTTLS is used when offered.
	SMTP string `toml:"smtp"`
	// SMTPUser and SMTPPassword authenticate to the relay (AUTH PLAIN, only
	// over TLS or to loopback); empty: no authentication.
	SMTPUser     string `toml:"smtp_user"`
	SMTPPassword string `toml:"smtp_password"`
	// SMTPAllowPlaintext lets composed mail go to a relay that is not on
	// loopback without STARTTLS (default false: such a relay must offer it).
	SMTPAllowPlaintext bool `toml:"smtp_allow_plaintext"`
	// Admins may open the admin page (outage state, start/end an outage):
	// login names, e.g. ["postmaster@example.com"].
	Admins []string `toml:"admins"`
	// SessionIdle logs a user out after this long without a request (30m);
	// SessionMax after this long in any case (12h).
	SessionIdle Duration `toml:"session_idle"`
	SessionMax  Duration `toml:"session_max"`
	// MaxUpload bounds one composed message's form, attachments included (25MiB).
	MaxUpload Size `toml:"max_upload"`
}

// Webmail defaults.
const (
	DefaultWebmailListen      = "127.0.0.1:8080"
	DefaultWebmailSMTP        = "127.0.0.1:25"
	DefaultWebmailSessionIdle = 30 * time.Minute
	DefaultWebmailSessionMax  = 12 * time.Hour
	DefaultWebmailMaxUpload   = 25 << 20
)

// On reports whether the webmail runs: enabled, with at least one listener.
func (w Webmail) On() bool { return w.Enabled && (w.PlainAddr() != "" || w.ListenTLS != "") }

// PlainAddr is the plain HTTP listener's address, "" when off.
func (w Webmail) PlainAddr() string {
	if w.Listen == nil {
		return ""
	}
	return *w.Listen
}

func (w *Webmail) applyDefaults() {
	if w.Listen == nil {
		l := DefaultWebmailListen
		w.Listen = &l
	}
	if w.SMTP == "" {
		w.SMTP = DefaultWebmailSMTP
	}
	if w.SessionIdle == 0 {
		w.SessionIdle = Duration(DefaultWebmailSessionIdle)
	}
	if w.SessionMax == 0 {
		w.SessionMax = Duration(DefaultWebmailSessionMax)
	}
	if w.MaxUpload == 0 {
		w.MaxUpload = DefaultWebmailMaxUpload
	}
}

// validateWebmail checks [webmail].
func (c *Config) validateWebmail(errs *Errors) {
	w := c.Webmail
	if !w.Enabled {
		return
	}
	if w.PlainAddr() == "" && w.ListenTLS == "" {
		errs.add("webmail.listen", "is off and so is listen_tls", "set one, or enabled = false")
	}
	if a := w.PlainAddr(); a != "" {
		if err := checkTCPListen(a); err != nil {
			errs.add("webmail.listen", err.Error(), fmt.Sprintf("e.g. %q", DefaultWebmailListen))
		}
	}
	if a := w.ListenTLS; a != "" {
		if err := checkTCPListen(a); err != nil {
			errs.add("webmail.listen_tls", err.Error(), `e.g. "0.0.0.0:8443"`)
		} else if !c.TLS.Configured() {
			errs.add("webmail.listen_tls", "needs a certificate", "set [tls] cert_file and key_file")
		}
	}
	if network, _, err := SplitListen(w.SMTP); err != nil || network != "tcp" {
		errs.add("webmail.smtp", fmt.Sprintf("%q is not HOST:PORT", w.SMTP), fmt.Sprintf("e.g. %q", DefaultWebmailSMTP))
	}
	if (w.SMTPUser == "") != (w.SMTPPassword == "") {
		errs.add("webmail.smtp_password", "smtp_user and smtp_password go together", "set both, or neither")
	}
	for i, a := range w.Admins {
		if strings.TrimSpace(a) == "" {
			errs.add(fmt.Sprintf("webmail.admins.%d", i), "is empty", `e.g. "postmaster@example.com"`)
		}
	}
	if w.SessionIdle < Duration(time.Minute) {
		errs.add("webmail.session_idle", "must be at least 1m", "")
	}
	if w.SessionMax < w.SessionIdle {
		errs.add("webmail.session_max", "must be at least session_idle", "")
	}
	if w.MaxUpload < 1<<20 {
		errs.add("webmail.max_upload", "must be at least 1MiB", "")
	}
}

// webmailWarning is the warning of a plain listener off loopback.
func (c *Config) webmailWarning() []string {
	w := c.Webmail
	if !w.On() {
		return nil
	}
	if a := w.PlainAddr(); a != "" && !listensOnLoopback(a) {
		return []string{fmt.Sprintf("webmail.listen %s is not loopback: plain HTTP is served to loopback clients only, everyone else is told to use HTTPS (set listen_tls and [tls])", a)}
	}
	return nil
}

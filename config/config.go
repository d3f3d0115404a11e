// Package config reads Lifeline's one TOML configuration file.
//
// Decoding is strict: an unknown key is an error that names the key and its line,
// and every error in the file is reported at once (as Errors), so an administrator
// fixes a file in one pass rather than one error per restart.
package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/auth"
	"github.com/lifelinemail/lifeline/journal"
)

// Config is the whole file. Field comments name the TOML keys; the example file
// contrib/lifeline.example.toml documents each one for administrators.
type Config struct {
	Journal Journal  `toml:"journal"`
	Milter  Milter   `toml:"milter"`
	HTTP    HTTP     `toml:"http"`
	Mapping Mapping  `toml:"mapping"`
	Servers []Server `toml:"server"`
	Windows []Window `toml:"window"`
	Replay  Replay   `toml:"replay"`
	Notify  Notify   `toml:"notify"`
	Log     Log      `toml:"log"`

	MailboxAccess MailboxAccess `toml:"mailbox_access"`
	IMAP          MailListener  `toml:"imap"`
	POP3          MailListener  `toml:"pop3"`
	TLS           TLS           `toml:"tls"`
	Auth          Auth          `toml:"auth"`
	Webmail       Webmail       `toml:"webmail"`
	Ingest        Ingest        `toml:"ingest"`
	Policy        Policy        `toml:"policy"`
}

// Journal configures the message store.
type Journal struct {
	// Path is the journal directory. A relative path is taken relative to the
	// working directory, as Prometheus does with its storage path.
	Path string `toml:"path"`
	// Retention is how long messages are kept (default 90d). Messages with a
	// recipient still in custody are kept regardless.
	Retention Duration `toml:"retention"`
	// SweepInterval is how often the retention sweep runs (default 1h).
	SweepInterval Duration `toml:"sweep_interval"`
	// MinFree is the free disk space the journal keeps in reserve; below it
	// new messages are refused (default 256MiB).
	MinFree Size `toml:"min_free"`
}

// Milter configures the Postfix/Sendmail milter listener.
type Milter struct {
	// Listen is "tcp:HOST:PORT", "HOST:PORT" or "unix:/path" (default tcp:127.0.0.1:8894).
	Listen string `toml:"listen"`
	// OnJournalError is "accept" (default: mail flow never stops because of
	// Lifeline) or "tempfail" (the sender retries until the journal works).
	OnJournalError string `toml:"on_journal_error"`
	// ReadTimeout and WriteTimeout bound each milter protocol read and write.
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	// SpoolThreshold is how much of a message is kept in memory before it is
	// spooled to a temporary file (default 1MiB).
	SpoolThreshold Size `toml:"spool_threshold"`
	// SpoolDir holds spooled messages (default: the system temporary directory).
	SpoolDir string `toml:"spool_dir"`
	// ProgressInterval is how often the milter tells the MTA it is still working
	// while a slow journal write is in flight (default 5s).
	ProgressInterval Duration `toml:"progress_interval"`
}

// HTTP configures the listener for /metrics, /healthz and the admin API (/v1/).
type HTTP struct {
	Listen string `toml:"listen"` // default 127.0.0.1:9894
	// AdminToken is the bearer token the admin API requires. When it is empty
	// the token is read from AdminTokenFile, which `lifeline serve` creates
	// with a random token (mode 0600) if it does not exist, like a cookie file.
	AdminToken     string `toml:"admin_token"`
	AdminTokenFile string `toml:"admin_token_file"` // default: admin.token beside the journal directory
	// MetricsListen is a second listener, HOST:PORT, serving /metrics and
	// /healthz only (no admin API), which may be on an address a Prometheus
	// on another host reaches; "" = off (default).
	MetricsListen string `toml:"metrics_listen"`
}

// Mapping configures how envelope recipients map to continuity mailboxes.
type Mapping struct {
	// StripDetail removes a "+detail" extension (user+detail@dom → user@dom).
	StripDetail *bool `toml:"strip_detail"`
	// DetailDelimiter is the extension delimiter (default "+"), like Postfix's
	// recipient_delimiter; several characters mean any of them.
	DetailDelimiter string `toml:"detail_delimiter"`
	// AliasFile is an optional alias table in Postfix virtual(5) text format.
	AliasFile string `toml:"alias_file"`
}

// Server is one mailbox server (Dovecot, Exchange, …) and the domains it serves.
type Server struct {
	Name    string   `toml:"name"`
	Domains []string `toml:"domains"`
	// LMTP is where replay delivers ("tcp:HOST:PORT" or "unix:/path"); it also
	// identifies the server in Postfix's {rcpt_host} macro.
	LMTP string `toml:"lmtp"`
	// Interval is how often the probes run (default 10s); FailAfter consecutive
	// failed rounds declare an outage (default 3), RecoverAfter consecutive
	// good rounds end it (default 3). Detection takes Interval × FailAfter.
	Interval     Duration `toml:"interval"`
	FailAfter    int      `toml:"fail_after"`
	RecoverAfter int      `toml:"recover_after"`
	// Probes check the server; a round fails if any probe fails. Default: one
	// lmtp probe of the LMTP address.
	Probes []Probe `toml:"probe"`
}

// Probe is one health check of a mailbox server.
type Probe struct {
	Type         string   `toml:"type"`    // lmtp, smtp, imap, tcp or http
	Address      string   `toml:"address"` // tcp:HOST:PORT or unix:/path; lmtp defaults to the server's lmtp
	URL          string   `toml:"url"`     // http
	ExpectStatus int      `toml:"expect_status"`
	Canary       string   `toml:"canary"` // lmtp, smtp: an address whose RCPT TO must succeed
	User         string   `toml:"user"`   // imap: optional LOGIN
	Password     string   `toml:"password"`
	Timeout      Duration `toml:"timeout"` // default 5s
}

// Window is a maintenance window: the server is in outage from Start to End.
type Window struct {
	Server string    `toml:"server"`
	Start  time.Time `toml:"start"`
	End    time.Time `toml:"end"`
	Reason string    `toml:"reason"`
}

// Replay configures how custody mail is given back after an outage.
type Replay struct {
	// Concurrency is the parallel connections per server, default 10: a
	// mailbox server's LMTP delivery waits on its disk per message, so
	// parallel transactions are what make its throughput (Dovecot on 2
	// cores, replaybench, 3,000 messages of 4 KiB, against Postfix's own
	// delivery at its default 20 per destination: 0.93 at 4, 1.21 at 10, 1.11
	// at 16). Half of Postfix's limit leaves the recovering server room for
	// the live mail Postfix delivers at the same time; lower it for a server
	// that limits connections per client address (Exchange's receive
	// connectors: 20 by default).
	Concurrency int      `toml:"concurrency"`
	Rate        float64  `toml:"rate"`          // messages/s per server, 0 = unlimited
	RetryMin    Duration `toml:"retry_min"`     // first retry delay (default 30s), doubling
	RetryMax    Duration `toml:"retry_max"`     // longest retry delay (default 30m)
	GiveUpAfter Duration `toml:"give_up_after"` // temporary failures become permanent after this long of retrying (default 5d)
	Mode        string   `toml:"mode"`          // "lmtp" (default) or "smtp" (re-inject into the MTA)
	Reinject    string   `toml:"reinject"`      // smtp mode: the MTA's SMTP port without the milter
	DSN         *bool    `toml:"dsn"`           // mail a DSN to the sender on permanent failure (default true)
}

// Notify configures operator notifications.
type Notify struct {
	Webhook    string `toml:"webhook"`    // URL receiving a JSON POST per event
	Postmaster string `toml:"postmaster"` // address mailed per event
	From       string `toml:"from"`       // sender of notification mail
	Submit     string `toml:"submit"`     // where notification mail and DSNs go (SMTP), tcp:HOST:PORT
}

// Log configures log/slog output on standard error.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// MailboxAccess decides when users may read their continuity mailbox (IMAP,
// POP3, later webmail).
type MailboxAccess struct {
	// Serve is "outage" (default): a login succeeds only while the mailbox
	// server of the user's domain is in outage, so that users keep using their
	// usual server otherwise; or "always": Lifeline is also a read-only archive.
	Serve string `toml:"serve"`
}

// Serve modes.
const (
	ServeOutage = "outage"
	ServeAlways = "always"
)

// MailListener configures the IMAP or the POP3 server.
type MailListener struct {
	// Enabled turns the server on (default true).
	Enabled *bool `toml:"enabled"`
	// Listen is the plain listener, HOST:PORT, with STARTTLS/STLS when [tls]
	// is set. An explicit "" turns it off (implicit TLS only); absent means
	// the default. A pointer, to tell the two apart.
	Listen *string `toml:"listen"`
	// ListenTLS is the implicit-TLS listener (RFC 8314), "" = off (default).
	ListenTLS string `toml:"listen_tls"`
	// IdleTimeout ends a session that sends nothing for this long (defaults
	// follow the RFCs' autologout timers: 30m for IMAP, 10m for POP3).
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxConnections bounds the connections open at once (default 1000), and
	// MaxConnectionsPerClient those from one client address (default 20 for
	// IMAP, 10 for POP3; IPv6 per /64; loopback and unix clients count only
	// toward the total). 0 means the default, -1 no limit.
	MaxConnections          int `toml:"max_connections"`
	MaxConnectionsPerClient int `toml:"max_connections_per_client"`
}

// On reports whether the server runs: enabled, with at least one listener.
func (l MailListener) On() bool {
	return l.Enabled != nil && *l.Enabled && (l.PlainAddr() != "" || l.ListenTLS != "")
}

// PlainAddr is the plain listener's address, "" when off.
func (l MailListener) PlainAddr() string {
	if l.Listen == nil {
		return ""
	}
	return *l.Listen
}

// TLS is the certificate of the IMAP and POP3 servers (PEM files). It is
// re-read on SIGHUP.
type TLS struct {
	CertFile string `toml:"cert_file"` // the certificate chain, leaf first
	KeyFile  string `toml:"key_file"`
}

// Configured reports whether a certificate is set.
func (t TLS) Configured() bool { return t.CertFile != "" || t.KeyFile != "" }

// Auth configures the logins of the continuity mailbox.
type Auth struct {
	// PasswdFile is a Dovecot-style passwd-file (user:{SCHEME}hash). Default:
	// "users" in the directory of the configuration file, as Dovecot keeps
	// /etc/dovecot/users beside dovecot.conf.
	PasswdFile string `toml:"passwd_file"`
	// PerAddress and PerUser limit failed logins per client address (IPv6 per
	// /64) and per user name; defaults are auth.DefaultAddrPolicy and
	// auth.DefaultUserPolicy.
	PerAddress LoginLimit `toml:"per_address"`
	PerUser    LoginLimit `toml:"per_user"`
}

// LoginLimit is one login rate-limit policy (auth.LimitPolicy).
type LoginLimit struct {
	// FreeFailures is how many failures cost no delay. A pointer because 0
	// (delay from the first failure) is a setting, not "use the default".
	FreeFailures *int     `toml:"free_failures"`
	BaseDelay    Duration `toml:"base_delay"`   // after the free failures, doubling per failure
	MaxDelay     Duration `toml:"max_delay"`    // the doubling stops here
	MaxFailures  int      `toml:"max_failures"` // this many failures lock the key out
	Window       Duration `toml:"window"`       // a count is forgotten after this long without a failure
	Lockout      Duration `toml:"lockout"`      // how long a locked-out key is refused
}

// Policy returns the limit as the auth package takes it.
func (l LoginLimit) Policy() auth.LimitPolicy {
	p := auth.LimitPolicy{BaseDelay: l.BaseDelay.D(), MaxDelay: l.MaxDelay.D(), MaxFailures: l.MaxFailures,
		Window: l.Window.D(), Lockout: l.Lockout.D()}
	if l.FreeFailures != nil {
		p.FreeFailures = *l.FreeFailures
	}
	return p
}

func (l *LoginLimit) applyDefaults(d auth.LimitPolicy) {
	if l.FreeFailures == nil {
		n := d.FreeFailures
		l.FreeFailures = &n
	}
	if l.BaseDelay == 0 {
		l.BaseDelay = Duration(d.BaseDelay)
	}
	if l.MaxDelay == 0 {
		l.MaxDelay = Duration(max(d.MaxDelay, l.BaseDelay.D()))
	}
	if l.MaxFailures == 0 {
		l.MaxFailures = d.MaxFailures
	}
	if l.Window == 0 {
		l.Window = Duration(d.Window)
	}
	if l.Lockout == 0 {
		l.Lockout = Duration(d.Lockout)
	}
}

func (l LoginLimit) validate(key string, errs *Errors) {
	if *l.FreeFailures < 0 {
		errs.add(key+".free_failures", "must not be negative", "")
	}
	if l.MaxFailures < 1 {
		errs.add(key+".max_failures", "must be at least 1", "")
	}
	if l.BaseDelay < 0 || l.MaxDelay < l.BaseDelay {
		errs.add(key+".max_delay", "must be at least base_delay", "")
	}
	// A client waits out the delay inside its login command; past a few
	// minutes clients time out and retry, which only adds failures.
	if l.MaxDelay > Duration(5*time.Minute) {
		errs.add(key+".max_delay", "must be at most 5m", "clients time out waiting longer")
	}
	if l.Window < Duration(time.Second) {
		errs.add(key+".window", "must be at least 1s", "")
	}
	if l.Lockout < Duration(time.Second) {
		errs.add(key+".lockout", "must be at least 1s", "")
	}
}

// Defaults: a loopback-only single host, so the example file runs at once.
const (
	DefaultMilterListen = "tcp:127.0.0.1:8894"
	DefaultHTTPListen   = "127.0.0.1:9894"
	DefaultIMAPListen   = "127.0.0.1:1143"
	DefaultPOP3Listen   = "127.0.0.1:1110"

	// The autologout timers: RFC 9051 §5.4 (IMAP, at least 30 minutes) and
	// RFC 1939 §3 (POP3, at least 10 minutes).
	DefaultIMAPIdleTimeout = 30 * time.Minute
	DefaultPOP3IdleTimeout = 10 * time.Minute

	// DefaultPasswdFile is the passwd-file's name in the config file's directory.
	DefaultPasswdFile = "users"

	// Probe defaults: 10 s × 3 failures = 30 s to declare an outage. One lost
	// probe (a Dovecot reload, a GC pause) must not start one, and during the
	// detection time nothing is lost: Postfix queues and retries on its own.
	DefaultProbeInterval = 10 * time.Second
	DefaultFailAfter     = 3
	DefaultRecoverAfter  = 3
	DefaultProbeTimeout  = 5 * time.Second
)

// applyDefaults fills in what the file leaves out; dir is the directory of
// the configuration file, where the passwd-file is by default.
func (c *Config) applyDefaults(dir string) {
	if c.Journal.Retention == 0 {
		c.Journal.Retention = Duration(journal.DefaultRetention)
	}
	if c.Journal.SweepInterval == 0 {
		c.Journal.SweepInterval = Duration(time.Hour)
	}
	if c.Journal.MinFree == 0 {
		c.Journal.MinFree = 256 << 20
	}
	if c.Milter.Listen == "" {
		c.Milter.Listen = DefaultMilterListen
	}
	if c.Milter.OnJournalError == "" {
		c.Milter.OnJournalError = "accept"
	}
	if c.Milter.ReadTimeout == 0 {
		c.Milter.ReadTimeout = Duration(5 * time.Minute)
	}
	if c.Milter.WriteTimeout == 0 {
		c.Milter.WriteTimeout = Duration(time.Minute)
	}
	if c.Milter.SpoolThreshold == 0 {
		c.Milter.SpoolThreshold = 1 << 20
	}
	if c.Milter.ProgressInterval == 0 {
		c.Milter.ProgressInterval = Duration(5 * time.Second)
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if c.Mapping.StripDetail == nil {
		t := true
		c.Mapping.StripDetail = &t
	}
	if c.Mapping.DetailDelimiter == "" {
		c.Mapping.DetailDelimiter = "+"
	}
	if c.HTTP.AdminTokenFile == "" && c.HTTP.AdminToken == "" && c.Journal.Path != "" {
		c.HTTP.AdminTokenFile = filepath.Join(filepath.Dir(filepath.Clean(c.Journal.Path)), "admin.token")
	}
	for i := range c.Servers {
		s := &c.Servers[i]
		if s.Interval == 0 {
			s.Interval = Duration(DefaultProbeInterval)
		}
		if s.FailAfter == 0 {
			s.FailAfter = DefaultFailAfter
		}
		if s.RecoverAfter == 0 {
			s.RecoverAfter = DefaultRecoverAfter
		}
		if len(s.Probes) == 0 && s.LMTP != "" {
			s.Probes = []Probe{{Type: "lmtp"}}
		}
		for j := range s.Probes {
			p := &s.Probes[j]
			if p.Type == "lmtp" && p.Address == "" {
				p.Address = s.LMTP
			}
			if p.Type == "http" && p.ExpectStatus == 0 {
				p.ExpectStatus = 200
			}
			if p.Timeout == 0 {
				p.Timeout = Duration(DefaultProbeTimeout)
			}
		}
	}
	r := &c.Replay
	if r.Concurrency == 0 {
		r.Concurrency = 10
	}
	if r.RetryMin == 0 {
		r.RetryMin = Duration(30 * time.Second)
	}
	if r.RetryMax == 0 {
		r.RetryMax = Duration(30 * time.Minute)
	}
	if r.GiveUpAfter == 0 {
		r.GiveUpAfter = Duration(5 * 24 * time.Hour)
	}
	if r.Mode == "" {
		r.Mode = "lmtp"
	}
	if r.DSN == nil {
		t := true
		r.DSN = &t
	}
	if c.Notify.From == "" {
		c.Notify.From = "lifeline@localhost"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.MailboxAccess.Serve == "" {
		c.MailboxAccess.Serve = ServeOutage
	}
	c.IMAP.applyDefaults(DefaultIMAPListen, DefaultIMAPIdleTimeout)
	c.POP3.applyDefaults(DefaultPOP3Listen, DefaultPOP3IdleTimeout)
	if c.Auth.PasswdFile == "" {
		c.Auth.PasswdFile = filepath.Join(dir, DefaultPasswdFile)
	}
	c.Auth.PerAddress.applyDefaults(auth.DefaultAddrPolicy)
	c.Auth.PerUser.applyDefaults(auth.DefaultUserPolicy)
	c.Webmail.applyDefaults()
	c.applyIngestDefaults()
}

func (l *MailListener) applyDefaults(listen string, idle time.Duration) {
	if l.Enabled == nil {
		t := true
		l.Enabled = &t
	}
	if l.Listen == nil {
		l.Listen = &listen
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = Duration(idle)
	}
}

// validateMailAccess checks [mailbox_access], [imap], [pop3], [tls] and [auth].
func (c *Config) validateMailAccess(errs *Errors) {
	switch c.MailboxAccess.Serve {
	case ServeOutage, ServeAlways:
	default:
		errs.add("mailbox_access.serve", fmt.Sprintf("is %q", c.MailboxAccess.Serve), `"outage" or "always"`)
	}
	if c.TLS.CertFile != "" && c.TLS.KeyFile == "" {
		errs.add("tls.key_file", "is required with cert_file", `e.g. key_file = "/etc/lifeline/tls/key.pem"`)
	}
	if c.TLS.KeyFile != "" && c.TLS.CertFile == "" {
		errs.add("tls.cert_file", "is required with key_file", `e.g. cert_file = "/etc/lifeline/tls/fullchain.pem"`)
	}
	for _, s := range []struct {
		name string
		l    MailListener
		hint string
	}{{"imap", c.IMAP, "127.0.0.1:1143"}, {"pop3", c.POP3, "127.0.0.1:1110"}} {
		if !*s.l.Enabled {
			continue
		}
		if s.l.PlainAddr() == "" && s.l.ListenTLS == "" {
			errs.add(s.name+".listen", "is off and so is listen_tls", "set one, or enabled = false")
		}
		if a := s.l.PlainAddr(); a != "" {
			if err := checkTCPListen(a); err != nil {
				errs.add(s.name+".listen", err.Error(), fmt.Sprintf("e.g. %q", s.hint))
			}
		}
		if a := s.l.ListenTLS; a != "" {
			if err := checkTCPListen(a); err != nil {
				errs.add(s.name+".listen_tls", err.Error(), "")
			} else if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
				errs.add(s.name+".listen_tls", "needs a certificate", "set [tls] cert_file and key_file")
			}
		}
		if s.l.IdleTimeout < Duration(10*time.Second) {
			errs.add(s.name+".idle_timeout", "must be at least 10s", "")
		}
		for _, n := range []struct {
			key string
			v   int
		}{{"max_connections", s.l.MaxConnections}, {"max_connections_per_client", s.l.MaxConnectionsPerClient}} {
			if n.v < -1 {
				errs.add(s.name+"."+n.key, "must be positive, 0 (the default) or -1 (no limit)", "")
			}
		}
	}
	c.Auth.PerAddress.validate("auth.per_address", errs)
	c.Auth.PerUser.validate("auth.per_user", errs)
	c.checkDuplicateListeners(errs)
}

// checkTCPListen accepts "HOST:PORT" or "tcp:HOST:PORT": the IMAP and POP3
// servers need the client's IP address for loopback checks and rate limits,
// which a unix socket does not give.
func checkTCPListen(s string) error {
	network, _, err := SplitListen(s)
	if err != nil {
		return err
	}
	if network != "tcp" {
		return fmt.Errorf("%q is not HOST:PORT (unix sockets are not supported here)", s)
	}
	return nil
}

// checkDuplicateListeners reports two listeners on one TCP address, which
// would otherwise fail only when serve binds the second.
func (c *Config) checkDuplicateListeners(errs *Errors) {
	type listener struct{ key, addr string }
	ls := []listener{{"milter.listen", c.Milter.Listen}, {"http.listen", c.HTTP.Listen}}
	for _, s := range []struct {
		name string
		l    MailListener
	}{{"imap", c.IMAP}, {"pop3", c.POP3}} {
		if *s.l.Enabled {
			ls = append(ls, listener{s.name + ".listen", s.l.PlainAddr()}, listener{s.name + ".listen_tls", s.l.ListenTLS})
		}
	}
	if c.Webmail.Enabled {
		ls = append(ls, listener{"webmail.listen", c.Webmail.PlainAddr()}, listener{"webmail.listen_tls", c.Webmail.ListenTLS})
	}
	for _, l := range c.ingestListeners() {
		ls = append(ls, listener{l.key, l.addr})
	}
	seen := map[string]string{}
	for _, l := range ls {
		network, addr, err := SplitListen(l.addr)
		if l.addr == "" || err != nil || network != "tcp" {
			continue
		}
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			continue // a random port each
		}
		if other, ok := seen[addr]; ok {
			errs.add(l.key, fmt.Sprintf("%s is already %s", addr, other), "")
			continue
		}
		seen[addr] = l.key
	}
}

// Warnings lists what is allowed but probably not meant; check-config prints
// them and serve logs them.
func (c *Config) Warnings() []string {
	var out []string
	for _, s := range []struct {
		name, proto string
		l           MailListener
	}{{"imap", "IMAP", c.IMAP}, {"pop3", "POP3", c.POP3}} {
		if !s.l.On() || c.TLS.Configured() {
			continue
		}
		if a := s.l.PlainAddr(); a != "" && !listensOnLoopback(a) {
			out = append(out, fmt.Sprintf("%s.listen %s is not loopback and [tls] has no certificate: %s refuses plaintext logins from other hosts, so nobody can log in from there (set [tls] cert_file and key_file)",
				s.name, a, s.proto))
		}
	}
	out = append(out, c.webmailWarning()...)
	// The mail listeners have no authentication: whoever reaches them can
	// journal mail, or put it in custody, which replay later delivers to the
	// mailbox server past the MTA's own checks.
	for _, l := range []struct{ key, value, what string }{
		{"milter.listen", c.Milter.Listen, "journal mail"},
		{"ingest.journal_listen", c.Ingest.JournalListen, "journal mail"},
		{"ingest.custody_listen", c.Ingest.CustodyListen, "put mail in custody, which replay delivers past the MTA's checks"},
		{"policy.listen", c.Policy.Listen, "ask which recipients are known"},
	} {
		if network, addr, err := SplitListen(l.value); l.value != "" && err == nil && network == "tcp" && !listensOnLoopback(addr) {
			out = append(out, fmt.Sprintf("%s %s is not loopback and has no authentication: anyone who reaches it can %s (keep it on loopback or a unix socket, or restrict it with a firewall)",
				l.key, addr, l.what))
		}
	}
	if c.Replay.Mode == "lmtp" {
		// Allowed (a server kept for the journal and the continuity
		// mailbox only), but replay has nowhere to deliver its custody.
		for _, s := range c.Servers {
			if s.LMTP == "" {
				out = append(out, fmt.Sprintf("server %q has no lmtp address and replay.mode is lmtp: replay cannot deliver to it, so Lifeline never takes custody of its recipients (the MTA keeps them during an outage; set lmtp, or replay.mode = \"smtp\")", s.Name))
			}
		}
	}
	return out
}

func listensOnLoopback(s string) bool {
	_, addr, err := SplitListen(s)
	if err != nil {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopback(host)
}

// validate appends every semantic error to errs.
func (c *Config) validate(errs *Errors) {
	if c.Journal.Path == "" {
		errs.add("journal.path", "is required", `e.g. path = "/var/lib/lifeline/journal"`)
	}
	if c.Journal.Retention < Duration(time.Hour) {
		errs.add("journal.retention", "must be at least 1h", `e.g. retention = "90d"`)
	}
	if c.Journal.SweepInterval < Duration(time.Minute) {
		errs.add("journal.sweep_interval", "must be at least 1m", "")
	}
	if _, _, err := SplitListen(c.Milter.Listen); err != nil {
		errs.add("milter.listen", err.Error(), `"tcp:127.0.0.1:8894" or "unix:/run/lifeline/milter.sock"`)
	}
	switch c.Milter.OnJournalError {
	case "accept", "tempfail":
	default:
		errs.add("milter.on_journal_error", fmt.Sprintf("is %q", c.Milter.OnJournalError), `"accept" or "tempfail"`)
	}
	if c.Milter.SpoolThreshold < 0 {
		errs.add("milter.spool_threshold", "must not be negative", "")
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"milter.read_timeout", c.Milter.ReadTimeout}, {"milter.write_timeout", c.Milter.WriteTimeout}, {"milter.progress_interval", c.Milter.ProgressInterval}} {
		if d.v < Duration(100*time.Millisecond) {
			errs.add(d.key, "must be at least 100ms", "")
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTP.MetricsListen); c.HTTP.MetricsListen != "" && err != nil {
		errs.add("http.metrics_listen", fmt.Sprintf("%q is not HOST:PORT", c.HTTP.MetricsListen), `e.g. "10.0.0.7:9895"`)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		errs.add("http.listen", fmt.Sprintf("%q is not HOST:PORT", c.HTTP.Listen), `e.g. "127.0.0.1:9894"`)
	}
	if c.Mapping.DetailDelimiter != "" && strings.ContainsAny(c.Mapping.DetailDelimiter, "@ \t") {
		errs.add("mapping.detail_delimiter", "must not contain '@' or blanks", "")
	}
	names := map[string]bool{}
	domains := map[string]string{}
	for i, s := range c.Servers {
		key := fmt.Sprintf("server.%d", i)
		if s.Name == "" {
			errs.add(key+".name", "is required", "")
		} else if names[s.Name] {
			errs.add(key+".name", fmt.Sprintf("%q is declared twice", s.Name), "")
		}
		names[s.Name] = true
		if len(s.Domains) == 0 {
			errs.add(key+".domains", "needs at least one domain", `e.g. domains = ["example.com"]`)
		}
		for _, d := range s.Domains {
			ld := strings.ToLower(strings.TrimSpace(d))
			if ld == "" || strings.ContainsAny(ld, "@ \t") {
				errs.add(key+".domains", fmt.Sprintf("%q is not a domain", d), "")
				continue
			}
			if other, ok := domains[ld]; ok {
				errs.add(key+".domains", fmt.Sprintf("%q is already served by %q", d, other), "")
			}
			domains[ld] = s.Name
		}
		if s.LMTP != "" {
			if _, _, err := SplitListen(s.LMTP); err != nil {
				errs.add(key+".lmtp", err.Error(), `"tcp:127.0.0.1:24" or "unix:/var/run/dovecot/lmtp"`)
			}
		}
		if s.Interval < Duration(100*time.Millisecond) {
			errs.add(key+".interval", "must be at least 100ms", `e.g. interval = "10s"`)
		}
		if s.FailAfter < 1 {
			errs.add(key+".fail_after", "must be at least 1", "")
		}
		if s.RecoverAfter < 1 {
			errs.add(key+".recover_after", "must be at least 1", "")
		}
		for j, p := range s.Probes {
			pk := fmt.Sprintf("%s.probe.%d", key, j)
			switch p.Type {
			case "lmtp", "smtp", "imap", "tcp":
				if _, _, err := SplitListen(p.Address); err != nil {
					errs.add(pk+".address", err.Error(), `"tcp:HOST:PORT" or "unix:/path"`)
				}
			case "http":
				if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					errs.add(pk+".url", fmt.Sprintf("%q is not an http(s) URL", p.URL), "")
				}
			default:
				errs.add(pk+".type", fmt.Sprintf("is %q", p.Type), "lmtp, smtp, imap, tcp or http")
			}
			if p.Password != "" && p.User == "" {
				errs.add(pk+".user", "is required with password", "")
			}
			if p.Timeout < Duration(10*time.Millisecond) {
				errs.add(pk+".timeout", "must be at least 10ms", "")
			}
		}
	}
	for i, w := range c.Windows {
		key := fmt.Sprintf("window.%d", i)
		if !names[w.Server] {
			errs.add(key+".server", fmt.Sprintf("%q is not a declared [[server]]", w.Server), "")
		}
		if w.Start.IsZero() || w.End.IsZero() || !w.End.After(w.Start) {
			errs.add(key, "needs start and end, end after start", "e.g. start = 2026-12-01T02:00:00Z")
		}
	}
	r := c.Replay
	if r.Concurrency < 1 || r.Concurrency > 256 {
		errs.add("replay.concurrency", "must be 1 to 256", "")
	}
	if r.Rate < 0 {
		errs.add("replay.rate", "must not be negative", "0 means unlimited")
	}
	if r.RetryMin < Duration(time.Second) || r.RetryMax < r.RetryMin {
		errs.add("replay.retry_min", "must be at least 1s and at most retry_max", "")
	}
	if r.GiveUpAfter < r.RetryMax {
		errs.add("replay.give_up_after", "must be at least retry_max", "")
	}
	switch r.Mode {
	case "lmtp":
	case "smtp":
		if _, _, err := SplitListen(r.Reinject); err != nil {
			errs.add("replay.reinject", "smtp mode needs the MTA's milter-free SMTP address: "+err.Error(), `e.g. "tcp:127.0.0.1:10026"`)
		}
	default:
		errs.add("replay.mode", fmt.Sprintf("is %q", r.Mode), `"lmtp" or "smtp"`)
	}
	if c.Notify.Webhook != "" {
		if u, err := url.Parse(c.Notify.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.add("notify.webhook", fmt.Sprintf("%q is not an http(s) URL", c.Notify.Webhook), "")
		}
	}
	needSubmit := c.Notify.Postmaster != "" || (*c.Replay.DSN && c.Notify.Submit != "")
	if needSubmit {
		if _, _, err := SplitListen(c.Notify.Submit); err != nil {
			errs.add("notify.submit", "mail notifications need an SMTP address: "+err.Error(), `e.g. "tcp:127.0.0.1:10026"`)
		}
	}
	if c.HTTP.AdminToken != "" || c.HTTP.AdminTokenFile != "" {
		if host, _, err := net.SplitHostPort(c.HTTP.Listen); err == nil && !isLoopback(host) {
			errs.add("http.listen", "the admin API needs a loopback address (it has no TLS)", `"127.0.0.1:9894"`)
		}
	}
	c.validateMailAccess(errs)
	c.validateWebmail(errs)
	c.validateIngest(errs)
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		errs.add("log.level", fmt.Sprintf("is %q", c.Log.Level), "debug, info, warn or error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs.add("log.format", fmt.Sprintf("is %q", c.Log.Format), `"text" or "json"`)
	}
}

// SplitListen parses a listener or peer address: "tcp:HOST:PORT", "unix:/path",
// or a bare "HOST:PORT" (tcp). It returns the network and address for net.Listen.
func SplitListen(s string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("unix socket path %q must be absolute", p)
		}
		return "unix", p, nil
	case strings.HasPrefix(s, "tcp:"), strings.HasPrefix(s, "inet:"):
		s = s[strings.IndexByte(s, ':')+1:]
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("%q is not tcp:HOST:PORT or unix:/path", s)
	}
	return "tcp", s, nil
}

// isLoopback reports whether host names a loopback address. A host name other
// than localhost is not trusted to resolve to one.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

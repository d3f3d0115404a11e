// Package config reads Lifeline's one TOML configuration file.
//
// Decoding is strict: an unknown key is an error that names the key and its line,
// and every error in the file is reported at once (as Errors), so an administrator
// fixes a file in one pass rather than one error per restart.
package config

import (
	"fmt"
	"net"
	"strings"
	"time"

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
	Log     Log      `toml:"log"`
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

// HTTP configures the listener for /metrics and /healthz.
type HTTP struct {
	Listen string `toml:"listen"` // default 127.0.0.1:9894
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
}

// Log configures log/slog output on standard error.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// Defaults: a loopback-only single host, so the example file runs at once.
const (
	DefaultMilterListen = "tcp:127.0.0.1:8894"
	DefaultHTTPListen   = "127.0.0.1:9894"
)

func (c *Config) applyDefaults() {
	if c.Journal.Retention == 0 {
		c.Journal.Retention = Duration(journal.DefaultRetention)
	}
	if c.Journal.SweepInterval == 0 {
		c.Journal.SweepInterval = Duration(time.Hour)
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
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
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
	}
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

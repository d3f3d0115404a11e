package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Ingest configures the LMTP listeners an MTA without a milter interface
// (Exim) delivers to: the journal listener stores a copy of what the MTA hands
// it (state mta, for an `unseen` router), the custody listener takes custody
// (state custody) while the mailbox server is down. Both are off by default.
type Ingest struct {
	// JournalListen is "tcp:HOST:PORT" or "unix:/path"; "" = off (default).
	JournalListen string `toml:"journal_listen"`
	// CustodyListen is "tcp:HOST:PORT" or "unix:/path"; "" = off (default).
	CustodyListen string `toml:"custody_listen"`
	// MaxMessageSize is the largest message taken (default 64MiB); larger
	// ones are refused with 552 (RFC 5321 §4.5.3.1.10).
	MaxMessageSize Size `toml:"max_message_size"`
	// MaxRecipients bounds RCPT TO per transaction (default 1000); RFC 5321
	// §4.5.3.1.8 asks for at least 100.
	MaxRecipients int `toml:"max_recipients"`
	// ReadTimeout and WriteTimeout bound each read and write (default 5m,
	// RFC 5321 §4.5.3.2's command and data-block timeouts).
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
}

// On reports whether any ingest listener is configured.
func (i Ingest) On() bool { return i.JournalListen != "" || i.CustodyListen != "" }

// Policy configures the policy service: Postfix's SMTPD access-policy
// delegation protocol and a line protocol for Exim's ${readsocket}, on one
// listener. Off by default.
type Policy struct {
	// Listen is "tcp:HOST:PORT" or "unix:/path"; "" = off (default).
	Listen string `toml:"listen"`
	// RejectUnknown: during an outage, answer 550 for recipients that are
	// not known mailboxes, so that no junk is taken into custody (default true).
	RejectUnknown *bool `toml:"reject_unknown"`
	// KnownRecipientsFile is an optional list of extra known addresses, one
	// per line, beside the passwd-file's accounts and the alias map.
	KnownRecipientsFile string `toml:"known_recipients_file"`
	// DeferAbove is the fill level of the journal's filesystem above which
	// custody is refused with DEFER_IF_PERMIT (default "95%").
	DeferAbove Percent `toml:"defer_above"`
	// Timeout is the per-connection idle timeout (default 60s).
	Timeout Duration `toml:"timeout"`
}

// Percent is a percentage written as "95%" or a number (95).
type Percent float64

func (p *Percent) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(b)), "%"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("invalid percentage %q (use e.g. \"95%%\")", string(b))
	}
	*p = Percent(v)
	return nil
}

func (p Percent) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(p), 'f', -1, 64) + "%"), nil
}

// Ingest and policy defaults.
const (
	DefaultIngestMaxMessageSize = 64 << 20
	DefaultIngestMaxRecipients  = 1000
	DefaultIngestTimeout        = 5 * time.Minute
	DefaultPolicyDeferAbove     = 95
	DefaultPolicyTimeout        = 60 * time.Second
)

func (c *Config) applyIngestDefaults() {
	i := &c.Ingest
	if i.MaxMessageSize == 0 {
		i.MaxMessageSize = DefaultIngestMaxMessageSize
	}
	if i.MaxRecipients == 0 {
		i.MaxRecipients = DefaultIngestMaxRecipients
	}
	if i.ReadTimeout == 0 {
		i.ReadTimeout = Duration(DefaultIngestTimeout)
	}
	if i.WriteTimeout == 0 {
		i.WriteTimeout = Duration(DefaultIngestTimeout)
	}
	p := &c.Policy
	if p.RejectUnknown == nil {
		t := true
		p.RejectUnknown = &t
	}
	if p.DeferAbove == 0 {
		p.DeferAbove = DefaultPolicyDeferAbove
	}
	if p.Timeout == 0 {
		p.Timeout = Duration(DefaultPolicyTimeout)
	}
}

// validateIngest checks [ingest] and [policy].
func (c *Config) validateIngest(errs *Errors) {
	i := c.Ingest
	for _, l := range []struct{ key, addr string }{
		{"ingest.journal_listen", i.JournalListen}, {"ingest.custody_listen", i.CustodyListen}, {"policy.listen", c.Policy.Listen},
	} {
		if l.addr == "" {
			continue
		}
		if _, _, err := SplitListen(l.addr); err != nil {
			errs.add(l.key, err.Error(), `"tcp:127.0.0.1:PORT" or "unix:/run/lifeline/NAME.sock"`)
		}
	}
	if i.JournalListen != "" && i.JournalListen == i.CustodyListen {
		errs.add("ingest.custody_listen", "is the same address as journal_listen", "the two listeners need two addresses")
	}
	if i.MaxMessageSize < 1<<10 {
		errs.add("ingest.max_message_size", "must be at least 1KiB", `e.g. "64MiB"`)
	}
	// RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
	if i.MaxRecipients < 100 {
		errs.add("ingest.max_recipients", "must be at least 100", "RFC 5321 §4.5.3.1.8")
	}
	if i.ReadTimeout < Duration(time.Second) {
		errs.add("ingest.read_timeout", "must be at least 1s", "")
	}
	if i.WriteTimeout < Duration(time.Second) {
		errs.add("ingest.write_timeout", "must be at least 1s", "")
	}
	p := c.Policy
	if p.DeferAbove <= 0 || p.DeferAbove > 100 {
		errs.add("policy.defer_above", "must be above 0% and at most 100%", `e.g. "95%"; "100%" only refuses when the disk is full`)
	}
	if p.Timeout < Duration(time.Second) {
		errs.add("policy.timeout", "must be at least 1s", "")
	}
}

// ingestListeners are the TCP listeners of [ingest] and [policy], for the
// duplicate check.
func (c *Config) ingestListeners() []struct{ key, addr string } {
	return []struct{ key, addr string }{
		{"ingest.journal_listen", c.Ingest.JournalListen},
		{"ingest.custody_listen", c.Ingest.CustodyListen},
		{"policy.listen", c.Policy.Listen},
	}
}

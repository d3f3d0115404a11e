// Package serving decides whether Lifeline serves a user's continuity mailbox
// now (the IMAP and POP3 servers' ServingChecker).
//
// In "outage" mode (the default, DESIGN.md) a user reads their mail from
// Lifeline only while the mailbox server of their domain is in outage: the
// rest of the time their usual server has the same mail and more (what they
// sent, moved, flagged), and two places to read mail would confuse them. In
// "always" mode Lifeline also serves as a read-only archive of the last
// retention period.
package serving

import (
	"fmt"
	"strings"
)

// Outage tells whether a mailbox server is in outage (health.Monitor).
type Outage interface {
	InOutage(server string) bool
}

// Servers maps a continuity mailbox to its mailbox server (addrmap.Map).
type Servers interface {
	ServerOf(mailbox string) (server string, ok bool)
}

// Texts a refused user hears (after "NO" or "-ERR"). They tell the user what
// to do rather than what Lifeline is.
const (
	TextServerUp = "Lifeline serves your mail only while your mailbox server is down; it is up: use your usual mail server"
	TextNoServer = "Lifeline serves mail only during an outage of the mailbox server of your address, and no mailbox server is configured for it"
)

// Checker implements the servers' ServingChecker. It is safe for concurrent
// use and cheap: the outage state is read without a lock.
type Checker struct {
	always  bool
	servers Servers
	outage  Outage
}

// New returns a Checker for mode "outage" or "always" (config.ServeOutage,
// config.ServeAlways). servers and outage are used in "outage" mode only.
func New(mode string, servers Servers, outage Outage) (*Checker, error) {
	switch mode {
	case "always":
		return &Checker{always: true}, nil
	case "outage":
		if servers == nil || outage == nil {
			return nil, fmt.Errorf("serving: outage mode needs the address map and the outage state")
		}
		return &Checker{servers: servers, outage: outage}, nil
	}
	return nil, fmt.Errorf("serving: mode %q is not \"outage\" or \"always\"", mode)
}

// Serves reports whether mailbox (the canonical login name, an address) is
// served now; when it is not, text says why, for the client.
func (c *Checker) Serves(mailbox string) (ok bool, text string) {
	if c.always {
		return true, ""
	}
	server, found := c.servers.ServerOf(strings.ToLower(mailbox))
	if !found {
		return false, TextNoServer
	}
	if !c.outage.InOutage(server) {
		return false, TextServerUp
	}
	return true, ""
}

// Package addrmap maps an envelope recipient to the continuity mailboxes it
// belongs to and to the mailbox server that serves them.
//
// The milter sees recipients before Postfix expands aliases, so Lifeline does
// what Postfix's virtual(5) expansion would: lower-case, look the address up in
// an optional alias table (Postfix virtual text format, expanded recursively),
// strip a "+detail" extension, and keep only domains a configured mailbox
// server serves. Mail for other domains is journaled without a mailbox.
package addrmap

import (
	"sort"
	"strings"
)

// Server is a mailbox server: its name, the domains it serves and the LMTP
// address replay delivers to.
type Server struct {
	Name    string
	Domains []string
	LMTP    string
}

// Options configures a Map.
type Options struct {
	Servers         []Server
	StripDetail     bool
	DetailDelimiter string              // default "+"
	Aliases         map[string][]string // from ParseAliases; keys lower-case
}

// Map resolves recipients. It is immutable and safe for concurrent use; reload
// by building a new Map.
type Map struct {
	domains     map[string]string // domain -> server name
	lmtp        map[string]string // normalized LMTP address -> server name
	stripDetail bool
	delims      string
	aliases     map[string][]string
}

// New builds a Map.
func New(opts Options) *Map {
	m := &Map{
		domains:     map[string]string{},
		lmtp:        map[string]string{},
		stripDetail: opts.StripDetail,
		delims:      opts.DetailDelimiter,
		aliases:     opts.Aliases,
	}
	if m.delims == "" {
		m.delims = "+"
	}
	for _, s := range opts.Servers {
		for _, d := range s.Domains {
			m.domains[strings.ToLower(strings.TrimSpace(d))] = s.Name
		}
		if s.LMTP != "" {
			m.lmtp[normalizeNexthop(s.LMTP)] = s.Name
		}
	}
	return m
}

// maxExpansion bounds alias recursion like Postfix's
// virtual_alias_recursion_limit and virtual_alias_expansion_limit.
const (
	maxDepth     = 100
	maxExpansion = 1000
)

// Resolve returns the mailboxes rcpt maps to (sorted, unique; empty for
// foreign domains) and the mailbox server they belong to. mailer and host are
// Postfix's {rcpt_mailer} and {rcpt_host}: when the recipient's resolved next
// hop is a configured server's LMTP address, that server decides.
func (m *Map) Resolve(rcpt, mailer, host string) (mailboxes []string, server string) {
	var seen map[string]bool // only expand writes it, and only with an alias table
	if m.aliases != nil {
		seen = map[string]bool{}
	}
	var out []string
	m.expand(strings.ToLower(strings.TrimSpace(rcpt)), 0, seen, &out)
	sort.Strings(out)
	out = compact(out)
	if s, ok := m.lmtp[normalizeNexthop(host)]; ok && host != "" && (mailer == "lmtp" || mailer == "") {
		server = s
	}
	var boxes []string
	for _, a := range out {
		_, dom, ok := splitAddr(a)
		if !ok {
			continue
		}
		s, ok := m.domains[dom]
		if !ok {
			continue
		}
		boxes = append(boxes, a)
		if server == "" {
			server = s
		}
	}
	return boxes, server
}

// ServerOf returns the mailbox server that serves a continuity mailbox (a
// final address, as Resolve returns them): the one declared with its domain.
func (m *Map) ServerOf(mailbox string) (server string, ok bool) {
	_, dom, found := splitAddr(strings.ToLower(strings.TrimSpace(mailbox)))
	if !found {
		return "", false
	}
	server, ok = m.domains[dom]
	return server, ok
}

// expand follows the alias table. An address that is not an alias is a final
// address (with its detail stripped when configured). As in Postfix, an alias
// that lists itself keeps itself as a final address.
func (m *Map) expand(addr string, depth int, seen map[string]bool, out *[]string) {
	if len(*out) >= maxExpansion {
		return
	}
	targets, ok := m.lookup(addr)
	if !ok || depth >= maxDepth || seen[addr] {
		*out = append(*out, m.strip(addr))
		return
	}
	seen[addr] = true
	for _, t := range targets {
		if t == addr {
			*out = append(*out, m.strip(addr))
			continue
		}
		m.expand(t, depth+1, seen, out)
	}
	delete(seen, addr)
}

// lookup tries the address, then without its extension, then the catch-all
// "@domain", in the order of virtual(5) "TABLE SEARCH ORDER".
func (m *Map) lookup(addr string) ([]string, bool) {
	if m.aliases == nil {
		return nil, false
	}
	if t, ok := m.aliases[addr]; ok {
		return t, true
	}
	local, dom, ok := splitAddr(addr)
	if !ok {
		return nil, false
	}
	if i := strings.IndexAny(local, m.delims); i > 0 {
		if t, ok := m.aliases[local[:i]+"@"+dom]; ok {
			return t, true
		}
	}
	if t, ok := m.aliases["@"+dom]; ok {
		return t, true
	}
	return nil, false
}

// strip removes a "+detail" extension when configured (RFC 5233 subaddress).
func (m *Map) strip(addr string) string {
	if !m.stripDetail {
		return addr
	}
	local, dom, ok := splitAddr(addr)
	if !ok {
		return addr
	}
	if i := strings.IndexAny(local, m.delims); i > 0 {
		return local[:i] + "@" + dom
	}
	return addr
}

func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}

// normalizeNexthop reduces "lmtp:inet:127.0.0.1:24", "inet:[127.0.0.1]:24",
// "tcp:127.0.0.1:24" and "[127.0.0.1]:24" to one form for comparison.
func normalizeNexthop(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, p := range []string{"lmtp:", "inet:", "tcp:"} {
		s = strings.TrimPrefix(s, p)
	}
	return strings.NewReplacer("[", "", "]", "").Replace(s)
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

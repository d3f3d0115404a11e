package milter

import (
	"fmt"
	"slices"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/journal"
)

// Custody at end-of-message (DESIGN.md, "The flow of one message", step 3).
//
// While a mailbox server is in outage (Options.Outage), the recipients it
// serves become Lifeline's: they are journaled in state custody, replay
// delivers them after recovery, and the MTA must not deliver them too. So the
// milter
//   - marks them custody before the append (planCustody);
//   - answers only once the append is durable, and if it fails answers TEMPFAIL
//     whatever OnJournalError says: the client retries (RFC 5321 §4.2.5), and
//     no message is ever acknowledged on the strength of a custody record that
//     does not exist;
//   - takes them from the MTA: SMFIR_DISCARD when every recipient is
//     Lifeline's (Postfix queues nothing and still answers the client 250),
//     otherwise one SMFIR_DELRCPT per recipient, then ACCEPT.
//
// A message can be offered twice: Postfix retries a milter connection that
// timed out, `postsuper -r` re-queues a message, a client resends after a lost
// 250. The second Append finds the identity stored, writes nothing and reports
// Duplicate. What counts then is the *stored* state, not the outage now: a
// recipient stored as custody (or retrying, delivered, failed: replay's
// states) is Lifeline's even if the outage has ended since — otherwise the MTA
// would deliver it and replay would too — and one stored as mta stays with the
// MTA even if its server is in outage now (the MTA owned it first and retries
// it itself). So on Duplicate the milter reads the stored entry (Journal.Get)
// whenever an Outage checker is configured; without one, no recipient can have
// been taken into custody by this milter and the hot path stays as it was. A
// Get that fails is answered with TEMPFAIL: the milter cannot tell whether
// ACCEPT would deliver a recipient twice.
//
// The DELRCPT address. go-milter hands RcptTo the RCPT TO argument without its
// angle brackets and DeleteRecipient puts them back, so the milter returns
// exactly what the MTA gave it. Postfix's smtpd passes milters the RCPT TO
// argument verbatim (external form, quoting included, smtpd.c milter_argv);
// cleanup_del_rcpt (cleanup_milter.c) parses the DELRCPT argument with
// tok822_parse, converts it to internal form (brackets and quotes removed),
// compares it byte for byte (strcmp, so case matters) with each recipient's
// original address (the ORCP record: the RCPT TO before canonical and virtual
// rewriting) and cancels every match, alias expansions included. The address
// as received is therefore the form that matches; a case-folded one might not.
// That is why the current message's addresses are sent, never the stored ones
// (a duplicate may have been offered with other letter case the first time).

// CustodyNotifier is an optional interface of Options.Outage. When the
// checker implements it, the milter calls CustodyTaken once per message for
// each mailbox server some of whose recipients it newly took into custody,
// after the append is durable and before it answers the MTA (a duplicate,
// whose custody was taken when it was first offered, calls nothing). The
// daemon wakes replay with it when the server is no longer in outage: the
// outage ended while the append was running, after replay's own wake, and
// the custody must not wait for replay's next rescan. It must not block.
type CustodyNotifier interface {
	CustodyTaken(server string)
}

// custodyPlan is which recipients of the message at hand are Lifeline's.
type custodyPlan struct {
	addrs     []string // RCPT TO addresses in order, as the MTA gave them (Append owns the envelope)
	servers   []string // the mailbox servers of the owned ones; nil while none is
	owned     []bool   // recipient i is Lifeline's
	n         int      // how many are
	canDelete bool     // SMFIF_DELRCPT was negotiated
}

// planCustody marks the recipients whose mailbox server is in outage as
// custody in rcpts (the rest stay mta) and returns the plan; nil without an
// Outage checker.
func (s *session) planCustody(rcpts []journal.Recipient, canDelete bool) *custodyPlan {
	o := s.srv.opts.Outage
	if o == nil {
		return nil
	}
	p := &custodyPlan{addrs: make([]string, len(rcpts)), owned: make([]bool, len(rcpts)), canDelete: canDelete}
	for i := range rcpts {
		p.addrs[i] = rcpts[i].Address
		// Unknown domains (no server) are never taken into custody.
		if rcpts[i].Server != "" && o.InOutage(rcpts[i].Server) {
			if p.servers == nil { // outside an outage, no allocation
				p.servers = make([]string, len(rcpts))
			}
			p.owned[i], p.servers[i] = true, rcpts[i].Server
			p.n++
		}
	}
	if p.n > 0 && p.n < len(rcpts) && !canDelete {
		// The MTA cannot be told to drop some recipients, so it would deliver
		// them as well: leave them to the MTA, which queues them and retries
		// while their server is down. DISCARD (all recipients) needs no
		// negotiated action.
		s.log.Warn("mailbox server in outage, but the MTA did not negotiate SMFIF_DELRCPT: its recipients stay with the MTA",
			"in_outage", p.n, "recipients", len(rcpts))
		clear(p.owned)
		p.n = 0
	}
	for i := range rcpts {
		if p.owned[i] {
			rcpts[i].State = journal.StateCustody
		}
	}
	return p
}

// adoptStored replaces the plan by the stored states of a duplicate. Stored
// and current recipients are the same set (the identity includes the
// lower-cased, sorted RCPT TO addresses), possibly in another order and letter
// case, so they are matched by address, ignoring ASCII case. It returns how
// many current recipients have no stored counterpart (they stay with the MTA).
func (p *custodyPlan) adoptStored(stored []journal.Recipient) (unmatched int) {
	lifelines := make(map[string]bool, len(stored))
	for _, r := range stored {
		k := asciiLower(r.Address)
		lifelines[k] = lifelines[k] || isLifelines(r.State)
	}
	p.n = 0
	for i, a := range p.addrs {
		own, ok := lifelines[asciiLower(a)]
		if !ok {
			unmatched++
		}
		p.owned[i] = own
		if own {
			p.n++
		}
	}
	return unmatched
}

// isLifelines reports whether a recipient stored in state st is Lifeline's to
// deliver (or already delivered or failed by replay), not the MTA's.
func isLifelines(st journal.State) bool {
	switch st {
	case journal.StateCustody, journal.StateRetrying, journal.StateDelivered, journal.StateFailed:
		return true
	default:
		return false
	}
}

// notify tells cn each server of Lifeline's recipients, once.
func (p *custodyPlan) notify(cn CustodyNotifier) {
	var told []string
	for i, srv := range p.servers {
		if p.owned[i] && !slices.Contains(told, srv) {
			told = append(told, srv)
			cn.CustodyTaken(srv)
		}
	}
}

// taken returns the addresses of Lifeline's recipients.
func (p *custodyPlan) taken() []string {
	out := make([]string, 0, p.n)
	for i, a := range p.addrs {
		if p.owned[i] {
			out = append(out, a)
		}
	}
	return out
}

// takeCustody answers a message some of whose recipients are Lifeline's (p.n >
// 0), after the journal holds them durably: DISCARD if all are, else DELRCPT
// for each of them and ACCEPT.
func (s *session) takeCustody(m gomilter.Modifier, p *custodyPlan, queueID string, res journal.AppendResult) *gomilter.Response {
	if cn, ok := s.srv.opts.Outage.(CustodyNotifier); ok && !res.Duplicate {
		p.notify(cn)
	}
	taken := p.taken()
	logAttrs := []any{"queue_id", queueID, "id", res.ID.String(), "duplicate", res.Duplicate,
		"taken", len(taken), "recipients", len(p.addrs), "rcpts", taken}
	if p.n == len(p.addrs) {
		// Every recipient is Lifeline's: Postfix discards the message
		// (cleanup: "milter triggers DISCARD action"), queues nothing and
		// answers the client 250.
		s.srv.metrics.messages.WithLabelValues(resultCustody).Inc()
		s.srv.metrics.custodyRecipients.Add(float64(len(taken)))
		s.log.Info("message taken into custody", append(logAttrs, "answer", "discard")...)
		return gomilter.RespDiscard
	}
	if !p.canDelete {
		// Only a duplicate gets here (planCustody never takes part of a
		// message without SMFIF_DELRCPT): the stored copy has custody
		// recipients but this MTA connection cannot remove them. ACCEPT may
		// deliver them twice; TEMPFAIL would refuse the message forever.
		s.srv.metrics.messages.WithLabelValues(resultDuplicate).Inc()
		s.log.Error("recipients are in custody but the MTA did not negotiate SMFIF_DELRCPT: it will deliver them too",
			append(logAttrs, "answer", "accept")...)
		return gomilter.RespAccept
	}
	sent := make(map[string]bool, len(taken))
	for _, a := range taken {
		if sent[a] {
			continue // Postfix cancels every matching recipient at the first request
		}
		sent[a] = true
		if err := m.DeleteRecipient(a); err != nil {
			// The MTA connection is most likely broken. The custody record
			// is durable: replay delivers these recipients, and if the client
			// retries, the duplicate is recognised and they are removed then.
			return s.custodyFailed(queueID, len(p.addrs), fmt.Errorf("milter: DELRCPT %s: %w", a, err))
		}
	}
	s.srv.metrics.messages.WithLabelValues(resultPartialCustody).Inc()
	s.srv.metrics.custodyRecipients.Add(float64(len(taken)))
	s.log.Info("message taken into custody", append(logAttrs, "answer", "delrcpt")...)
	return gomilter.RespAccept
}

// custodyFailed counts and logs a message whose custody could not be made
// durable (or checked) and answers TEMPFAIL, so that the client retries. As in
// journalFailed, the error is never returned to go-milter.
func (s *session) custodyFailed(queueID string, nrcpt int, cause error) *gomilter.Response {
	s.srv.metrics.messages.WithLabelValues(resultCustodyTempFail).Inc()
	s.log.Error("custody not durable; answering TEMPFAIL", "queue_id", queueID, "recipients", nrcpt, "err", cause)
	return gomilter.RespTempFail
}

// asciiLower lower-cases ASCII letters only, like the journal's identity.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

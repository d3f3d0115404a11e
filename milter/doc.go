// Package milter is Lifeline's front end for MTAs that speak the Sendmail
// milter protocol (Postfix's smtpd_milters / non_smtpd_milters, Sendmail's
// INPUT_MAIL_FILTER). For every message it collects the envelope (MAIL FROM,
// each RCPT TO with Postfix's {rcpt_mailer} and {rcpt_host}, the queue id "i",
// the SASL user {auth_authen}), rebuilds the message bytes from the header and
// body events (rebuild.go explains exactly how Postfix passes them), spools
// large messages to a temporary file (internal/spool), and at end-of-message appends
// it to the journal before answering the MTA (session.go).
//
// In normal mode every recipient is journaled in state mta and the milter
// answers ACCEPT. When the journal fails the answer is ACCEPT (mail flow never
// stops because of Lifeline) or, if configured, TEMPFAIL.
//
// In outage mode (custody.go) the recipients whose mailbox server is in
// outage are journaled in state custody and taken away from the MTA: the
// milter removes them with SMFIR_DELRCPT (it asks for SMFIF_DELRCPT in option
// negotiation; the MTA needs no configuration for that), or answers DISCARD
// when every recipient is in custody. It answers only once the custody record
// is durable; if the journal fails, it answers TEMPFAIL.
//
// The server (server.go) follows net/http: New, Serve(ln), Shutdown(ctx).
// Metrics are registered on the Registerer it is given (metrics.go); panics in
// callbacks are recovered, counted in lifeline_panics_total{component="milter"}
// and turn into a journal failure of that one message.
//
// A Postfix main.cf that uses it:
//
//	smtpd_milters = inet:127.0.0.1:8894
//	non_smtpd_milters = $smtpd_milters
//	milter_protocol = 6
//	milter_default_action = accept
package milter

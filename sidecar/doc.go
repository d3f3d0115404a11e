// Package sidecar holds the roles that serve users and the mailbox server during
// and after an outage: IMAP and POP3 (sidecar/imap, sidecar/pop3), webmail, and
// replay. They arrive with their own issues; the foundation only journals mail.
package sidecar

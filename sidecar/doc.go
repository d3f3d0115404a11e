// Package sidecar holds the roles that serve users and the mailbox server during
// and after an outage: IMAP and POP3 (sidecar/imap, sidecar/pop3) over each
// user's view of the journal (sidecar/userview), the rule of when a mailbox is
// served (sidecar/serving), and later webmail. Replay lives in package replay.
//
// This package holds what the protocol servers share: the Authenticator and
// ServingChecker they are given, and the loopback, TLS and host-name rules
// they apply the same way.
package sidecar

// Package webmail is the continuity mailbox in a browser: a user logs in with
// the password they use for IMAP and POP3 (the same Authenticator, so the same
// rate limit), reads, searches and answers their mail, and an administrator
// sees and steers the outage state.
//
// Everything is rendered on the server with html/template; the CSS is embedded
// and no script runs anywhere, so the Content-Security-Policy of every page can
// forbid scripts outright (default-src 'none'). A message's HTML body is
// sanitized by package mailview and shown in an <iframe sandbox> whose document
// has its own, stricter policy: no scripts, no forms, no requests to other
// hosts until the user asks for remote images.
//
// The messages are the user's view (package userview), the one IMAP and POP3
// use: a message read, flagged or deleted here is read, flagged or deleted
// there. Every URL that names a message carries its UID and its journal ID, and
// is resolved in the logged-in user's own mailbox only; any other user's id is
// a 404.
//
// Sessions are kept in memory: a restart logs everyone out, which costs a
// login and keeps secrets out of the journal.
package webmail

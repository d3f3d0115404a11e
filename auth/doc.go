// Package auth checks the passwords of the continuity mailbox's IMAP and POP3 logins.
//
// Users come from a Dovecot-style passwd-file (File), so admins can reuse the users file of
// their Dovecot: the password schemes BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, ARGON2ID and
// ARGON2I are verified, {PLAIN} is accepted with a warning, and Hash produces the first four
// for `lifeline passwd`. The file is re-read when it changes.
//
// Logins go through an Authenticator, which rate-limits them (Limiter) per client address
// and per user with a delay that grows with failures and a lockout, and logs failures
// without the password.
package auth

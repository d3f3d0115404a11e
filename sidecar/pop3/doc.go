// Package pop3 serves users' continuity mailboxes over POP3 (RFC 1939) with
// the extensions clients expect: CAPA (RFC 2449), STLS (RFC 2595), SASL PLAIN
// through AUTH (RFC 5034, RFC 4616), TOP, UIDL, and response codes (RFC 2449
// §8, RFC 3206).
//
// A session sees a snapshot of the user's view (package userview) taken at
// login: message numbers index only that snapshot, so no number can reach
// another user's mail. DELE marks a message; QUIT hides the marked messages
// from this user's view (the journal keeps its copy, and custody mail is still
// replayed to the mailbox server after the outage). A session that ends
// without QUIT deletes nothing (RFC 1939 §6).
//
// One session per mailbox at a time (RFC 1939 §4's exclusive lock; a second
// login hears -ERR [IN-USE]). The lock is held in this Server's memory: two
// Lifeline processes do not see each other's sessions.
//
// Plaintext passwords (USER/PASS, AUTH PLAIN) are refused on a connection
// that is neither TLS nor from a loopback address; CAPA then offers neither
// USER nor SASL PLAIN, only STLS.
//
// UIDL gives "<UIDVALIDITY>.<UID>", stable for as long as the journal keeps
// the message. LIST and STAT give the journal's raw sizes; RETR sends bare LF
// line ends as CRLF, so for a message stored with bare LFs the octets sent
// exceed the listed size (RFC 1939 §11 allows this).
package pop3

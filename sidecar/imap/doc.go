// Package imap serves users' continuity mailboxes over IMAP4rev1 (RFC 3501)
// and IMAP4rev2 (RFC 9051) while their mailbox server is down. The protocol
// engine is go-imap's imapserver; this package is its backend over the
// journal (package journal) and the users' views (package userview), and owns
// the connections, TLS, shutdown and metrics.
//
// # Folders
//
// The folder set is fixed. INBOX is the journal mailbox that the
// Authenticator names for the user: every message the MTA delivered to them,
// minus those the user expunged. Sent is the journal mailbox
// "<mailbox>/Sent": what the user's client saved there with APPEND (a domain
// never contains "/", so no address names it; a mailbox name with a "/" in its
// domain is refused at login). Sent carries \Sent (SPECIAL-USE, RFC 6154).
// CREATE, DELETE and RENAME answer NO [CANNOT]; LIST shows the two folders,
// always subscribed, with "/" as delimiter and one personal namespace (RFC
// 2342).
//
// APPEND to Sent journals the message with the user as sender and only
// recipient, in state mta ("the MTA's to deliver", so replay never delivers
// it), Source "imap", and answers APPENDUID (UIDPLUS, RFC 4315). APPEND to
// INBOX answers NO [CANNOT]: INBOX is what the mail server delivered. The
// journal stores a message once per identity (sender, recipients, content): a
// client that appends the same bytes again hears the UID of the copy already
// in Sent; when no visible Sent copy exists (the user expunged it, or the very
// message was journaled into INBOX because the user sent it to themselves
// alone) APPEND fails with NO [ALREADYEXISTS].
//
// COPY and MOVE (RFC 6851) answer NO [CANNOT]: a copy between INBOX and Sent
// would show mail that was neither delivered nor sent, and there is no other
// folder. MOVE is still advertised, as IMAP4rev2 includes it; clients that
// move deleted mail to a Trash folder are told to use \Deleted and EXPUNGE.
//
// # Flags and expunges
//
// Flags (\Seen, \Answered, \Flagged, \Deleted, \Draft and keywords;
// PERMANENTFLAGS includes \*) persist per user in the journal's control store
// through package userview, so they survive restarts and are the user's own:
// the other recipients of a message keep theirs. \Recent is not kept (RFC
// 9051 dropped it): no message is ever \Recent.
//
// EXPUNGE hides messages from this user's view only. The journal keeps its
// copy until retention removes it, the other recipients still see it, and a
// message in custody is still replayed to the user's mailbox server after the
// outage: the user deleted it from the continuity mailbox, not from their mail.
//
// # UIDs, sequence numbers and isolation
//
// UIDs and UIDVALIDITY are the journal's, stable across restarts (a mailbox
// the journal does not know yet, with no mail, shows UIDVALIDITY 1 until its
// first message). Sequence numbers are computed per session from the visible
// messages it knows. Every message number or UID a command names is looked up
// in the session's own list of the user's visible messages, and every mailbox
// name in the user's two folders: no command and no guess reaches another
// user's mail. A reconnecting client resynchronises with UID FETCH 1:*
// (FLAGS), which reads no message.
//
// # New mail, IDLE
//
// The journal has no change notification. After every command a session asks
// the journal for its mailbox's UIDNEXT and message count (one small read) and
// reports new mail (EXISTS), expunges made by the user's other sessions or by
// retention (EXPUNGE, never during FETCH, STORE or SEARCH, RFC 3501 §7.4.1)
// and their flag changes (FETCH FLAGS). While sessions IDLE (RFC 2177), one
// poller per journal mailbox asks every Options.PollInterval and wakes them;
// changes made through this Server wake them at once. Changes made outside
// this Server (POP3's DELE, another process) other than new mail appear at
// the next SELECT.
//
// # FETCH
//
// Messages are sent exactly as stored: RFC822.SIZE, BODY[] and the journal's
// bytes agree, bare LF line ends included. Body sections are streamed from the
// journal into literals of the exact size announced, never held whole: BODY[]
// and BODY[]<partial> of a 50 MB message cost a buffer. A FETCH of the bodies
// of many messages reads those of at most 64 KiB ahead, whole, in batches
// that the journal reads in the order it stores them, while it writes the
// ones before (prefetch.go), and gathers its
// responses into writes of 64 KiB (conn.go). ENVELOPE, BODYSTRUCTURE
// and part sections (BODY[1.2], [1.2.MIME], [2.HEADER], [2.TEXT]) come from
// the MIME structure the journal computed at append time (package
// mimestruct), whose byte offsets locate each part; for a message journaled
// before structures were stored, the structure is parsed on demand and kept in
// a small LRU cache. BODY[HEADER], [HEADER.FIELDS] and [TEXT] read the header
// only, with mimestruct's rules for where it ends. BINARY (RFC 3516) removes
// base64 and quoted-printable encodings. A malformed message never fails a
// command or costs a connection: a panic in a command is recovered into
// NO [SERVERBUG] and counted.
//
// # SEARCH
//
// Flags, UIDs, sizes and INTERNALDATE (the journal's receive time) are
// answered from the session; SENT* dates, FROM, TO, CC, SUBJECT and
// Message-ID from the journal's stored header summary; other HEADER fields
// read the header section; BODY and TEXT stream the message once, decoding
// quoted-printable and base64 text parts and their charsets (RFC 2047 words in
// header fields too), and match case-insensitively (Unicode lower case). Only
// text parts are searched, not attachments. One SEARCH reads at most
// Options.SearchMaxBytes of messages and otherwise answers NO [LIMIT] rather
// than a result that silently misses messages. ESEARCH (RFC 4731) and
// SEARCHRES (RFC 5182) are supported.
//
// # Login and TLS
//
// LOGIN and AUTHENTICATE PLAIN (RFC 4616) go to the Authenticator: a
// temporary failure answers NO [UNAVAILABLE], bad credentials NO
// [AUTHENTICATIONFAILED], and five failures end the connection. When the
// ServingChecker says the mailbox is not served now (its server is up), the
// login fails with NO [UNAVAILABLE] and the checker's text. Plaintext
// authentication is refused on a connection that is neither TLS nor from
// loopback, which then advertises LOGINDISABLED (RFC 3501 §6.2.3, RFC 9051
// §6.2.3) and STARTTLS when Options.TLSConfig is set; ServeTLS serves implicit
// TLS (RFC 8314). TLS 1.2 is the minimum.
//
// Shutdown says BYE between commands, lets a running command (a large FETCH,
// an APPEND) finish with its response first, and closes what remains when its
// context ends.
package imap

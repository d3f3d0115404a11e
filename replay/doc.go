// Package replay gives custody mail back to the mailbox servers after an
// outage (DESIGN.md step 7), and exports the Deliverer that restore uses too.
//
// # Scheduler
//
// Each configured server has one scheduler goroutine, in the style of a mail
// queue manager rather than a polling loop. While the server is not in
// outage it walks the journal's custody queue (Journal.Custody, arrival
// order) page by page, picks this server's recipients whose NextAttempt is
// due, groups them by message (one transaction per message and server,
// carrying all its due recipients) and hands them to Concurrency workers in
// arrival order, optionally paced by Rate. When a walk finds nothing due it
// sleeps on a timer to the earliest NextAttempt, or on the wake channel.
// All state lives in the journal (state, attempts, next attempt, mailboxes
// already done), so a restarted Replayer resumes without being told.
//
// Before each transaction the worker asks Outage.InOutage; once the server
// is back in outage nothing more is dispatched and the scheduler waits for
// Wake (re-checking the outage and recounting the backlog every 2 s, or ten
// times as long as a count takes, at most BacklogRefresh, meanwhile). When a
// connection cannot even be made, the pass stops too and is retried after a
// short pause: every further transaction would fail the same way and cost
// each recipient an attempt.
//
// Wake is for what the scheduler cannot see: the end of an outage and an
// operator re-queueing failed recipients. It is not needed when a run
// completes or a retry comes due: the scheduler keeps its own timer, and a
// wake would only cost one more walk. After every Wake the scheduler looks
// once more Settle later, for messages the milter was still journaling in
// custody while the outage ended. Rescan (default RetryMax) bounds every
// sleep as a last safety net.
//
// # Outcomes
//
// Recipients are sent to their mailboxes (Recipient.Mailboxes minus
// Recipient.Done, or Address when there are none) in lmtp mode, or to
// Recipient.Address when re-injecting into the MTA in smtp mode. Per
// recipient (RFC 2033 §4.2): every mailbox 2xx → delivered; any 4xx or no
// reply → retrying at now + RetryMin·2^attempts (capped at RetryMax, ±25 %
// jitter), with the mailboxes that did accept it added to Done so that a
// retry never sends them a second copy; otherwise (5xx) → failed. A
// recipient still temporary after GiveUpAfter of retrying, counted by its
// attempts and the backoffs between them (not by the wall clock since it
// arrived: a long outage or a clock jump does not fail it), fails
// ("gave up after N attempts over ..."). All outcomes of one transaction are written with
// one Journal.Update (one durable write). If that write fails the outcome is
// kept in memory and written before the message is tried again.
//
// A permanent failure is logged, reported to the Notifier and, with DSN
// set, answered by an RFC 3464 delivery status notification from the null
// sender to the envelope sender (never to a null sender, RFC 5321 §4.5.5).
// When a server's backlog is empty after a run, the Notifier hears
// "replay_finished" with the counts and the duration.
package replay

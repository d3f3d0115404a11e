// Package notify tells people what Lifeline did: outage start and end, the end
// of a replay, and every permanent delivery failure. Events go to a JSON
// webhook and/or as a short mail to the postmaster.
//
// Notification never holds up the caller: Notify puts the event on a bounded
// queue that one goroutine drains. A failed delivery is retried a few times,
// then logged and counted in lifeline_notify_errors_total{channel}; an event
// that does not fit in the queue within QueueTimeout is logged and counted
// under channel="queue". No event is dropped silently.
//
// Submit is the small SMTP client that both the postmaster mail and replay's
// delivery status notifications use.
package notify

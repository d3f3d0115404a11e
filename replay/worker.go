package replay

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
)

// journalWriteTimeout bounds the write of an outcome; it runs even when the
// Replayer is being stopped, because a delivery that happened must be
// recorded.
const journalWriteTimeout = 30 * time.Second

// dsnTimeout bounds sending one delivery status notification.
const dsnTimeout = 30 * time.Second

func (q *queue) safeProcess(ctx context.Context, j *job) (o outcome) {
	defer func() {
		if p := recover(); p != nil {
			q.r.m.panics.Inc()
			q.log.Error("replay transaction panicked", "id", j.id.String(), "panic", p,
				"stack", string(debug.Stack()))
			o = outcome{kind: outJournalErr}
		}
	}()
	return q.process(ctx, j)
}

// target is one journal recipient of a transaction and the addresses it is
// sent to.
type target struct {
	rcpt  int
	rc    journal.Recipient
	addrs []string // RCPT TO addresses for this recipient
	first int      // index of addrs[0] in the transaction's RCPT list
}

func (q *queue) process(ctx context.Context, j *job) outcome {
	jr := q.r.opts.Journal
	if changes, ok := q.takePending(j.id); ok {
		// A delivery whose outcome could not be written: write it now rather
		// than deliver the message a second time.
		err := q.update(ctx, j.id, changes)
		switch {
		case err == nil:
			q.log.Info("recorded outcome after a journal error", "id", j.id.String())
			return outcome{kind: outRecorded}
		case errors.Is(err, journal.ErrInvalidState), errors.Is(err, journal.ErrNotFound):
			q.log.Warn("dropping unrecorded outcome: recipients changed meanwhile",
				"id", j.id.String(), "err", err)
		default:
			q.putPending(j.id, changes)
			q.r.m.journalErr.Inc()
			q.log.Error("recording replay outcome", "id", j.id.String(), "err", err)
			return outcome{kind: outJournalErr}
		}
	}
	// RFC-free but essential: pause at once when the server goes back into
	// outage, even with transactions already queued to this worker.
	if q.inOutage() {
		return outcome{kind: outOutage}
	}
	if j.pass.stopped() {
		// Another transaction of this pass found the server unreachable.
		return outcome{kind: outInterrupted}
	}
	if q.r.stopping() || ctx.Err() != nil {
		return outcome{kind: outInterrupted}
	}
	entry, err := jr.Get(ctx, j.id)
	if err != nil {
		if errors.Is(err, journal.ErrNotFound) {
			return outcome{kind: outSkipped}
		}
		if ctx.Err() != nil {
			return outcome{kind: outInterrupted}
		}
		q.r.m.journalErr.Inc()
		q.log.Error("reading custody message", "id", j.id.String(), "err", err)
		return outcome{kind: outJournalErr}
	}
	var targets []target
	var rcpts []string
	for _, i := range j.rcpts {
		if i < 0 || i >= len(entry.Envelope.Recipients) {
			continue
		}
		rc := entry.Envelope.Recipients[i]
		if !rc.State.Undelivered() || rc.Server != q.srv.Name {
			continue // changed since the walk
		}
		t := target{rcpt: i, rc: rc, addrs: q.addresses(rc), first: len(rcpts)}
		rcpts = append(rcpts, t.addrs...)
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return outcome{kind: outSkipped}
	}
	if q.limiter != nil {
		if err := q.limiter.Wait(ctx); err != nil {
			return outcome{kind: outInterrupted}
		}
	}
	start := time.Now()
	var replies []Reply
	var derr error
	if len(rcpts) > 0 {
		body, err := jr.Open(ctx, j.id)
		if err != nil {
			if ctx.Err() != nil {
				return outcome{kind: outInterrupted}
			}
			q.r.m.journalErr.Inc()
			q.log.Error("opening custody message", "id", j.id.String(), "err", err)
			return outcome{kind: outJournalErr}
		}
		replies, derr = q.d.Deliver(ctx, entry.Envelope.MailFrom, rcpts, body)
		if cerr := body.Close(); cerr != nil {
			q.log.Warn("closing custody message", "id", j.id.String(), "err", cerr)
		}
	}
	q.r.m.seconds.Observe(time.Since(start).Seconds())
	if derr != nil {
		q.log.Warn("replay transaction incomplete", "id", j.id.String(), "err", derr)
	}

	now := q.r.opts.Clock()
	var o outcome
	o.kind = outRecorded
	o.unreachable = errors.Is(derr, ErrUnreachable)
	changes := make([]journal.Change, 0, len(targets))
	var failed []failure
	var nDelivered, nRetrying, nFailed int64
	for _, t := range targets {
		rs := replies[t.first : t.first+len(t.addrs)]
		ch := q.decide(t, rs, entry, now)
		changes = append(changes, ch)
		switch ch.To {
		case journal.StateDelivered:
			nDelivered++
		case journal.StateRetrying:
			nRetrying++
			if o.nextRetry.IsZero() || ch.NextAttempt.Before(o.nextRetry) {
				o.nextRetry = ch.NextAttempt
			}
		case journal.StateFailed:
			nFailed++
			failed = append(failed, failure{rc: t.rc, reply: ch.Reply, last: lastReply(rs), arrival: entry.Envelope.Received})
		}
	}
	if err := q.update(ctx, j.id, changes); err != nil {
		// Keep the outcome and write it before this message is tried again:
		// the server has it already (or refused it for good).
		q.putPending(j.id, changes)
		q.r.m.journalErr.Inc()
		q.log.Error("recording replay outcome", "id", j.id.String(), "err", err)
		o.kind = outJournalErr
	}
	q.mu.Lock()
	q.prog.Delivered += nDelivered
	q.prog.Retrying += nRetrying
	q.prog.Failed += nFailed
	q.mu.Unlock()
	q.r.m.recipients.WithLabelValues(q.srv.Name, resultDelivered).Add(float64(nDelivered))
	q.r.m.recipients.WithLabelValues(q.srv.Name, resultRetrying).Add(float64(nRetrying))
	q.r.m.recipients.WithLabelValues(q.srv.Name, resultFailed).Add(float64(nFailed))
	if q.log.Enabled(ctx, -4) {
		q.log.Debug("replayed", "id", j.id.String(), "delivered", nDelivered,
			"retrying", nRetrying, "failed", nFailed)
	}
	if len(failed) > 0 {
		q.reportFailures(ctx, entry, failed, now)
	}
	return o
}

// addresses gives the RCPT TO addresses for a recipient: in lmtp mode its
// mailboxes (after alias resolution) that have not got the message yet, or
// its address when it has none; in smtp mode the address as the sender gave
// it, so that the MTA expands and routes it itself.
func (q *queue) addresses(rc journal.Recipient) []string {
	if q.r.opts.Mode == ModeSMTP || len(rc.Mailboxes) == 0 {
		return []string{rc.Address}
	}
	var out []string
	for _, m := range rc.Mailboxes {
		if !slices.Contains(rc.Done, m) && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// decide turns one recipient's replies into its journal change.
func (q *queue) decide(t target, rs []Reply, entry journal.Entry, now time.Time) journal.Change {
	ch := journal.Change{Rcpt: t.rcpt}
	if len(t.addrs) == 0 {
		// Every mailbox got it on earlier attempts (Done is complete).
		ch.To, ch.Reply = journal.StateDelivered, "delivered to every mailbox earlier"
		return ch
	}
	done := slices.Clone(t.rc.Done)
	allOK, anyTemp := true, false
	for _, r := range rs {
		switch {
		case r.OK():
			done = append(done, r.Rcpt)
		case r.Temporary():
			allOK, anyTemp = false, true
		default:
			allOK = false
		}
	}
	ch.Reply = replyText(rs, len(t.rc.Mailboxes) > 1 && q.r.opts.Mode == ModeLMTP)
	if q.r.opts.Mode == ModeLMTP && len(done) > 0 {
		ch.Done = done
	}
	switch {
	case allOK:
		// RFC 2033 §4.2: a 2xx after DATA means this recipient has it.
		ch.To = journal.StateDelivered
	case anyTemp:
		if held := q.r.retried(t.rc.Attempts); held >= q.r.opts.GiveUpAfter {
			ch.To = journal.StateFailed
			ch.Reply = fmt.Sprintf("gave up after %d attempts over %s: %s", t.rc.Attempts+1, roundDuration(held), ch.Reply)
			return ch
		}
		ch.To = journal.StateRetrying
		ch.NextAttempt = now.Add(q.r.backoff(t.rc.Attempts))
	default:
		ch.To = journal.StateFailed
	}
	return ch
}

func roundDuration(d time.Duration) time.Duration {
	if d > time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}

// replyText is the LastReply stored for a recipient: the reply, or for a
// recipient with several mailboxes each mailbox's reply.
func replyText(rs []Reply, perMailbox bool) string {
	if len(rs) == 1 && !perMailbox {
		return rs[0].String()
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Rcpt + ": " + r.String()
	}
	return strings.Join(parts, "; ")
}

// lastReply picks the reply that decided a failure, for the DSN: a 5xx if
// there is one, else the last temporary one.
func lastReply(rs []Reply) Reply {
	var last Reply
	for _, r := range rs {
		if r.Permanent() {
			return r
		}
		if !r.OK() {
			last = r
		}
	}
	return last
}

func (q *queue) update(ctx context.Context, id journal.ID, changes []journal.Change) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), journalWriteTimeout)
	defer cancel()
	return q.r.opts.Journal.Update(wctx, id, changes...)
}

func (q *queue) takePending(id journal.ID) ([]journal.Change, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch, ok := q.pending[id]
	if ok {
		delete(q.pending, id)
	}
	return ch, ok
}

func (q *queue) putPending(id journal.ID, changes []journal.Change) {
	q.mu.Lock()
	q.pending[id] = changes
	q.mu.Unlock()
}

// failure is one recipient that failed for good.
type failure struct {
	rc      journal.Recipient
	reply   string // the stored LastReply
	last    Reply  // the reply that decided it
	arrival time.Time
}

// reportFailures sends one DSN for a message's failed recipients and tells
// the Notifier about each.
func (q *queue) reportFailures(ctx context.Context, entry journal.Entry, failed []failure, now time.Time) {
	for _, f := range failed {
		q.log.Warn("permanent delivery failure", "id", entry.ID.String(),
			"message_id", entry.Summary.MessageID, "recipient", f.rc.Address, "reply", f.reply)
		if q.r.opts.Notifier != nil {
			q.r.opts.Notifier.Notify(ctx, notify.Event{
				Kind: notify.KindPermanentFailure, Server: q.srv.Name, Time: now,
				Recipient: f.rc.Address, MessageID: entry.Summary.MessageID, Reply: f.reply,
			})
		}
	}
	// RFC 5321 §4.5.5 and RFC 3464 §2: never send a DSN to the null sender,
	// so that two systems cannot bounce notifications at each other forever.
	if !q.r.opts.DSN || entry.Envelope.MailFrom == "" {
		return
	}
	if err := q.sendDSN(ctx, entry, failed, now); err != nil {
		q.r.m.dsn.WithLabelValues("error").Inc()
		q.log.Error("sending delivery status notification", "id", entry.ID.String(),
			"to", entry.Envelope.MailFrom, "err", err)
		return
	}
	q.r.m.dsn.WithLabelValues("sent").Inc()
}

func (q *queue) sendDSN(ctx context.Context, entry journal.Entry, failed []failure, now time.Time) error {
	headers, err := q.originalHeaders(ctx, entry.ID)
	if err != nil {
		// The notification matters more than the copy of the headers.
		q.log.Warn("reading headers for a DSN", "id", entry.ID.String(), "err", err)
	}
	msg := composeDSN(dsnInput{
		hostname: q.r.opts.Hostname,
		sender:   entry.Envelope.MailFrom,
		arrival:  entry.Envelope.Received,
		queueID:  entry.ID.String(),
		subject:  entry.Summary.Subject,
		failed:   failed,
		headers:  headers,
		now:      now,
	})
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dsnTimeout)
	defer cancel()
	return notify.Submit(sctx, q.r.submitNet, q.r.submitAddr, "", []string{entry.Envelope.MailFrom}, msg)
}

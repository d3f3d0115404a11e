package milter

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/lifelinemail/lifeline/internal/spool"
	"github.com/lifelinemail/lifeline/journal"
)

// Macros Lifeline asks the MTA for (SMFIF_SETSYMLIST). Postfix sends a milter
// only the macros it requested, at the stage it requested them.
const (
	macroQueueID    = gomilter.MacroQueueId    // "i": Postfix assigns it by DATA; sent at EOH and EOM
	macroAuthAuthen = gomilter.MacroAuthAuthen // "{auth_authen}": SASL login name, at MAIL FROM
	macroRcptMailer = gomilter.MacroRcptMailer // "{rcpt_mailer}": resolved transport, per RCPT TO
	macroRcptHost   = gomilter.MacroRcptHost   // "{rcpt_host}": resolved next hop, per RCPT TO
)

// session is the go-milter backend for one MTA connection. go-milter calls its
// methods one at a time from the connection's goroutine, so the per-message
// state needs no lock; only the progress ticker runs beside a callback.
//
// Every callback answers RespContinue (an early RespAccept would make the MTA
// skip the rest of the message, body included) until EndOfMessage, which
// journals the message and answers ACCEPT — or TEMPFAIL if so configured and
// the journal failed; in outage mode it takes custody (custody.go).
type session struct {
	srv          *Server
	c            *conn
	log          *slog.Logger
	version      uint32
	leadingSpace bool

	msg *message // the message in progress, nil between messages
}

// message is the state of one SMTP transaction (MAIL FROM to end-of-message).
type message struct {
	env    journal.Envelope
	spool  *spool.Spool
	rb     rebuilder
	failed error // first failure; the message will not be journaled
}

func (s *session) newMessage() *message {
	m := &message{spool: spool.New(s.srv.opts.SpoolDir, "milter", s.srv.opts.SpoolThreshold)}
	m.spool.Created = s.srv.spoolCreated
	m.rb = rebuilder{w: m.spool, leadingSpace: s.leadingSpace}
	return m
}

// fail records the first reason the current message cannot be journaled.
func (m *message) fail(err error) {
	if m.failed == nil && err != nil {
		m.failed = err
	}
}

// current returns the message in progress, starting one if the MTA skipped
// MAIL FROM (it never should; go-milter may synthesise events after an abort).
func (s *session) current() *message {
	if s.msg == nil {
		s.msg = s.newMessage()
		s.c.setInMessage(true)
	}
	return s.msg
}

// discard drops the message in progress and its spool file.
func (s *session) discard() {
	if s.msg == nil {
		return
	}
	if err := s.msg.spool.Close(); err != nil {
		s.log.Warn("removing spool file", "err", err)
	}
	s.msg = nil
	s.c.setInMessage(false)
}

// recoverCallback turns a panic in a callback into a counted, logged failure
// of the current message, so that one bad message never takes the process (or
// the MTA connection) down. It must be deferred directly.
func (s *session) recoverCallback(stage string, resp **gomilter.Response, err *error) {
	r := recover()
	if r == nil {
		return
	}
	s.srv.metrics.panics.Inc()
	s.log.Error("panic in milter callback", "stage", stage, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if s.msg != nil {
		s.msg.fail(fmt.Errorf("panic in %s: %v", stage, r))
	}
	if resp != nil {
		*resp = gomilter.RespContinue
	}
	if err != nil {
		*err = nil
	}
}

func (s *session) NewConnection(gomilter.Modifier) (err error) {
	defer s.recoverCallback("new-connection", nil, &err)
	s.log.Debug("milter connection negotiated", "version", s.version, "leading_space", s.leadingSpace)
	return nil
}

func (s *session) Connect(host, family string, port uint16, addr string, _ gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("connect", &resp, &err)
	s.log.Debug("smtp client", "client_host", host, "client_addr", addr, "family", family)
	return gomilter.RespContinue, nil
}

func (s *session) Helo(string, gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from, _ string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("mail", &resp, &err)
	// A new MAIL FROM without abort means the previous transaction is over
	// (go-milter synthesises an abort, but be safe).
	if s.msg != nil {
		s.abortMessage("new MAIL FROM")
	}
	msg := s.current()
	msg.env.MailFrom = from
	msg.env.AuthUser = m.Get(macroAuthAuthen)
	return gomilter.RespContinue, nil
}

func (s *session) RcptTo(rcpt, _ string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("rcpt", &resp, &err)
	msg := s.current()
	r := journal.Recipient{
		Address: rcpt,
		Mailer:  m.Get(macroRcptMailer),
		Host:    m.Get(macroRcptHost),
		State:   journal.StateMTA, // normal mode: the MTA delivers, the journal keeps a copy
	}
	if s.srv.opts.Resolver != nil {
		r.Mailboxes, r.Server = s.srv.opts.Resolver.Resolve(rcpt, r.Mailer, r.Host)
	}
	msg.env.Recipients = append(msg.env.Recipients, r)
	return gomilter.RespContinue, nil
}

func (s *session) Data(gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (s *session) Header(name, value string, _ gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("header", &resp, &err)
	msg := s.current()
	if msg.failed == nil {
		msg.fail(msg.rb.Header(name, value))
	}
	return gomilter.RespContinue, nil
}

func (s *session) Headers(m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("eoh", &resp, &err)
	msg := s.current()
	if msg.failed == nil {
		msg.fail(msg.rb.EndOfHeader())
	}
	if id := m.Get(macroQueueID); id != "" {
		msg.env.QueueID = id
	}
	return gomilter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, _ gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer s.recoverCallback("body", &resp, &err)
	msg := s.current()
	if msg.failed == nil {
		msg.fail(msg.rb.Body(chunk))
	}
	return gomilter.RespContinue, nil
}

// EndOfMessage journals the message, takes custody of the recipients whose
// mailbox server is in outage, and answers the MTA.
func (s *session) EndOfMessage(m gomilter.Modifier) (resp *gomilter.Response, err error) {
	if s.msg == nil {
		// No event of this message reached us (not even MAIL FROM): there is
		// nothing to journal.
		s.log.Warn("end of message without a message; not journaled")
		return gomilter.RespAccept, nil
	}
	msg := s.msg
	// custody tells the failure paths that a recipient is in outage, so that
	// they answer TEMPFAIL whatever OnJournalError says. Until the plan is
	// made it is true whenever an Outage checker exists: a panicking checker
	// must not lead to ACCEPT.
	custody := s.srv.opts.Outage != nil
	defer s.discard() // the spool file goes whatever happens
	defer func() {
		if r := recover(); r != nil {
			s.srv.metrics.panics.Inc()
			s.log.Error("panic in milter callback", "stage", "eom", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = s.journalFailed(msg, custody, fmt.Errorf("panic at end-of-message: %v", r)), nil
		}
	}()

	if id := m.Get(macroQueueID); id != "" {
		msg.env.QueueID = id
	}
	if msg.env.AuthUser == "" {
		msg.env.AuthUser = m.Get(macroAuthAuthen)
	}
	plan := s.planCustody(msg.env.Recipients, m.Actions()&gomilter.OptRemoveRcpt != 0)
	custody = plan != nil && plan.n > 0
	if msg.failed != nil {
		return s.journalFailed(msg, custody, msg.failed), nil
	}
	if err := msg.rb.Finish(); err != nil {
		return s.journalFailed(msg, custody, err), nil
	}
	r, err := msg.spool.Reader()
	if err != nil {
		return s.journalFailed(msg, custody, err), nil
	}

	now := s.srv.opts.Clock()
	env := msg.env
	env.Source = "milter"
	env.Received = now
	for i := range env.Recipients {
		env.Recipients[i].Updated = now
	}
	size, onDisk, nrcpt, queueID := msg.spool.Size(), msg.spool.OnDisk(), len(env.Recipients), env.QueueID

	stop := s.startProgress(m)
	defer stop() // also when Append panics: no progress packet may follow the answer
	start := time.Now()
	res, err := s.srv.opts.Journal.Append(s.srv.ctx, env, r) // env is not used after this call
	elapsed := time.Since(start)
	var stored journal.Entry
	var getErr error
	if err == nil && res.Duplicate && plan != nil {
		// The stored states decide who delivers a message offered again
		// (custody.go); still under progress, like the append.
		stored, getErr = s.srv.opts.Journal.Get(s.srv.ctx, res.ID)
	}
	stop()
	s.srv.metrics.appendSeconds.Observe(elapsed.Seconds())

	if err != nil {
		s.srv.metrics.appendErrors.Inc()
		return s.journalFailed(msg, custody, fmt.Errorf("journal append: %w", err)), nil
	}
	if plan != nil {
		if getErr != nil {
			return s.custodyFailed(queueID, nrcpt, fmt.Errorf("journal get of duplicate %s: %w", res.ID, getErr)), nil
		}
		if res.Duplicate {
			if n := plan.adoptStored(stored.Envelope.Recipients); n > 0 {
				s.log.Warn("recipients of a duplicate not found in the stored copy; they stay with the MTA",
					"queue_id", queueID, "id", res.ID.String(), "unmatched", n)
			}
		}
		custody = plan.n > 0 // a panic from here on must not ACCEPT either
		if plan.n > 0 {
			return s.takeCustody(m, plan, queueID, res), nil
		}
	}
	result := resultJournaled
	if res.Duplicate {
		result = resultDuplicate
	}
	s.srv.metrics.messages.WithLabelValues(result).Inc()
	s.log.Info("message journaled", "queue_id", queueID, "id", res.ID.String(), "duplicate", res.Duplicate,
		"size", size, "recipients", nrcpt, "spooled", onDisk, "append_seconds", elapsed.Seconds())
	return gomilter.RespAccept, nil
}

// journalFailed counts and logs a message that could not be journaled and
// returns the configured answer, or TEMPFAIL if some recipient was to be
// taken into custody (custody.go). The error is never returned to go-milter:
// that would drop the whole MTA connection instead of answering this message.
func (s *session) journalFailed(msg *message, custody bool, cause error) *gomilter.Response {
	if custody {
		return s.custodyFailed(msg.env.QueueID, len(msg.env.Recipients), fmt.Errorf("not journaled: %w", cause))
	}
	resp, result := gomilter.RespAccept, resultErrorAccepted
	if s.srv.opts.OnJournalError == TempFail {
		resp, result = gomilter.RespTempFail, resultErrorTempFail
	}
	s.srv.metrics.messages.WithLabelValues(result).Inc()
	s.log.Error("message not journaled", "queue_id", msg.env.QueueID, "recipients", len(msg.env.Recipients),
		"answer", s.srv.opts.OnJournalError.String(), "err", cause)
	return resp
}

// startProgress sends SMFIR_PROGRESS every ProgressInterval until the returned
// function is called. The returned function (idempotent) waits for the ticker
// goroutine, so that a progress packet is never written after (or interleaved
// with) the final reply that go-milter writes when EndOfMessage returns.
func (s *session) startProgress(m gomilter.Modifier) (stop func()) {
	interval := s.srv.opts.ProgressInterval
	if interval < 0 || m.Version() < 6 { // SMFIR_PROGRESS is protocol 6
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				s.srv.metrics.panics.Inc()
				s.log.Error("panic in progress ticker", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
		}()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := m.Progress(); err != nil {
					s.log.Warn("sending progress to the MTA", "err", err)
					return
				}
				s.log.Debug("sent progress while the journal write is in flight")
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// abortMessage counts and drops the message in progress.
func (s *session) abortMessage(why string) {
	if s.msg == nil {
		return
	}
	s.srv.metrics.messages.WithLabelValues(resultAborted).Inc()
	s.log.Debug("message aborted", "reason", why, "recipients", len(s.msg.env.Recipients))
	s.discard()
}

// Abort is SMFIC_ABORT: RSET, QUIT or a lost SMTP client mid-transaction.
// Postfix also sends it after end-of-message and sometimes twice; only a
// message in progress counts as aborted.
func (s *session) Abort(gomilter.Modifier) (err error) {
	defer s.recoverCallback("abort", nil, &err)
	s.abortMessage("abort")
	return nil
}

func (s *session) Unknown(string, gomilter.Modifier) (*gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Cleanup runs when the MTA connection ends, whatever the reason.
func (s *session) Cleanup(gomilter.Modifier) {
	defer s.recoverCallback("cleanup", nil, nil)
	defer s.c.sessionEnded()
	s.abortMessage("connection closed")
	s.log.Debug("milter connection closed")
}

var _ gomilter.Milter = (*session)(nil)

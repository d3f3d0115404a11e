package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/notify"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	err452 = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full, try later"}
	err550 = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
)

// (a) One transaction, 250 for one recipient and 452 for the other.
func TestMixedReplies(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("b@example.com", err452)
	clock := &testClock{now: time.Now()}
	id := appendMsg(t, j, "sender@example.org", "a", clock.Now(),
		custody("a@example.com"), custody("b@example.com"))
	reg := prometheus.NewRegistry()
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Clock: clock.Now,
		RetryMin: time.Hour, Registerer: reg})

	a := waitState(t, j, id, 0, journal.StateDelivered)
	b := waitState(t, j, id, 1, journal.StateRetrying)
	if a.Attempts != 1 || b.Attempts != 1 {
		t.Errorf("attempts = %d, %d; want 1, 1", a.Attempts, b.Attempts)
	}
	if !strings.HasPrefix(a.LastReply, "250 ") {
		t.Errorf("a: LastReply %q, want the 250", a.LastReply)
	}
	if !strings.HasPrefix(b.LastReply, "452 4.2.2") {
		t.Errorf("b: LastReply %q, want the 452", b.LastReply)
	}
	// RetryMin 1h jittered ±25 %.
	if lo, hi := clock.Now().Add(45*time.Minute), clock.Now().Add(75*time.Minute); b.NextAttempt.Before(lo) || b.NextAttempt.After(hi) {
		t.Errorf("NextAttempt %v not in [%v, %v]", b.NextAttempt, lo, hi)
	}
	if got := f.count("a@example.com"); got != 1 {
		t.Errorf("a delivered %d times", got)
	}
	if _, txns := f.stats(); txns != 1 {
		t.Errorf("%d transactions, want 1 for both recipients", txns)
	}
	eventually(t, "metrics", func() bool {
		return metricValue(t, reg, "lifeline_replay_recipients_total", "server", "mbx", "result", "delivered") == 1 &&
			metricValue(t, reg, "lifeline_replay_recipients_total", "server", "mbx", "result", "retrying") == 1 &&
			metricValue(t, reg, "lifeline_custody_backlog", "server", "mbx") == 1
	})
	if n := metricValue(t, reg, "lifeline_replay_seconds"); n != 1 {
		t.Errorf("lifeline_replay_seconds count %v, want 1", n)
	}
}

// (b) 550 → failed, a DSN from <> to the sender with the RFC 3464
// structure, a permanent_failure event; a null-sender message gets no DSN.
func TestPermanentFailureDSN(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("gone@example.com", err550)
	mta := newCaptureSMTP(t)
	ev := &events{}
	now := time.Now()
	id := appendMsg(t, j, "sender@example.org", "b", now, custody("ok@example.com"), custody("gone@example.com"))
	bounce := appendMsg(t, j, "", "bounce", now, custody("gone@example.com"))
	reg := prometheus.NewRegistry()
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), DSN: true,
		Submit: "tcp:" + mta.addr, Notifier: ev, Registerer: reg})

	waitState(t, j, id, 0, journal.StateDelivered)
	rc := waitState(t, j, id, 1, journal.StateFailed)
	if !strings.HasPrefix(rc.LastReply, "550 5.1.1") {
		t.Errorf("LastReply %q", rc.LastReply)
	}
	waitState(t, j, bounce, 0, journal.StateFailed)
	eventually(t, "run to finish", func() bool {
		p := r.Progress()[0]
		return !p.Running && p.Failed == 2
	})
	msgs := mta.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d DSNs, want 1 (none for the null sender)", len(msgs))
	}
	dsn := msgs[0]
	if dsn.from != "" {
		t.Errorf("DSN MAIL FROM:<%s>, want <> (RFC 3464 §2)", dsn.from)
	}
	if !slices.Equal(dsn.to, []string{"sender@example.org"}) {
		t.Errorf("DSN to %v", dsn.to)
	}
	checkDSN(t, dsn.data, "gone@example.com", "5.1.1", "<b@example.org>")
	if n := metricValue(t, reg, "lifeline_replay_dsn_total", "result", "sent"); n != 1 {
		t.Errorf("dsn sent = %v", n)
	}
	fails := ev.kinds(notify.KindPermanentFailure)
	var ids []string
	for _, f := range fails {
		if f.Recipient != "gone@example.com" || f.Server != "mbx" || !strings.HasPrefix(f.Reply, "550 5.1.1") {
			t.Errorf("permanent_failure event %+v", f)
		}
		ids = append(ids, f.MessageID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"<b@example.org>", "<bounce@example.org>"}) {
		t.Errorf("permanent_failure events for %v", ids)
	}
	fin := ev.kinds(notify.KindReplayFinished)
	if len(fin) != 1 || fin[0].Delivered != 1 || fin[0].Failed != 2 {
		t.Errorf("replay_finished events %+v", fin)
	}
}

func checkDSN(t *testing.T, raw []byte, rcpt, status, msgid string) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("Auto-Submitted %q", m.Header.Get("Auto-Submitted"))
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		parts = append(parts, b)
	}
	if want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}; !slices.Equal(types, want) {
		t.Fatalf("DSN parts %v, want %v (RFC 3464 §2, RFC 6522)", types, want)
	}
	ds := string(parts[1])
	for _, want := range []string{
		"Reporting-MTA: dns; lifeline.test\r\n",
		"Arrival-Date: ",
		"Final-Recipient: rfc822; " + rcpt + "\r\n",
		"Action: failed\r\n",
		"Status: " + status + "\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 ",
	} {
		if !strings.Contains(ds, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, ds)
		}
	}
	// Per-message fields, a blank line, per-recipient fields (RFC 3464 §2.1).
	if i, k := strings.Index(ds, "Reporting-MTA"), strings.Index(ds, "\r\n\r\nFinal-Recipient"); i < 0 || k < i {
		t.Errorf("delivery-status groups out of order:\n%s", ds)
	}
	if !strings.Contains(string(parts[2]), "Message-ID: "+msgid) || strings.Contains(string(parts[2]), "This is message") {
		t.Errorf("rfc822-headers part:\n%s", parts[2])
	}
	if !strings.Contains(string(parts[0]), rcpt) {
		t.Errorf("human part does not name the recipient:\n%s", parts[0])
	}
}

// (c) The server closes the connection after DATA without any reply: every
// recipient is retrying (it may or may not have been delivered).
func TestDropAfterData(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setDrop(true)
	id := appendMsg(t, j, "sender@example.org", "c", time.Now(), custody("a@example.com"), custody("b@example.com"))
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), RetryMin: time.Hour})
	for i := range 2 {
		rc := waitState(t, j, id, i, journal.StateRetrying)
		if rc.Attempts != 1 || !strings.HasPrefix(rc.LastReply, "no reply") {
			t.Errorf("rcpt %d: attempts %d, reply %q", i, rc.Attempts, rc.LastReply)
		}
	}
}

// (d) A retrying recipient comes due (clock moved, Wake) and is delivered
// exactly once; the recipient delivered before is not sent again.
func TestRetryDeliversOnce(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("b@example.com", err452)
	clock := &testClock{now: time.Now()}
	id := appendMsg(t, j, "sender@example.org", "d", clock.Now(), custody("a@example.com"), custody("b@example.com"))
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Clock: clock.Now,
		RetryMin: time.Minute, RetryMax: time.Hour})
	b := waitState(t, j, id, 1, journal.StateRetrying)
	f.setData("b@example.com", nil)
	eventually(t, "next attempt known", func() bool { return !r.Progress()[0].NextAttempt.IsZero() })
	clock.Add(b.NextAttempt.Sub(clock.Now()) + time.Second)
	r.Wake("mbx")
	b = waitState(t, j, id, 1, journal.StateDelivered)
	if b.Attempts != 2 {
		t.Errorf("attempts %d, want 2", b.Attempts)
	}
	eventually(t, "run to finish", func() bool { return !r.Progress()[0].Running })
	if a, bb := f.count("a@example.com"), f.count("b@example.com"); a != 1 || bb != 1 {
		t.Errorf("delivered a %d, b %d times; want 1, 1", a, bb)
	}
}

// (e) Nothing is delivered while the server is in outage, not even after a
// Wake; it all goes once the outage ends and Wake is called.
func TestOutagePauses(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	out := &switchOutage{}
	out.on.Store(true)
	var ids []journal.ID
	for i := range 5 {
		ids = append(ids, appendMsg(t, j, "sender@example.org", "e"+string(rune('0'+i)), time.Now(), custody("a@example.com")))
	}
	reg := prometheus.NewRegistry()
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Outage: out, Registerer: reg})
	eventually(t, "paused with the backlog counted", func() bool {
		p := r.Progress()[0]
		return p.Paused && p.Backlog == 5
	})
	if v := metricValue(t, reg, "lifeline_custody_backlog", "server", "mbx"); v != 5 {
		t.Errorf("backlog gauge %v", v)
	}
	if v := metricValue(t, reg, "lifeline_custody_oldest_seconds", "server", "mbx"); v <= 0 {
		t.Errorf("oldest gauge %v", v)
	}
	r.Wake("mbx") // still in outage: must not deliver
	eventually(t, "the wake to be consumed", func() bool { return len(r.queues[0].wake) == 0 })
	if conns, _ := f.stats(); conns != 0 {
		t.Fatalf("%d connections during the outage", conns)
	}
	out.on.Store(false)
	r.Wake("mbx")
	for _, id := range ids {
		waitState(t, j, id, 0, journal.StateDelivered)
	}
	if n := f.count("a@example.com"); n != 5 {
		t.Errorf("delivered %d, want 5", n)
	}
	eventually(t, "backlog 0", func() bool { p := r.Progress()[0]; return p.Backlog == 0 && !p.Running })
}

// The pause is immediate: an outage declared mid-replay stops dispatching.
func TestOutageMidReplay(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	out := &switchOutage{}
	for i := range 40 {
		appendMsg(t, j, "sender@example.org", "m"+strings.Repeat("x", i), time.Now(), custody("a@example.com"))
	}
	// One message per 50 ms: the outage is declared after a few.
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Outage: out, Rate: 20, Concurrency: 1})
	eventually(t, "a few deliveries", func() bool { return f.count("a@example.com") >= 2 })
	out.on.Store(true)
	eventually(t, "pause", func() bool { return r.Progress()[0].Paused })
	n := f.count("a@example.com")
	if n >= 40 {
		t.Fatalf("all %d delivered despite the outage", n)
	}
	// Nothing more while paused: Wake runs a full scheduler cycle.
	r.Wake("mbx")
	eventually(t, "the wake to be consumed", func() bool { return len(r.queues[0].wake) == 0 })
	if m := f.count("a@example.com"); m > n+1 {
		t.Errorf("%d more delivered after the pause", m-n)
	}
	out.on.Store(false)
	r.Wake("mbx")
	eventually(t, "all delivered", func() bool { return f.count("a@example.com") == 40 })
}

// (f) A restarted Replayer on the same journal finishes what the first one
// left: retrying recipients with their persisted next attempt.
func TestRestartResumes(t *testing.T) {
	dir := t.TempDir()
	j := openJournal(t, dir)
	f := newFakeLMTP(t, true)
	for _, rc := range []string{"a@example.com", "b@example.com"} {
		f.setData(rc, err452)
	}
	var ids []journal.ID
	for i := range 3 {
		ids = append(ids, appendMsg(t, j, "sender@example.org", "f"+string(rune('0'+i)), time.Now(),
			custody("a@example.com"), custody("b@example.com")))
	}
	opts := Options{Journal: j, Servers: lmtpServer(f), RetryMin: 200 * time.Millisecond,
		RetryMax: 200 * time.Millisecond, Hostname: "lifeline.test", Logger: testLogger(t)}
	r1, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r1.Serve(context.Background()) }()
	for _, id := range ids {
		waitState(t, j, id, 1, journal.StateRetrying)
	}
	stopReplayer(t, r1, errc)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = openJournal(t, dir)
	t.Cleanup(func() { _ = j.Close() })
	for _, rc := range []string{"a@example.com", "b@example.com"} {
		f.setData(rc, nil)
	}
	opts.Journal = j
	startReplayer(t, opts) // no Wake: it finds the custody by itself
	for _, id := range ids {
		waitState(t, j, id, 0, journal.StateDelivered)
		waitState(t, j, id, 1, journal.StateDelivered)
	}
	if a, b := f.count("a@example.com"), f.count("b@example.com"); a != 3 || b != 3 {
		t.Errorf("delivered a %d, b %d; want 3, 3", a, b)
	}
}

// (g) A recipient with two mailboxes, one 250 and one 452: the retry goes
// only to the second (Done), so the first never gets a second copy.
func TestMultiMailboxDone(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("m2@example.com", err452)
	clock := &testClock{now: time.Now()}
	id := appendMsg(t, j, "sender@example.org", "g", clock.Now(),
		custody("team@example.com", "m1@example.com", "m2@example.com"))
	r := startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Clock: clock.Now, RetryMin: time.Minute})
	rc := waitState(t, j, id, 0, journal.StateRetrying)
	if !slices.Equal(rc.Done, []string{"m1@example.com"}) {
		t.Errorf("Done %v, want [m1]", rc.Done)
	}
	if !strings.Contains(rc.LastReply, "m2@example.com: 452") {
		t.Errorf("LastReply %q", rc.LastReply)
	}
	f.setData("m2@example.com", nil)
	clock.Add(2 * time.Minute)
	r.Wake("mbx")
	rc = waitState(t, j, id, 0, journal.StateDelivered)
	if !slices.Equal(rc.Done, []string{"m1@example.com", "m2@example.com"}) {
		t.Errorf("Done %v", rc.Done)
	}
	if a, b := f.count("m1@example.com"), f.count("m2@example.com"); a != 1 || b != 1 {
		t.Errorf("m1 %d, m2 %d deliveries; want 1, 1", a, b)
	}
}

// (h) The webhook hears replay_finished with the counts.
func TestWebhookReplayFinished(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	var mu sync.Mutex
	var got []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer hook.Close()
	n, err := notify.New(notify.Options{Webhook: hook.URL, Hostname: "lifeline.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	appendMsg(t, j, "sender@example.org", "h1", time.Now(), custody("a@example.com"))
	appendMsg(t, j, "sender@example.org", "h2", time.Now(), custody("b@example.com"))
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), Notifier: n})
	eventually(t, "webhook call", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	m := got[0]
	if m["kind"] != "replay_finished" || m["server"] != "mbx" || m["delivered"] != 2.0 || m["failed"] != 0.0 {
		t.Errorf("webhook payload %v", m)
	}
	if _, ok := m["duration_seconds"]; !ok {
		if m["delivered"] == nil {
			t.Errorf("no duration in %v", m)
		}
	}
}

// RCPT-stage refusals are per recipient too; with none accepted DATA is
// skipped.
func TestRcptRefused(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setRcpt("x@example.com", err550)
	f.setRcpt("y@example.com", err452)
	id := appendMsg(t, j, "sender@example.org", "r", time.Now(), custody("x@example.com"), custody("y@example.com"))
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), RetryMin: time.Hour})
	waitState(t, j, id, 0, journal.StateFailed)
	waitState(t, j, id, 1, journal.StateRetrying)
	if _, txns := f.stats(); txns != 0 {
		t.Errorf("DATA sent %d times with no accepted recipient", txns)
	}
}

// A recipient still temporary after GiveUpAfter of retrying fails with
// "gave up", after as many attempts as the backoffs take to add up to it:
// 10+20+40+40 ms ≥ 100 ms after the 5th.
func TestGiveUp(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("a@example.com", err452)
	mta := newCaptureSMTP(t)
	id := appendMsg(t, j, "sender@example.org", "gu", time.Now(), custody("a@example.com"))
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), DSN: true, Submit: "tcp:" + mta.addr,
		RetryMin: 10 * time.Millisecond, RetryMax: 40 * time.Millisecond, GiveUpAfter: 100 * time.Millisecond})
	rc := waitState(t, j, id, 0, journal.StateFailed)
	if !strings.HasPrefix(rc.LastReply, "gave up after 5 attempts") || rc.Attempts != 5 {
		t.Errorf("LastReply %q after %d attempts", rc.LastReply, rc.Attempts)
	}
	eventually(t, "DSN", func() bool { return len(mta.messages()) == 1 })
	if !bytes.Contains(mta.messages()[0].data, []byte("Status: 4.4.7")) {
		t.Errorf("DSN without 4.4.7:\n%s", mta.messages()[0].data)
	}
}

// smtp mode re-injects to the RCPT TO address, not the mailboxes.
func TestReinjectSMTP(t *testing.T) {
	j := newJournal(t)
	mta := newFakeLMTP(t, false)
	id := appendMsg(t, j, "sender@example.org", "s", time.Now(), custody("alias@example.com", "m1@example.com", "m2@example.com"))
	startReplayer(t, Options{Journal: j, Servers: []Server{{Name: "mbx"}}, Mode: ModeSMTP, Reinject: "tcp:" + mta.addr})
	waitState(t, j, id, 0, journal.StateDelivered)
	if n := mta.count("alias@example.com"); n != 1 {
		t.Errorf("re-injected %d times", n)
	}
	if n := mta.count("m1@example.com"); n != 0 {
		t.Errorf("sent to the mailbox in smtp mode")
	}
	mta.mu.Lock()
	defer mta.mu.Unlock()
	if !slices.Equal(mta.froms, []string{"sender@example.org"}) {
		t.Errorf("MAIL FROM %v", mta.froms)
	}
}

// Other servers' custody is left alone; an unreachable server does not burn
// the attempts of the whole backlog.
func TestUnreachable(t *testing.T) {
	j := newJournal(t)
	var ids []journal.ID
	for i := range 5 {
		ids = append(ids, appendMsg(t, j, "sender@example.org", "u"+string(rune('0'+i)), time.Now(), custody("a@example.com")))
	}
	other := custody("o@example.com")
	other.Server = "other"
	oid := appendMsg(t, j, "sender@example.org", "other", time.Now(), other)
	// A port with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	startReplayer(t, Options{Journal: j, Servers: []Server{{Name: "mbx", Network: "tcp", Address: addr}},
		RetryMin: time.Hour, Concurrency: 1})
	waitState(t, j, ids[0], 0, journal.StateRetrying)
	// The others keep their state: the pass stopped at the first failure.
	for _, id := range ids[1:] {
		if rc := getEntry(t, j, id).Envelope.Recipients[0]; rc.Attempts != 0 {
			t.Errorf("attempt spent on %s while the server was unreachable", id)
		}
	}
	if rc := getEntry(t, j, oid).Envelope.Recipients[0]; rc.State != journal.StateCustody {
		t.Errorf("other server's recipient touched: %v", rc.State)
	}
}

func TestBackoff(t *testing.T) {
	r := &Replayer{opts: Options{RetryMin: 30 * time.Second, RetryMax: 30 * time.Minute, Rand: func() float64 { return 0.5 }}}
	for _, c := range []struct {
		attempts int
		want     time.Duration
	}{{0, 30 * time.Second}, {1, time.Minute}, {5, 16 * time.Minute}, {6, 30 * time.Minute}, {60, 30 * time.Minute}} {
		if got := r.backoff(c.attempts); got != c.want {
			t.Errorf("backoff(%d) = %v, want %v", c.attempts, got, c.want)
		}
	}
	r.opts.Rand = func() float64 { return 0 }
	if got := r.backoff(0); got != 22500*time.Millisecond {
		t.Errorf("low jitter %v", got)
	}
	r.opts.Rand = func() float64 { return 0.9999999 }
	if got := r.backoff(0); got < 37*time.Second || got > 37500*time.Millisecond {
		t.Errorf("high jitter %v", got)
	}
}

func TestOptionsErrors(t *testing.T) {
	_, err := New(Options{Mode: "uucp", DSN: true, Servers: []Server{{Name: "a"}, {Name: "a"}}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Journal", "uucp", "submit", "twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// Mail held in custody longer than GiveUpAfter (a long outage), or whose
// clock says so after a jump, does not fail at its first 4xx: give-up counts
// retrying, not the time since arrival.
func TestNoGiveUpOnLongCustody(t *testing.T) {
	j := newJournal(t)
	f := newFakeLMTP(t, true)
	f.setData("a@example.com", err452)
	id := appendMsg(t, j, "sender@example.org", "old", time.Now().Add(-30*24*time.Hour), custody("a@example.com"))
	startReplayer(t, Options{Journal: j, Servers: lmtpServer(f), RetryMin: time.Hour})
	rc := waitState(t, j, id, 0, journal.StateRetrying)
	if rc.Attempts != 1 || strings.HasPrefix(rc.LastReply, "gave up") {
		t.Errorf("after one 452: %d attempts, %q", rc.Attempts, rc.LastReply)
	}
}

func TestRetried(t *testing.T) {
	r := &Replayer{opts: Options{RetryMin: 30 * time.Second, RetryMax: 30 * time.Minute, GiveUpAfter: 5 * 24 * time.Hour}}
	for _, c := range []struct {
		attempts int
		want     time.Duration
	}{
		{0, 0},
		{1, 30 * time.Second},
		{3, 30*time.Second + time.Minute + 2*time.Minute},
		{7, 30*time.Second + (1+2+4+8+16)*time.Minute + 30*time.Minute},
	} {
		if got := r.retried(c.attempts); got != c.want {
			t.Errorf("retried(%d) = %v, want %v", c.attempts, got, c.want)
		}
	}
	// About 5 days of 30-minute backoffs; the sum stops once it is there.
	if got := r.retried(1 << 30); got < 5*24*time.Hour || got > 5*24*time.Hour+30*time.Minute {
		t.Errorf("retried(2^30) = %v", got)
	}
}

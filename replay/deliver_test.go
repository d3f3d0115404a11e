package replay

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func newTestDeliverer(t *testing.T, f *fakeLMTP, smtp bool) *Deliverer {
	t.Helper()
	d := NewDeliverer(DelivererOptions{Network: "tcp", Address: f.addr, SMTP: smtp, MaxIdle: 2})
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// Sequential transactions share one connection.
func TestDelivererReusesConnection(t *testing.T) {
	f := newFakeLMTP(t, true)
	d := newTestDeliverer(t, f, false)
	for i := range 5 {
		rs, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com"}, strings.NewReader(message(string(rune('0'+i)))))
		if err != nil || len(rs) != 1 || rs[0].Code != 250 {
			t.Fatalf("Deliver: %v %+v", err, rs)
		}
	}
	if conns, txns := f.stats(); conns != 1 || txns != 5 {
		t.Errorf("%d connections for %d transactions, want 1", conns, txns)
	}
}

// Per-recipient LMTP replies, RCPT refusals, duplicates and order.
func TestDelivererReplies(t *testing.T) {
	f := newFakeLMTP(t, true)
	f.setRcpt("r@example.com", err550)
	f.setData("t@example.com", err452)
	d := newTestDeliverer(t, f, false)
	rs, err := d.Deliver(context.Background(), "", []string{"ok@example.com", "r@example.com", "t@example.com", "ok@example.com"},
		strings.NewReader(message("x")))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		rcpt     string
		code     int
		enhanced string
	}{{"ok@example.com", 250, "2.0.0"}, {"r@example.com", 550, "5.1.1"}, {"t@example.com", 452, "4.2.2"}, {"ok@example.com", 250, "2.0.0"}}
	for i, w := range want {
		if rs[i].Rcpt != w.rcpt || rs[i].Code != w.code || rs[i].Enhanced != w.enhanced {
			t.Errorf("reply %d = %+v, want %v", i, rs[i], w)
		}
	}
	if n := f.count("ok@example.com"); n != 1 {
		t.Errorf("duplicate recipient delivered %d times", n)
	}
	// Only refusals: no DATA, RSET, and the connection is reused.
	rs, err = d.Deliver(context.Background(), "s@example.org", []string{"r@example.com"}, strings.NewReader(message("y")))
	if err != nil || rs[0].Code != 550 {
		t.Fatalf("%v %+v", err, rs)
	}
	rs, err = d.Deliver(context.Background(), "s@example.org", []string{"ok@example.com"}, strings.NewReader(message("z")))
	if err != nil || rs[0].Code != 250 {
		t.Fatalf("%v %+v", err, rs)
	}
	if conns, txns := f.stats(); conns != 1 || txns != 2 {
		t.Errorf("conns %d txns %d, want 1 and 2", conns, txns)
	}
}

// A connection dropped after DATA: code 0 for all, an error, and the next
// transaction uses a new connection.
func TestDelivererDrop(t *testing.T) {
	f := newFakeLMTP(t, true)
	f.setDrop(true)
	d := newTestDeliverer(t, f, false)
	rs, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com", "b@example.com"}, strings.NewReader(message("d")))
	if err == nil {
		t.Fatal("no error")
	}
	for _, r := range rs {
		if r.Code != 0 || !r.Temporary() || r.Text == "" {
			t.Errorf("reply %+v, want code 0 with a reason", r)
		}
	}
	f.setDrop(false)
	rs, err = d.Deliver(context.Background(), "s@example.org", []string{"a@example.com"}, strings.NewReader(message("e")))
	if err != nil || rs[0].Code != 250 {
		t.Fatalf("%v %+v", err, rs)
	}
	if conns, _ := f.stats(); conns != 2 {
		t.Errorf("%d connections, want 2", conns)
	}
}

// A body that fails to read is never terminated with the final dot.
func TestDelivererBodyError(t *testing.T) {
	f := newFakeLMTP(t, true)
	d := newTestDeliverer(t, f, false)
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npartial"), iotest.ErrReader(errors.New("disk gone")))
	rs, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com"}, body)
	if err == nil || !strings.Contains(err.Error(), "disk gone") || rs[0].Code != 0 {
		t.Fatalf("%v %+v", err, rs)
	}
	// The server must not have delivered the truncated message.
	rs, err = d.Deliver(context.Background(), "s@example.org", []string{"b@example.com"}, strings.NewReader(message("ok")))
	if err != nil || rs[0].Code != 250 {
		t.Fatal(err)
	}
	if n := f.count("a@example.com"); n != 0 {
		t.Errorf("truncated message delivered %d times", n)
	}
}

// A pooled connection the server closed meanwhile is replaced silently.
func TestDelivererStaleConnection(t *testing.T) {
	f := newFakeLMTP(t, true)
	d := newTestDeliverer(t, f, false)
	if _, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com"}, strings.NewReader(message("1"))); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	_ = d.idle[0].conn.Close() // as if the server had timed it out
	d.mu.Unlock()
	rs, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com"}, strings.NewReader(message("2")))
	if err != nil || rs[0].Code != 250 {
		t.Fatalf("%v %+v", err, rs)
	}
}

// SMTP: one reply after DATA for every accepted recipient.
func TestDelivererSMTP(t *testing.T) {
	f := newFakeLMTP(t, false)
	f.setData("b@example.com", err452)
	d := newTestDeliverer(t, f, true)
	rs, err := d.Deliver(context.Background(), "s@example.org", []string{"a@example.com", "b@example.com"}, strings.NewReader(message("s")))
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Code != 452 || rs[1].Code != 452 {
		t.Errorf("replies %+v, want 452 for both", rs)
	}
}

// ctx ending mid-transaction aborts it.
func TestDelivererContext(t *testing.T) {
	f := newFakeLMTP(t, true)
	d := newTestDeliverer(t, f, false)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rs, err := d.Deliver(ctx, "s@example.org", []string{"a@example.com"}, endless{})
	if err == nil || rs[0].Code != 0 {
		t.Fatalf("%v %+v", err, rs)
	}
	if n := f.count("a@example.com"); n != 0 {
		t.Errorf("delivered %d", n)
	}
}

func TestUnreachableError(t *testing.T) {
	d := NewDeliverer(DelivererOptions{Network: "unix", Address: t.TempDir() + "/none.sock"})
	rs, err := d.Deliver(context.Background(), "", []string{"a@example.com"}, strings.NewReader("x"))
	if !errors.Is(err, ErrUnreachable) || rs[0].Code != 0 {
		t.Fatalf("%v %+v", err, rs)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Deliver(context.Background(), "", []string{"a@example.com"}, strings.NewReader("x")); !errors.Is(err, ErrDelivererClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// endless is a message body that never ends, arriving slowly.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return copy(p, "Subject: x\r\n"), nil
}

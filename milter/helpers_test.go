package milter

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testServer is a Server on a real loopback TCP socket.
type testServer struct {
	*Server
	t          testing.TB
	addr       string
	reg        *prometheus.Registry
	logs       *logBuffer
	spoolDir   string
	serveErr   chan error
	wantPanics float64 // lifeline_panics_total the test expects at the end
	stopped    bool
}

// startServer starts a Server with opts on 127.0.0.1 and registers its
// shutdown and the end-of-test checks: Serve returns ErrServerClosed, no
// unexpected panic was counted, and no spool file is left, by name or open.
func startServer(t testing.TB, opts Options, configure ...func(*Server)) *testServer {
	t.Helper()
	return startServerOn(t, "tcp", "127.0.0.1:0", opts, configure...)
}

// startServerOn is startServer listening on network and address.
func startServerOn(t testing.TB, network, address string, opts Options, configure ...func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{t: t, reg: prometheus.NewRegistry(), logs: &logBuffer{}, serveErr: make(chan error, 1)}
	opts.Registerer = ts.reg
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = t.TempDir()
	}
	ts.spoolDir = opts.SpoolDir
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts.Server = s
	for _, f := range configure {
		f(s)
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts.addr = ln.Addr().String()
	go func() { ts.serveErr <- s.Serve(ln) }()
	t.Cleanup(func() {
		ts.stop(5 * time.Second)
		if got := ts.metric("lifeline_panics_total", "component", "milter"); got != ts.wantPanics {
			t.Errorf("lifeline_panics_total = %v, want %v", got, ts.wantPanics)
		}
		ts.checkNoSpoolFiles()
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

// stop shuts the server down and checks that Serve ended with ErrServerClosed.
func (ts *testServer) stop(timeout time.Duration) {
	ts.t.Helper()
	if ts.stopped {
		return
	}
	ts.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		ts.t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-ts.serveErr:
		if !errors.Is(err, ErrServerClosed) {
			ts.t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(timeout):
		ts.t.Errorf("Serve did not return after Shutdown")
	}
}

// checkNoSpoolFiles fails the test if a spool file is still in the spool
// directory or still open (eventually: a forced shutdown may leave a
// connection goroutine finishing).
func (ts *testServer) checkNoSpoolFiles() {
	ts.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		entries, err := os.ReadDir(ts.spoolDir)
		if err != nil {
			ts.t.Errorf("reading spool dir: %v", err)
			return
		}
		open := openSpoolFiles(ts.t, ts.spoolDir)
		if len(entries) == 0 && len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Errorf("spool files left behind: %d in %s, open: %v", len(entries), ts.spoolDir, open)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openSpoolFiles lists the spool files of dir this process has open, from
// /proc/self/fd (Linux only; elsewhere it reports none).
func openSpoolFiles(t testing.TB, dir string) []string {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(dir, "lifeline-milter-")) {
			out = append(out, target)
		}
	}
	return out
}

// metric returns the value of a counter (or the sample count of a histogram)
// with the given label pairs, 0 if absent.
func (ts *testServer) metric(name string, labelPairs ...string) float64 {
	ts.t.Helper()
	return metricValue(ts.t, ts.reg, name, labelPairs...)
}

func metricValue(t testing.TB, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if !hasLabel(m, labelPairs[i], labelPairs[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// logBuffer collects the server's log lines; they are printed when a test
// fails (t.Log cannot be used from goroutines that may outlive the test).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mta is one MTA-side milter connection, driven by go-milter's own client the
// way Postfix drives a milter.
type mta struct {
	t    testing.TB
	sess *gomilter.ClientSession
	bag  *gomilter.MacroBag
}

// dial connects to ts like Postfix does at the start of an SMTP session.
func dial(t testing.TB, addr string, opts ...gomilter.Option) *mta {
	t.Helper()
	return dialOn(t, "tcp", addr, opts...)
}

// dialOn is dial over network.
func dialOn(t testing.TB, network, addr string, opts ...gomilter.Option) *mta {
	t.Helper()
	bag := gomilter.NewMacroBag()
	client := gomilter.NewClient(network, addr, opts...)
	sess, err := client.Session(bag)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	m := &mta{t: t, sess: sess, bag: bag}
	m.mustContinue(sess.Conn("mail.example.net", gomilter.FamilyInet, 40123, "192.0.2.10"))
	m.mustContinue(sess.Helo("mail.example.net"))
	return m
}

func (m *mta) mustContinue(act *gomilter.Action, err error) {
	m.t.Helper()
	if err != nil {
		m.t.Fatalf("milter: %v", err)
	}
	if act.Type != gomilter.ActionContinue {
		m.t.Fatalf("milter answered %v, want continue", act)
	}
}

type rcpt struct{ addr, mailer, host string }

type envelope struct {
	from    string
	rcpts   []rcpt
	queueID string
	auth    string
}

// begin sends the envelope (MAIL FROM, every RCPT TO with its macros, DATA).
func (m *mta) begin(env envelope) {
	m.t.Helper()
	m.bag.Set(gomilter.MacroAuthAuthen, env.auth)
	m.mustContinue(m.sess.Mail(env.from, ""))
	for _, r := range env.rcpts {
		m.bag.Set(gomilter.MacroRcptMailer, r.mailer)
		m.bag.Set(gomilter.MacroRcptHost, r.host)
		m.mustContinue(m.sess.Rcpt(r.addr, ""))
	}
	m.bag.Set(gomilter.MacroQueueId, env.queueID)
	m.mustContinue(m.sess.DataStart())
}

// content sends the message content the way Postfix's milter8_message does:
// each header as name and value (one space after the colon dropped unless
// SMFIP_HDR_LEADSPC was negotiated, folded lines joined by LF), EOH, then the
// body without the separating empty line in 64 KiB chunks of CRLF lines.
func (m *mta) content(raw []byte) {
	m.t.Helper()
	fields, body := parseLikePostfix(raw)
	leadSpace := m.sess.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	for _, f := range fields {
		v := f.value
		if !leadSpace && strings.HasPrefix(v, " ") {
			v = v[1:]
		}
		m.mustContinue(m.sess.HeaderField(f.name, v, nil))
	}
	m.mustContinue(m.sess.HeaderEnd())
	const chunk = 65535 // Postfix's MILTER_CHUNK_SIZE
	for len(body) > 0 {
		n := min(chunk, len(body))
		m.mustContinue(m.sess.BodyChunk(body[:n]))
		body = body[n:]
	}
}

// end sends end-of-message and returns the milter's final answer.
func (m *mta) end() (*gomilter.Action, error) {
	_, act, err := m.sess.End()
	return act, err
}

// send runs one whole transaction and fails unless the answer is want.
func (m *mta) send(env envelope, raw []byte, want gomilter.ActionType) {
	m.t.Helper()
	m.begin(env)
	m.content(raw)
	act, err := m.end()
	if err != nil {
		m.t.Fatalf("end of message: %v", err)
	}
	if act.Type != want {
		m.t.Fatalf("end of message answered %v, want %v", act, want)
	}
}

func (m *mta) abort() {
	m.t.Helper()
	if err := m.sess.Abort(nil); err != nil {
		m.t.Fatalf("abort: %v", err)
	}
}

// headerField is one header as Postfix hands it to a milter that negotiated
// SMFIP_HDR_LEADSPC: the name, and everything after the colon with folded
// lines joined by LF.
type headerField struct{ name, value string }

// parseLikePostfix splits a message as Postfix's smtpd and mime_state do
// (see rebuild.go): lines end at LF (a CR before it is dropped); a header
// starts with a name of printable ASCII, optional blanks and a colon
// ("Name : v" is normalised to "Name: v"); a line starting with a blank
// continues the previous header; the first other line ends the header section
// (an empty one is dropped, anything else starts the body). Body lines are
// returned with CRLF line ends.
func parseLikePostfix(raw []byte) ([]headerField, []byte) {
	text := string(raw)
	var lines []string
	for text != "" {
		line, rest, found := strings.Cut(text, "\n")
		if found {
			line = strings.TrimSuffix(line, "\r")
		}
		lines = append(lines, line)
		text = rest
	}
	var fields []headerField
	i := 0
	for ; i < len(lines); i++ {
		l := lines[i]
		if len(fields) > 0 && l != "" && (l[0] == ' ' || l[0] == '\t') {
			fields[len(fields)-1].value += "\n" + l
			continue
		}
		n := headerNameLen(l)
		if n == 0 {
			break
		}
		rest := strings.TrimLeft(l[n:], " \t")
		fields = append(fields, headerField{name: l[:n], value: rest[1:]})
	}
	if i < len(lines) && lines[i] == "" {
		i++
	}
	var body []byte
	for _, l := range lines[i:] {
		body = append(body, l...)
		body = append(body, '\r', '\n')
	}
	return fields, body
}

// headerNameLen returns the length of the header name that starts line, or 0
// if line does not start a header field (RFC 5322 §2.2 field-name: printable
// US-ASCII except colon; Postfix's is_header also allows blanks before the
// colon).
func headerNameLen(line string) int {
	n := 0
	for n < len(line) && line[n] > ' ' && line[n] < 0x7f && line[n] != ':' {
		n++
	}
	if n == 0 {
		return 0
	}
	j := n
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j < len(line) && line[j] == ':' {
		return n
	}
	return 0
}

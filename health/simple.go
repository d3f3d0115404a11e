package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

func newBufReader(r io.Reader) *bufio.Reader {
	return bufio.NewReader(io.LimitReader(r, maxReplyBytes))
}

// tcpProbe only connects: the weakest check, for servers that speak nothing
// else the probes know.
type tcpProbe struct {
	dialer
}

func (p *tcpProbe) Check(ctx context.Context) error {
	_, stop, err := p.dial(ctx)
	if err != nil {
		return err
	}
	if err := stop(); err != nil {
		return p.fail("close", err)
	}
	return nil
}

// httpProbe GETs a URL and compares the status code, for servers with an
// HTTP health page.
type httpProbe struct {
	url     string
	expect  int
	timeout time.Duration
	client  *http.Client
}

func newHTTPProbe(cfg ProbeConfig) (Probe, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("health: http probe: url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("health: http probe: url %q: want http:// or https:// with a host", cfg.URL)
	}
	if cfg.ExpectStatus == 0 {
		cfg.ExpectStatus = http.StatusOK
	}
	if cfg.ExpectStatus < 100 || cfg.ExpectStatus > 999 {
		return nil, fmt.Errorf("health: http probe: expect_status %d is not an HTTP status", cfg.ExpectStatus)
	}
	// A transport of its own, without keep-alive: each probe must open a
	// connection, or a dead listener could hide behind a pooled one.
	transport := &http.Transport{
		Proxy:               nil, // the health page is asked directly, never through $HTTP_PROXY
		DialContext:         (&net.Dialer{}).DialContext,
		DisableKeepAlives:   true,
		TLSHandshakeTimeout: cfg.Timeout,
	}
	return &httpProbe{
		url:     cfg.URL,
		expect:  cfg.ExpectStatus,
		timeout: cfg.Timeout,
		client: &http.Client{
			Transport: transport,
			Timeout:   cfg.Timeout,
			// The status compared is the one the server sent, not that of
			// wherever a redirect leads.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func (p *httpProbe) Type() string   { return ProbeHTTP }
func (p *httpProbe) String() string { return "http " + p.url }

func (p *httpProbe) Check(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("http probe %s: %w", p.url, err)
	}
	req.Header.Set("User-Agent", "lifeline-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe %s: GET: %w", p.url, err)
	}
	defer func() {
		if cerr := resp.Body.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("http probe %s: close: %w", p.url, cerr)
		}
	}()
	// The start of the body goes into the error: health pages usually say
	// what is wrong.
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != p.expect {
		text := strings.TrimSpace(strings.ToValidUTF8(string(body), "?"))
		if rerr != nil {
			text = rerr.Error()
		}
		return fmt.Errorf("http probe %s: GET: status %d, want %d: %q", p.url, resp.StatusCode, p.expect, text)
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return fmt.Errorf("http probe %s: reading body: %w", p.url, rerr)
	}
	return nil
}

package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/user"
)

// Client calls the admin API of a running `lifeline serve`.
type Client struct {
	base  string // http://HOST:PORT
	token string
	http  *http.Client
}

// NewClient returns a client for the API at addr (HOST:PORT).
func NewClient(addr, token string) *Client {
	return &Client{base: "http://" + addr, token: token, http: &http.Client{}}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if u, err := user.Current(); err == nil {
		req.Header.Set("X-Lifeline-User", u.Username)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s (is `lifeline serve` running?): %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if out == nil {
		return resp, nil
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return resp, nil
}

// Status returns the servers' state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	_, err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// StartOutage declares a manual outage of server.
func (c *Client) StartOutage(ctx context.Context, server, reason string) (Status, error) {
	var st Status
	_, err := c.do(ctx, http.MethodPost, "/v1/outage/start", OutageRequest{Server: server, Reason: reason}, &st)
	return st, err
}

// EndOutage ends a manual outage (or any outage) of server.
func (c *Client) EndOutage(ctx context.Context, server string) (Status, error) {
	var st Status
	_, err := c.do(ctx, http.MethodPost, "/v1/outage/end", OutageRequest{Server: server}, &st)
	return st, err
}

// AddWindow schedules a maintenance window.
func (c *Client) AddWindow(ctx context.Context, w Window) (Window, error) {
	var out Window
	_, err := c.do(ctx, http.MethodPost, "/v1/windows", w, &out)
	return out, err
}

// RemoveWindow deletes a window added through the API.
func (c *Client) RemoveWindow(ctx context.Context, id string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/windows/"+url.PathEscape(id), nil, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// Transitions returns a server's outage history.
func (c *Client) Transitions(ctx context.Context, server string) ([]Transition, error) {
	var out []Transition
	_, err := c.do(ctx, http.MethodGet, "/v1/transitions?server="+url.QueryEscape(server), nil, &out)
	return out, err
}

// Restore runs a restore and calls progress for each line the server sends;
// it returns the final line.
func (c *Client) Restore(ctx context.Context, req RestoreRequest, progress func(RestoreProgress)) (RestoreProgress, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/restore", req, nil)
	if err != nil {
		return RestoreProgress{}, err
	}
	defer resp.Body.Close()
	var last RestoreProgress
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var p RestoreProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return last, fmt.Errorf("restore: bad progress line %q: %w", sc.Text(), err)
		}
		last = p
		if p.Finished {
			if p.Error != "" {
				return p, fmt.Errorf("restore stopped: %s", p.Error)
			}
			return p, nil
		}
		if progress != nil {
			progress(p)
		}
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("restore: %w", err)
	}
	return last, fmt.Errorf("restore: the server ended the stream without a final line")
}

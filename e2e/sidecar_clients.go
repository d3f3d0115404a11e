package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os/exec"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Small clients of the continuity mailbox for the tests and imapbench: a
// go-imap v2 client that logs in, and a bare POP3 login.

// IMAPLogin connects to addr (implicit TLS when tlsConf is set), waits for
// the greeting and logs in. The error of a refused login is the server's
// tagged response (*imap.Error).
func IMAPLogin(addr string, tlsConf *tls.Config, user, password string) (*imapclient.Client, error) {
	opts := &imapclient.Options{Dialer: &net.Dialer{Timeout: 10 * time.Second}}
	var c *imapclient.Client
	var err error
	if tlsConf != nil {
		opts.TLSConfig = tlsConf
		c, err = imapclient.DialTLS(addr, opts)
	} else {
		c, err = imapclient.DialInsecure(addr, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("imap %s: %w", addr, err)
	}
	if err := c.WaitGreeting(); err != nil {
		return nil, errors.Join(fmt.Errorf("imap %s: greeting: %w", addr, err), c.Close())
	}
	if err := c.Login(user, password).Wait(); err != nil {
		return nil, errors.Join(fmt.Errorf("imap %s: LOGIN %s: %w", addr, user, err), c.Close())
	}
	return c, nil
}

// IMAPCount logs in and returns the number of messages in INBOX (STATUS).
func IMAPCount(addr, user, password string) (uint32, error) {
	c, err := IMAPLogin(addr, nil, user, password)
	if err != nil {
		return 0, err
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	err = errors.Join(err, c.Logout().Wait(), c.Close())
	if err != nil || st.NumMessages == nil {
		return 0, fmt.Errorf("imap %s: STATUS INBOX: %v", addr, err)
	}
	return *st.NumMessages, nil
}

// WaitIMAPCount polls until user's INBOX holds want messages.
func WaitIMAPCount(ctx context.Context, addr, user, password string, want uint32, timeout time.Duration) error {
	var got uint32
	err := Poll(ctx, timeout, func() (bool, error) {
		n, err := IMAPCount(addr, user, password)
		got = n
		return err == nil && n == want, err
	})
	if err != nil {
		return fmt.Errorf("waiting for %d messages in %s's INBOX over IMAP (last count %d): %w", want, user, got, err)
	}
	return nil
}

// POP3Login opens a plain POP3 session on addr and sends USER and PASS. It
// returns the server's reply to the first command that failed ("" when the
// login worked); err is for connection problems only.
func POP3Login(addr, user, password string) (refusal string, err error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return "", err
	}
	tp := textproto.NewConn(conn)
	line, err := tp.ReadLine()
	if err != nil {
		return "", fmt.Errorf("pop3 %s: greeting: %w", addr, err)
	}
	if !strings.HasPrefix(line, "+OK") {
		return "", fmt.Errorf("pop3 %s: greeting %q", addr, line)
	}
	for _, cmd := range []string{"USER " + user, "PASS " + password} {
		if err := tp.PrintfLine("%s", cmd); err != nil {
			return "", err
		}
		line, err := tp.ReadLine()
		if err != nil {
			return "", fmt.Errorf("pop3 %s: %s: %w", addr, strings.Fields(cmd)[0], err)
		}
		if !strings.HasPrefix(line, "+OK") {
			return line, nil
		}
	}
	if err := tp.PrintfLine("QUIT"); err != nil {
		return "", err
	}
	_, err = tp.ReadLine()
	return "", err
}

// NeedTool returns the path of an external program, skipping the test when
// it is missing (failing it under CI=true).
func NeedTool(tb TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			tb.Fatalf("e2e: %s is not installed (Debian package %s; CI=true needs it)", name, pkg)
		}
		tb.Skipf("e2e: skipped: %s is not installed (apt-get install %s)", name, pkg)
	}
	return p
}

// TestIDOfBytes returns the value of the message's TestIDHeader ("" when it
// has none).
func TestIDOfBytes(b []byte) string {
	id, err := TestIDOf(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return ""
	}
	return id
}

// IMAPFetchBodies sends UID FETCH uids (UID BODY.PEEK[]) in the selected
// mailbox and calls fn with each message's body as it streams in; fn must
// read what it needs before it returns. uid is 0 when the server sends the
// UID item after the body (RFC 9051 lets it choose the order). It returns
// how many bodies arrived.
func IMAPFetchBodies(c *imapclient.Client, uids imap.UIDSet, fn func(uid imap.UID, body io.Reader) error) (int, error) {
	peek := &imap.FetchItemBodySection{Peek: true}
	cmd := c.Fetch(uids, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{peek}})
	n := 0
	var ferr error
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		var uid imap.UID
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = item.UID
			case imapclient.FetchItemDataBodySection:
				if item.Literal == nil {
					continue
				}
				n++
				if err := fn(uid, item.Literal); err != nil && ferr == nil {
					ferr = err
				}
				// What fn left unread must go before the next item.
				if _, err := io.Copy(io.Discard, item.Literal); err != nil && ferr == nil {
					ferr = err
				}
			}
		}
	}
	return n, errors.Join(cmd.Close(), ferr)
}

// AllUIDs is the UID set 1:* (0 stands for "*").
var AllUIDs = imap.UIDSet{{Start: 1, Stop: 0}}

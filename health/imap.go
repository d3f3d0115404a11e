package health

import (
	"context"
	"fmt"
	"net/textproto"
	"strings"
)

// imapProbe checks the greeting and CAPABILITY and, with a user, LOGIN and
// LOGOUT (RFC 3501).
type imapProbe struct {
	dialer
	user, password string
}

func (p *imapProbe) Check(ctx context.Context) (err error) {
	conn, stop, err := p.dial(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stop(); cerr != nil && err == nil {
			err = p.fail("close", cerr)
		}
	}()
	r := textproto.NewReader(newBufReader(conn))
	w := conn

	// RFC 3501 §7.1: the greeting is an untagged OK (ready, not yet
	// authenticated), PREAUTH (already authenticated) or BYE (refused).
	greeting, err := r.ReadLine()
	if err != nil {
		return p.fail("greeting", err)
	}
	preauth := strings.HasPrefix(strings.ToUpper(greeting), "* PREAUTH")
	if !preauth && !strings.HasPrefix(strings.ToUpper(greeting), "* OK") {
		return p.fail("greeting", fmt.Errorf("server said %q", greeting))
	}

	// RFC 3501 §6.1.1: CAPABILITY answers with an untagged CAPABILITY line
	// and a tagged OK.
	if _, err := fmt.Fprintf(w, "p1 CAPABILITY\r\n"); err != nil {
		return p.fail("CAPABILITY", err)
	}
	untagged, err := readTagged(r, "p1")
	if err != nil {
		return p.fail("CAPABILITY", err)
	}
	var caps string
	for _, l := range untagged {
		if u := strings.ToUpper(l); strings.HasPrefix(u, "* CAPABILITY ") {
			caps = u
		}
	}
	if caps == "" || !strings.Contains(caps, " IMAP4REV1") {
		return p.fail("CAPABILITY", fmt.Errorf("no IMAP4rev1 capability in %q", untagged))
	}

	if p.user != "" && !preauth {
		// RFC 3501 §6.2.3: a server that advertises LOGINDISABLED refuses
		// LOGIN; say so rather than send the password to be refused.
		if strings.Contains(caps+" ", " LOGINDISABLED ") {
			return p.fail("LOGIN", fmt.Errorf("server advertises LOGINDISABLED"))
		}
		// The command holds the password: it is never part of an error.
		if _, err := fmt.Fprintf(w, "p2 LOGIN %s %s\r\n", quote(p.user), quote(p.password)); err != nil {
			return p.fail("LOGIN", err)
		}
		if _, err := readTagged(r, "p2"); err != nil {
			return p.fail("LOGIN "+p.user, err)
		}
	}
	// RFC 3501 §6.1.3: LOGOUT is answered with an untagged BYE and a tagged
	// OK. As with SMTP's QUIT, the answer decides nothing about health.
	if _, err := fmt.Fprintf(w, "p3 LOGOUT\r\n"); err != nil {
		return p.fail("LOGOUT", err)
	}
	return nil
}

// readTagged reads lines until the tagged completion of tag and returns the
// untagged lines before it, or an error with the server's line unless the
// completion is OK (RFC 3501 §7.1).
func readTagged(r *textproto.Reader, tag string) ([]string, error) {
	var untagged []string
	for {
		line, err := r.ReadLine()
		if err != nil {
			return untagged, err
		}
		rest, ok := strings.CutPrefix(line, tag+" ")
		if !ok {
			if len(untagged) < 100 {
				untagged = append(untagged, line)
			}
			continue
		}
		if strings.HasPrefix(strings.ToUpper(rest), "OK") {
			return untagged, nil
		}
		return untagged, fmt.Errorf("server said %q", rest)
	}
}

// quote makes an IMAP quoted string (RFC 3501 §4.3); NewProbe has already
// refused strings that need a literal.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

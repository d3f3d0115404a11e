package policy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/lifelinemail/lifeline/addrmap"
)

// FuzzPolicyRequest feeds arbitrary bytes to the request parser and the
// decision: no panic, attributes within the limits, and a request that
// parses serializes back to one that parses the same.
func FuzzPolicyRequest(f *testing.F) {
	f.Add([]byte(postfixRequest("alice@example.com")))
	f.Add([]byte(postfixRequest("nobody@example.com") + postfixRequest("x@corp.test")))
	f.Add([]byte("request=smtpd_access_policy\r\nprotocol_state=DATA\r\n\r\n"))
	f.Add([]byte("a=b=c\na=d\n\n"))
	f.Add([]byte("=x\n\n"))
	f.Add([]byte("\n"))
	f.Add([]byte("recipient=" + strings.Repeat("x", 300) + "\n\n"))
	f.Add([]byte("state alice@example.com\n"))
	f.Add([]byte("recipient=a\x00b@example.com\nrecipient=\n\n"))
	const maxLine, maxAttrs = 256, 8
	srv, err := New(Options{
		Resolver:      addrmap.New(addrmap.Options{Servers: []addrmap.Server{{Name: "s", Domains: []string{"example.com"}}}, StripDetail: true}),
		Outage:        &outages{down: map[string]bool{"s": true}},
		Known:         func(a string) bool { return strings.HasPrefix(a, "alice") },
		RejectUnknown: true,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), maxLine+2)
		for range 64 {
			req, err := ReadRequest(r, maxLine, maxAttrs)
			if err != nil {
				if req != nil {
					t.Fatal("request with an error")
				}
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrLineTooLong) ||
					errors.Is(err, ErrTooManyAttrs) || errors.Is(err, ErrMalformedLine) || errors.Is(err, ErrEmptyRequest) {
					return
				}
				t.Fatalf("unexpected error %v", err)
			}
			if len(req) == 0 || len(req) > maxAttrs {
				t.Fatalf("%d attributes", len(req))
			}
			names := make([]string, 0, len(req))
			endsCR := false
			for k, v := range req {
				if k == "" || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") || len(k)+len(v)+1 > maxLine {
					t.Fatalf("bad attribute %q=%q", k, v)
				}
				endsCR = endsCR || strings.HasSuffix(v, "\r")
				names = append(names, k)
			}
			action, _ := srv.decide(req)
			if strings.ContainsAny(action, "\r\n") {
				t.Fatalf("action %q breaks the reply", action)
			}
			if endsCR {
				continue // a trailing CR is read as part of the line end
			}
			sort.Strings(names)
			var b strings.Builder
			for _, k := range names {
				b.WriteString(k + "=" + req[k] + "\n")
			}
			b.WriteString("\n")
			again, err := ReadRequest(bufio.NewReaderSize(strings.NewReader(b.String()), maxLine+2), maxLine, maxAttrs)
			if err != nil || len(again) != len(req) {
				t.Fatalf("reparse of %q: %v %v", b.String(), again, err)
			}
			for k, v := range req {
				if again[k] != v {
					t.Fatalf("reparse: %q=%q, was %q", k, again[k], v)
				}
			}
		}
	})
}

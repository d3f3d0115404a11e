package webmail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"strings"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/sidecar/webmail/mailview"
)

// sendSource is journal.Envelope.Source of the Sent copies webmail stores.
const sendSource = "webmail"

type composeData struct {
	To, Cc, Bcc, Subject, Text string
	InReplyTo, References      string
	Fwd, FwdFolder             string   // the forwarded message, whose attachments go along
	FwdNames                   []string // their names, shown
	Answered                   string   // "<folder>/<ref>" of the message replied to
	Disabled, Failed           bool
	Detail                     string
}

func addrList(l []mailview.Address) string {
	parts := make([]string, 0, len(l))
	for _, a := range l {
		parts = append(parts, (&mail.Address{Name: a.Name, Address: a.Email}).String())
	}
	return strings.Join(parts, ", ")
}

// original resolves the message a reply or forward starts from, in the
// user's own folder only.
func (s *Server) original(rq *request, folder, refStr string) (*target, *mailview.Message, error) {
	jbox := box(rq.sess.mailbox, folder)
	ref, ok := parseRef(refStr)
	if jbox == "" || !ok {
		return nil, nil, errNotFound
	}
	m, err := s.resolve(rq.ctx, jbox, ref)
	if err != nil {
		return nil, nil, err
	}
	t := &target{folder: folder, jbox: jbox, ref: ref, m: m, base: "/mail/" + folder + "/" + ref.String()}
	msg, err := s.parse(rq.ctx, m.ID, mailview.Options{MaxTextBytes: maxViewText})
	if errors.Is(err, journal.ErrNotFound) {
		err = errNotFound
	}
	return t, msg, err
}

func (s *Server) composePage(w http.ResponseWriter, r *http.Request, rq *request) {
	q := r.URL.Query()
	d := &composeData{Disabled: s.opts.Relay.Addr == ""}
	me := mailview.Address{Email: rq.sess.mailbox}
	var (
		draft mailview.Draft
		err   error
		t     *target
		orig  *mailview.Message
	)
	switch {
	case q.Get("reply") != "":
		t, orig, err = s.original(rq, q.Get("folder"), q.Get("reply"))
		if err == nil {
			draft = mailview.Reply(orig, me, q.Get("all") == "1")
			d.Answered = t.folder + "/" + t.ref.String()
		}
	case q.Get("forward") != "":
		t, orig, err = s.original(rq, q.Get("folder"), q.Get("forward"))
		if err == nil {
			draft = mailview.Forward(orig, me)
			d.Fwd, d.FwdFolder = t.ref.String(), t.folder
			for _, a := range orig.Attachments {
				d.FwdNames = append(d.FwdNames, a.Filename)
			}
		}
	}
	if errors.Is(err, errNotFound) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return
	}
	if err != nil {
		s.log.Error("webmail: compose", "err", err)
		s.errorPage(w, rq, http.StatusInternalServerError, "internal")
		return
	}
	d.To, d.Cc, d.Subject, d.Text = addrList(draft.To), addrList(draft.Cc), draft.Subject, draft.Text
	d.InReplyTo, d.References = draft.InReplyTo, strings.Join(draft.References, " ")
	s.render(w, rq, http.StatusOK, "compose", &page{Title: tr(rq.lang, "compose"), Data: d})
}

func parseAddrs(s string) ([]mailview.Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	l, err := mail.ParseAddressList(s)
	if err != nil {
		return nil, err
	}
	out := make([]mailview.Address, 0, len(l))
	for _, a := range l {
		out = append(out, mailview.Address{Name: a.Name, Email: a.Address})
	}
	return out, nil
}

// send builds the message, submits it to the relay and saves it in Sent.
func (s *Server) send(w http.ResponseWriter, r *http.Request, rq *request) {
	f := r.PostFormValue
	d := &composeData{To: f("to"), Cc: f("cc"), Bcc: f("bcc"), Subject: f("subject"), Text: f("body"),
		InReplyTo: f("in_reply_to"), References: f("references"), Fwd: f("fwd"), FwdFolder: f("fwd_folder"),
		Answered: f("answered"), Disabled: s.opts.Relay.Addr == ""}
	again := func(code int, msg string) {
		s.render(w, rq, code, "compose", &page{Title: tr(rq.lang, "compose"), Error: msg, Data: d})
	}
	if d.Disabled {
		again(http.StatusServiceUnavailable, tr(rq.lang, "send.disabled"))
		return
	}
	draft := mailview.Draft{
		From: mailview.Address{Email: rq.sess.mailbox}, Subject: d.Subject, Text: d.Text,
		// mailview makes the Message-ID (RFC 5322 §3.6.4).
		InReplyTo: d.InReplyTo, References: strings.Fields(d.References), Date: rq.now,
	}
	var rcpts []string
	for _, fld := range []struct {
		v   string
		dst *[]mailview.Address
	}{{d.To, &draft.To}, {d.Cc, &draft.Cc}, {d.Bcc, &draft.Bcc}} {
		l, err := parseAddrs(fld.v)
		if err != nil {
			again(http.StatusBadRequest, tr(rq.lang, "send.badaddr", fld.v))
			return
		}
		*fld.dst = l
		for _, a := range l {
			rcpts = append(rcpts, a.Email)
		}
	}
	if len(rcpts) == 0 {
		again(http.StatusBadRequest, tr(rq.lang, "send.norcpt"))
		return
	}
	if d.Fwd != "" {
		atts, err := s.forwardedParts(rq, d.FwdFolder, d.Fwd)
		if err != nil {
			s.log.Error("webmail: forward attachments", "err", err)
			s.errorPage(w, rq, http.StatusNotFound, "notfound")
			return
		}
		draft.Attachments = append(draft.Attachments, atts...)
	}
	if r.MultipartForm != nil {
		for _, fh := range r.MultipartForm.File["files"] {
			if fh.Filename == "" && fh.Size == 0 {
				continue // the empty file input of a form without attachments
			}
			file, err := fh.Open()
			if err != nil {
				s.log.Error("webmail: upload", "err", err)
				s.errorPage(w, rq, http.StatusInternalServerError, "internal")
				return
			}
			defer file.Close() // read-only temporary file
			ct := fh.Header.Get("Content-Type")
			if ct == "" {
				ct = "application/octet-stream"
			}
			draft.Attachments = append(draft.Attachments, mailview.DraftAttachment{Filename: fh.Filename, ContentType: ct, Data: file})
		}
	}
	msg, err := mailview.Build(draft)
	if err != nil {
		s.log.Error("webmail: build message", "err", err)
		again(http.StatusBadRequest, tr(rq.lang, "send.failed"))
		return
	}
	if int64(len(msg)) > s.opts.MaxUpload*4/3+1<<20 {
		again(http.StatusRequestEntityTooLarge, tr(rq.lang, "send.toolarge"))
		return
	}
	ctx, cancel := context.WithTimeout(rq.ctx, s.opts.SendTimeout)
	defer cancel()
	if err := s.opts.Relay.Send(ctx, rq.sess.mailbox, rcpts, msg); err != nil {
		s.log.Warn("webmail: send failed", "mailbox", rq.sess.mailbox, "rcpts", len(rcpts), "err", err)
		d.Failed, d.Detail = true, oneLine(err.Error())
		again(http.StatusBadGateway, "")
		return
	}
	s.log.Info("webmail: sent", "mailbox", rq.sess.mailbox, "rcpts", len(rcpts), "bytes", len(msg))
	notice := "1"
	if err := s.saveSent(rq, msg); err != nil {
		s.log.Error("webmail: saving to Sent", "mailbox", rq.sess.mailbox, "err", err)
		notice = "2"
	}
	if folder, refStr, ok := strings.Cut(d.Answered, "/"); ok {
		if ref, ok := parseRef(refStr); ok {
			if jbox := box(rq.sess.mailbox, folder); jbox != "" {
				if _, err := s.opts.Store.AddFlags(rq.ctx, jbox, ref.UID, []string{userview.FlagAnswered}); err != nil && !errors.Is(err, userview.ErrNoMessage) {
					s.log.Warn("webmail: mark answered", "err", err)
				}
			}
		}
	}
	http.Redirect(w, r, "/mail/sent?sent="+notice, http.StatusSeeOther)
}

// saveSent stores a sent message in the user's Sent folder the way IMAP
// APPEND does (sidecar/imap/append.go): the Sent folder is the one
// recipient, in state mta, so replay never delivers it anywhere.
func (s *Server) saveSent(rq *request, msg []byte) error {
	sent := rq.sess.mailbox + sentSuffix
	env := journal.Envelope{
		MailFrom: rq.sess.mailbox,
		Recipients: []journal.Recipient{{
			Address: sent, Mailboxes: []string{sent}, State: journal.StateMTA,
		}},
		Received: rq.now,
		AuthUser: rq.sess.user,
		Source:   sendSource,
	}
	if _, err := s.opts.Journal.Append(rq.ctx, env, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("append to %q: %w", sent, err)
	}
	return nil
}

// forwardedParts reads the attachments of a forwarded message, from the
// user's own folder only.
func (s *Server) forwardedParts(rq *request, folder, refStr string) ([]mailview.DraftAttachment, error) {
	t, orig, err := s.original(rq, folder, refStr)
	if err != nil {
		return nil, err
	}
	var out []mailview.DraftAttachment
	left := s.opts.MaxUpload
	for _, a := range orig.Attachments {
		rc, err := s.opts.Journal.Open(rq.ctx, t.m.ID)
		if err != nil {
			return nil, err
		}
		name, ctype, body, err := mailview.OpenPart(rc, a.ID)
		var data []byte
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(body, left+1))
		}
		if cerr := rc.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		if left -= int64(len(data)); left < 0 {
			return nil, errors.New("forwarded attachments too large")
		}
		out = append(out, mailview.DraftAttachment{Filename: name, ContentType: ctype, Data: bytes.NewReader(data)})
	}
	return out, nil
}

func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

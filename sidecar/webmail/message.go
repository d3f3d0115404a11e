package webmail

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/mimestruct"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/sidecar/webmail/mailview"
)

// bodyCSP is the policy of the message body document shown in the iframe
// (CSP Level 3 §6). The "sandbox" directive sandboxes it even when opened on
// its own; img-src data: admits the inline (cid:) images, which are embedded
// as data: URLs because the sandboxed document's own requests carry no
// SameSite=Strict cookie; style-src 'unsafe-inline' keeps the sender's
// layout (styles cannot run code, and url() in them is held by img-src and
// default-src). Remote images are allowed only when the user asked. Popups
// are allowed so that a link the user clicks (mailview gives links
// target="_blank") opens in a new tab, outside the sandbox: scripts never
// run in the frame, so nothing but a click can open one.
const (
	bodyCSP       = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; font-src data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
	bodyCSPRemote = "default-src 'none'; img-src 'self' data: https: http:; style-src 'unsafe-inline'; font-src data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
	// partCSP keeps a downloaded part from running anything should a
	// browser render it after all.
	partCSP = "default-src 'none'; sandbox"
)

// Bounds of the inline images embedded into the body document.
const (
	maxInlineImage = 2 << 20
	maxInlineTotal = 8 << 20
	maxViewText    = 4 << 20
)

// target is a message named by a URL, resolved in the user's own folder.
type target struct {
	folder, jbox string
	ref          msgRef
	m            userview.Message
	base         string // "/mail/<folder>/<ref>"
}

// target resolves the {folder} and {ref} of r; on failure it has answered.
func (s *Server) target(w http.ResponseWriter, r *http.Request, rq *request) (*target, bool) {
	t := &target{folder: r.PathValue("folder")}
	t.jbox = box(rq.sess.mailbox, t.folder)
	ref, ok := parseRef(r.PathValue("ref"))
	if t.jbox == "" || !ok {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return nil, false
	}
	t.ref = ref
	m, err := s.resolve(rq.ctx, t.jbox, ref)
	if errors.Is(err, errNotFound) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return nil, false
	}
	if err != nil {
		s.log.Error("webmail: resolve", "mailbox", t.jbox, "uid", ref.UID, "err", err)
		s.errorPage(w, rq, http.StatusInternalServerError, "internal")
		return nil, false
	}
	t.m = m
	t.base = "/mail/" + t.folder + "/" + ref.String()
	return t, true
}

// parse reads and renders a message with mailview.
func (s *Server) parse(ctx context.Context, id journal.ID, opts mailview.Options) (*mailview.Message, error) {
	rc, err := s.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	msg, err := mailview.Parse(rc, opts)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return msg, err
}

type attachmentLink struct {
	URL, Name, Type string
	Size            int64
}

type messageData struct {
	Folder, Ref, Base string
	M                 *mailview.Message
	Seen, Flagged     bool
	Images            bool
	Attachments       []attachmentLink
}

func (s *Server) message(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	images := r.URL.Query().Get("images") == "1"
	msg, err := s.parse(rq.ctx, t.m.ID, mailview.Options{
		CIDURL:       func(cid string) string { return t.base + "/cid/" + url.PathEscape(cid) },
		AllowRemote:  images,
		MaxTextBytes: maxViewText,
	})
	if err != nil {
		s.fail(w, rq, "message", t, err)
		return
	}
	seen := hasFlag(t.m.Flags, userview.FlagSeen)
	if !seen {
		// Opening a message reads it, as FETCH BODY[] does in IMAP (RFC
		// 3501 §6.4.5): the user's other clients see it read too.
		if _, err := s.opts.Store.AddFlags(rq.ctx, t.jbox, t.ref.UID, []string{userview.FlagSeen}); err != nil {
			s.log.Warn("webmail: mark seen", "mailbox", t.jbox, "uid", t.ref.UID, "err", err)
		} else {
			seen = true
		}
	}
	d := &messageData{Folder: t.folder, Ref: t.ref.String(), Base: t.base, M: msg, Seen: seen,
		Flagged: hasFlag(t.m.Flags, userview.FlagFlagged), Images: images}
	for _, a := range msg.Attachments {
		if a.Inline && a.ContentID != "" && msg.HTML != "" {
			continue // shown in the body
		}
		name := a.Filename
		if name == "" {
			name = "attachment"
		}
		d.Attachments = append(d.Attachments, attachmentLink{
			URL: t.base + "/part/" + url.PathEscape(a.ID), Name: name, Type: a.ContentType, Size: a.Size,
		})
	}
	s.render(w, rq, http.StatusOK, "message", &page{Title: msg.Subject, Folder: t.folder, Data: d})
}

// fail answers an error reading a message: gone is a 404, else a 500.
func (s *Server) fail(w http.ResponseWriter, rq *request, what string, t *target, err error) {
	if errors.Is(err, journal.ErrNotFound) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return
	}
	s.log.Error("webmail: "+what, "mailbox", t.jbox, "uid", t.ref.UID, "err", err)
	s.errorPage(w, rq, http.StatusInternalServerError, "internal")
}

var bodyHead = template.Must(template.New("body").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<style>body{margin:8px;font:15px/1.45 system-ui,sans-serif;color:#1b1f24;overflow-wrap:anywhere}img{max-width:100%;height:auto}pre{white-space:pre-wrap}</style>
</head><body>`))

// body serves the message body document of the iframe.
func (s *Server) body(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	images := r.URL.Query().Get("images") == "1"
	inline, err := s.inlineImages(rq.ctx, t.m.ID)
	if err != nil {
		s.fail(w, rq, "body", t, err)
		return
	}
	msg, err := s.parse(rq.ctx, t.m.ID, mailview.Options{
		CIDURL: func(cid string) string {
			if u, ok := inline[cid]; ok {
				return u
			}
			return t.base + "/cid/" + url.PathEscape(cid)
		},
		AllowRemote:  images,
		MaxTextBytes: maxViewText,
	})
	if err != nil {
		s.fail(w, rq, "body", t, err)
		return
	}
	var buf bytes.Buffer
	if err := bodyHead.Execute(&buf, nil); err != nil {
		s.fail(w, rq, "body", t, err)
		return
	}
	if msg.HTML != "" {
		buf.WriteString(msg.HTML) // sanitized by mailview
	} else {
		buf.WriteString("<pre>" + template.HTMLEscapeString(msg.Text) + "</pre>")
	}
	buf.WriteString("</body></html>")
	h := w.Header()
	if images {
		h.Set("Content-Security-Policy", bodyCSPRemote)
	} else {
		h.Set("Content-Security-Policy", bodyCSP)
	}
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// inlineImages returns data: URLs of a message's images that have a
// Content-ID (RFC 2392), by Content-ID, within the size bounds. It reads the
// message once, whatever the number of images: a message can name the same
// Content-ID, or carry, a thousand times, and a read per image cost a parse
// of the whole message each. The first part with a Content-ID is the one
// shown, as OpenPart finds it for /cid/; the walk stops once every image is
// found or the budget is spent.
func (s *Server) inlineImages(ctx context.Context, id journal.ID) (map[string]string, error) {
	info, err := s.structure(ctx, id)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	var walk func(p *mimestruct.Part)
	walk = func(p *mimestruct.Part) {
		for i := range p.Children {
			walk(&p.Children[i])
		}
		if p.Type == "image" && p.ID != "" && p.Size <= maxInlineImage*4/3+1024 {
			want[strings.Trim(p.ID, "<> \t")] = true
		}
	}
	walk(&info.Body)
	delete(want, "")
	out := map[string]string{}
	if len(want) == 0 {
		return out, nil
	}
	rc, err := s.opts.Journal.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close() // read-only
	// seen holds the Content-IDs met, shown or not: a later part with the
	// same Content-ID is not the one /cid/ serves.
	seen := map[string]bool{}
	left := maxInlineTotal
	// An error here (a header that cannot be read, a corrupt part) leaves
	// the images out, shown broken: the body is still shown, and a
	// failing journal fails the parse that follows.
	_ = mailview.EachPart(rc, func(p mailview.PartRef, body io.Reader) bool {
		if !want[p.ContentID] || seen[p.ContentID] {
			return false
		}
		seen[p.ContentID] = true
		mt, _, perr := mime.ParseMediaType(p.ContentType)
		// An SVG can carry script; data: SVG in <img> cannot run it, but
		// keep it out.
		if perr == nil && strings.HasPrefix(mt, "image/") && mt != "image/svg+xml" {
			room := min(maxInlineImage, left)
			data, err := io.ReadAll(io.LimitReader(body, int64(room)+1))
			// Too large or unreadable: shown as a broken image; it is
			// still in the attachment list.
			if err == nil && len(data) <= room {
				left -= len(data)
				out[p.ContentID] = "data:" + mt + ";base64," + base64.StdEncoding.EncodeToString(data)
			}
		}
		return len(seen) == len(want) || left == 0
	})
	return out, nil
}

// part downloads an attachment, always as an attachment (RFC 6266 §4.2), so
// that no part of a message is rendered in the webmail's origin.
func (s *Server) part(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	s.servePart(w, rq, t, r.PathValue("part"), true)
}

// cid serves an inline part by Content-ID: images inline, anything else as
// a download.
func (s *Server) cid(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	s.servePart(w, rq, t, "cid:"+r.PathValue("cid"), false)
}

func (s *Server) servePart(w http.ResponseWriter, rq *request, t *target, id string, download bool) {
	rc, err := s.opts.Journal.Open(rq.ctx, t.m.ID)
	if err != nil {
		s.fail(w, rq, "part", t, err)
		return
	}
	defer rc.Close() // read-only
	name, ctype, body, err := mailview.OpenPart(rc, id)
	if err != nil {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return
	}
	mt, _, perr := mime.ParseMediaType(ctype)
	if perr != nil || mt == "" {
		mt = "application/octet-stream"
	}
	inline := !download && strings.HasPrefix(mt, "image/") && mt != "image/svg+xml"
	if name == "" {
		name = "attachment"
	}
	h := w.Header()
	h.Set("Content-Type", mt)
	h.Set("Content-Security-Policy", partCSP)
	if inline {
		h.Set("Content-Disposition", contentDisposition("inline", name))
	} else {
		h.Set("Content-Disposition", contentDisposition("attachment", name))
	}
	if _, err := io.Copy(w, body); err != nil {
		s.log.Warn("webmail: part", "mailbox", t.jbox, "uid", t.ref.UID, "err", err)
	}
}

// contentDisposition writes an RFC 6266 header: an ASCII filename for old
// clients and filename* (RFC 8187) with the full UTF-8 name.
func contentDisposition(kind, name string) string {
	name = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, name)
	ascii := strings.Map(func(r rune) rune {
		if r > '~' || r == '"' || r == '%' {
			return '_'
		}
		return r
	}, name)
	v := fmt.Sprintf("%s; filename=\"%s\"", kind, ascii)
	if ascii != name {
		v += "; filename*=UTF-8''" + url.PathEscape(name)
	}
	return v
}

// raw downloads the original message as .eml (RFC 5322 bytes as journaled).
func (s *Server) raw(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	rc, err := s.opts.Journal.Open(rq.ctx, t.m.ID)
	if err != nil {
		s.fail(w, rq, "raw", t, err)
		return
	}
	defer rc.Close() // read-only
	h := w.Header()
	h.Set("Content-Type", "message/rfc822")
	h.Set("Content-Security-Policy", partCSP)
	h.Set("Content-Disposition", contentDisposition("attachment", fmt.Sprintf("message-%d.eml", t.ref.UID)))
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("webmail: raw", "mailbox", t.jbox, "uid", t.ref.UID, "err", err)
	}
}

// flags changes a message's flags in the user's view, the one IMAP shows.
// Delete hides it (IMAP's \Deleted plus EXPUNGE at once): a browser user
// expects it gone, and the journal keeps its copy (package userview).
func (s *Server) flags(w http.ResponseWriter, r *http.Request, rq *request) {
	t, ok := s.target(w, r, rq)
	if !ok {
		return
	}
	st := s.opts.Store
	var err error
	back := t.base
	switch r.PostFormValue("action") {
	case "read":
		_, err = st.AddFlags(rq.ctx, t.jbox, t.ref.UID, []string{userview.FlagSeen})
	case "unread":
		_, err = st.RemoveFlags(rq.ctx, t.jbox, t.ref.UID, []string{userview.FlagSeen})
		back = "/mail/" + t.folder // opening it again would mark it read
	case "flag":
		_, err = st.AddFlags(rq.ctx, t.jbox, t.ref.UID, []string{userview.FlagFlagged})
	case "unflag":
		_, err = st.RemoveFlags(rq.ctx, t.jbox, t.ref.UID, []string{userview.FlagFlagged})
	case "delete":
		err = st.Hide(rq.ctx, t.jbox, t.ref.UID)
		back = "/mail/" + t.folder
	default:
		s.errorPage(w, rq, http.StatusBadRequest, "forbidden")
		return
	}
	if errors.Is(err, userview.ErrNoMessage) {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return
	}
	if err != nil {
		s.fail(w, rq, "flags", t, err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

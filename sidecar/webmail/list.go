package webmail

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/sidecar/webmail/mailview"
)

// query is a search. Matching is case-insensitive substring matching on
// decoded text (RFC 2047 names and subjects, decoded bodies), as IMAP SEARCH
// does (RFC 3501 §6.4.4).
type query struct {
	Any, From, To, Subject, Text string
	Since, Before                time.Time // Before is exclusive: the day after the "until" date
	SinceStr, BeforeStr          string
}

func parseQuery(r *http.Request) query {
	v := r.URL.Query()
	q := query{
		Any: strings.TrimSpace(v.Get("q")), From: strings.TrimSpace(v.Get("from")), To: strings.TrimSpace(v.Get("to")),
		Subject: strings.TrimSpace(v.Get("subject")), Text: strings.TrimSpace(v.Get("text")),
		SinceStr: v.Get("since"), BeforeStr: v.Get("before"),
	}
	if t, err := time.ParseInLocation("2006-01-02", q.SinceStr, time.Local); err == nil {
		q.Since = t
	} else {
		q.SinceStr = ""
	}
	if t, err := time.ParseInLocation("2006-01-02", q.BeforeStr, time.Local); err == nil {
		q.Before = t.AddDate(0, 0, 1)
	} else {
		q.BeforeStr = ""
	}
	return q
}

func (q query) active() bool {
	return q.Any != "" || q.From != "" || q.To != "" || q.Subject != "" || q.Text != "" || !q.Since.IsZero() || !q.Before.IsZero()
}

type row struct {
	URL     string
	From    string
	Subject string
	Date    time.Time
	Size    int64
	Unread  bool
	Flagged bool
	Attach  bool
}

type listData struct {
	Folder      string
	Q           query
	Searching   bool
	Limited     bool
	LimitMB     int64
	Rows        []row
	Total       int
	Page, Pages int
	PrevURL     string
	NextURL     string
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, rq *request) {
	folder := r.PathValue("folder")
	jbox := box(rq.sess.mailbox, folder)
	if jbox == "" {
		s.errorPage(w, rq, http.StatusNotFound, "notfound")
		return
	}
	params := r.URL.Query()
	p := &page{Title: tr(rq.lang, folder), Folder: folder}
	// After sending, the compose form redirects here (POST/redirect/GET)
	// with the outcome.
	switch params.Get("sent") {
	case "1":
		p.Notice = tr(rq.lang, "send.ok")
	case "2":
		p.Error = tr(rq.lang, "send.notsaved")
	}
	params.Del("sent")
	d, err := s.listPage(rq.ctx, jbox, folder, parseQuery(r), params)
	if err != nil {
		s.log.Error("webmail: list", "mailbox", jbox, "err", err)
		s.errorPage(w, rq, http.StatusInternalServerError, "internal")
		return
	}
	p.Data = d
	s.render(w, rq, http.StatusOK, "list", p)
}

// listPage builds one page of a folder, newest first, or of a search's
// results.
func (s *Server) listPage(ctx context.Context, jbox, folder string, q query, params url.Values) (*listData, error) {
	msgs, err := s.opts.Store.Messages(ctx, jbox)
	if err != nil {
		return nil, err
	}
	d := &listData{Folder: folder, Q: q, Searching: q.active()}
	// Newest first: UIDs grow in arrival order.
	var picked []userview.Message
	if d.Searching {
		picked, d.Limited, err = s.search(ctx, msgs, q)
		if err != nil {
			return nil, err
		}
		if d.Limited {
			d.LimitMB = s.opts.SearchMaxBytes >> 20
		}
	} else {
		picked = make([]userview.Message, len(msgs))
		for i, m := range msgs {
			picked[len(msgs)-1-i] = m
		}
	}
	d.Total = len(picked)
	size := s.opts.PageSize
	d.Pages = max(1, (d.Total+size-1)/size)
	d.Page, _ = strconv.Atoi(params.Get("page"))
	d.Page = min(max(d.Page, 1), d.Pages)
	lo := (d.Page - 1) * size
	hi := min(lo+size, d.Total)
	for _, m := range picked[lo:hi] {
		sm, err := s.summary(ctx, m.ID)
		if errors.Is(err, journal.ErrNotFound) {
			continue // swept by retention meanwhile
		}
		if err != nil {
			return nil, err
		}
		date := sm.Date
		if date.IsZero() {
			date = m.Received
		}
		d.Rows = append(d.Rows, row{
			URL:  "/mail/" + folder + "/" + msgRef{UID: m.UID, ID: m.ID}.String(),
			From: sm.From, Subject: sm.Subject, Date: date, Size: m.Size,
			Unread: !hasFlag(m.Flags, userview.FlagSeen), Flagged: hasFlag(m.Flags, userview.FlagFlagged),
			Attach: sm.Attach,
		})
	}
	pageURL := func(n int) string {
		p := url.Values{}
		for k, v := range params {
			p[k] = v
		}
		p.Set("page", strconv.Itoa(n))
		return "/mail/" + folder + "?" + p.Encode()
	}
	if d.Page > 1 {
		d.PrevURL = pageURL(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.NextURL = pageURL(d.Page + 1)
	}
	return d, nil
}

// search returns the messages matching q, newest first. Criteria are
// evaluated cheapest first: the date from the view, then the cached header
// summary, and only then the text, which reads the message. The bytes read
// for text are bounded by Options.SearchMaxBytes; past it the search stops
// and limited is true, so that the page can say the result is partial
// rather than silently miss messages (as IMAP's NO [LIMIT] does).
func (s *Server) search(ctx context.Context, msgs []userview.Message, q query) (out []userview.Message, limited bool, err error) {
	left := s.opts.SearchMaxBytes
	if left < 0 {
		left = 1 << 62
	}
	lower := func(v string) string { return strings.ToLower(v) }
	anyQ, fromQ, toQ, subjQ, textQ := lower(q.Any), lower(q.From), lower(q.To), lower(q.Subject), lower(q.Text)
	for i := len(msgs) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		m := msgs[i]
		sm, err := s.summary(ctx, m.ID)
		if errors.Is(err, journal.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		date := sm.Date
		if date.IsZero() {
			date = m.Received
		}
		if !q.Since.IsZero() && date.Before(q.Since) || !q.Before.IsZero() && !date.Before(q.Before) {
			continue
		}
		if fromQ != "" && !strings.Contains(sm.fromLower, fromQ) ||
			toQ != "" && !strings.Contains(sm.rcptLower, toQ) ||
			subjQ != "" && !strings.Contains(sm.subjLower, subjQ) {
			continue
		}
		needText := textQ
		if anyQ != "" {
			if strings.Contains(sm.fromLower, anyQ) || strings.Contains(sm.rcptLower, anyQ) || strings.Contains(sm.subjLower, anyQ) {
				if textQ == "" {
					out = append(out, m)
					continue
				}
			} else if textQ == "" {
				needText = anyQ
			} else {
				// Both: the text must hold both words.
				ok, err := s.textContains(ctx, m.ID, anyQ, &left)
				if errors.Is(err, errBudget) {
					return out, true, nil
				}
				if err != nil {
					return nil, false, err
				}
				if !ok {
					continue
				}
			}
		}
		if needText != "" {
			ok, err := s.textContains(ctx, m.ID, needText, &left)
			if errors.Is(err, errBudget) {
				return out, true, nil
			}
			if err != nil {
				return nil, false, err
			}
			if !ok {
				continue
			}
		}
		out = append(out, m)
	}
	return out, false, nil
}

// textContains reports whether a message's text (the text part, or the text
// of its HTML part) holds needle, already lower case.
func (s *Server) textContains(ctx context.Context, id journal.ID, needle string, left *int64) (bool, error) {
	rc, err := s.opts.Journal.Open(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer rc.Close() // a read-only stream: a close error changes nothing
	msg, err := mailview.Parse(&budgetReader{r: rc, left: left}, mailview.Options{MaxTextBytes: 4 << 20, TextOnly: true})
	if errors.Is(err, errBudget) || *left <= 0 {
		return false, errBudget
	}
	if err != nil {
		// A message whose text cannot be read has no text to match: the
		// search goes on rather than fail for everyone's other mail.
		s.log.Warn("webmail: search cannot read a message", "id", id, "err", err)
		return false, nil
	}
	return strings.Contains(strings.ToLower(msg.Text), needle) || strings.Contains(strings.ToLower(msg.Subject), needle), nil
}

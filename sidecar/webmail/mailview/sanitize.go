package mailview

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"strings"
	"sync"

	"github.com/microcosm-cc/bluemonday"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// The HTML of a received message is written by whoever sent it, and the
// webmail shows it on its own origin, next to the user's session. Every rule
// below closes a way for that HTML to run code, to steal or submit on the
// user's behalf, or to tell the sender that and when the message was read.
//
// Sanitizing is done in two passes: bluemonday keeps only an allow-list of
// elements, attributes and URL forms (everything not named is dropped), then
// a second pass over bluemonday's (well-formed, safe) output rewrites image
// sources, which needs per-call state (CIDURL, AllowRemote, and whether a
// remote image was removed).
var (
	// Links: only http, https and mailto. javascript:, data:, vbscript:,
	// file: and relative URLs (which would resolve against the webmail
	// origin and could trigger its own actions) are dropped.
	hrefRe = regexp.MustCompile(`(?i)^\s*(https?://|mailto:)`)
	// Image sources: cid: (parts of this message, rewritten through
	// CIDURL), data: images of raster types only (data:image/svg+xml can
	// carry script), and http(s) (removed in the second pass unless the
	// user allowed remote images: a remote image is a read receipt the user
	// never agreed to send, "web bug").
	imgSrcRe  = regexp.MustCompile(`(?i)^\s*(cid:|https?://|data:image/(png|gif|jpeg|webp);base64,)`)
	dataImgRe = regexp.MustCompile(`^image/(png|gif|jpeg|webp);base64,`)
	// Lengths and colors for the presentational attributes of old HTML
	// mail; anything else (e.g. expression() or url()) does not match.
	lengthRe = regexp.MustCompile(`^\s*[0-9]{1,5}(\.[0-9]+)?\s*(%|px)?\s*$`)
	colorRe  = regexp.MustCompile(`^\s*(#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,20})\s*$`)
	alignRe  = regexp.MustCompile(`(?i)^\s*(left|right|center|justify|top|middle|bottom|baseline)\s*$`)
	faceRe   = regexp.MustCompile(`^[\w\s,'"-]{1,100}$`)

	// policy is built once: building costs more than sanitizing a typical
	// message, and a bluemonday Policy is safe for concurrent use once
	// built. It holds no state that changes.
	policy = sync.OnceValue(mailPolicy)
)

// mailPolicy builds the allow-list.
func mailPolicy() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	// Not allowed, by omission: script, style (a <style> element can
	// restyle or overlay the whole webmail page and fetch url()s), form,
	// input, button, textarea, select (phishing forms posting from our
	// origin; formaction), iframe, frame, object, embed, applet (foreign
	// content and plugins), svg and math (their own parsing rules and
	// script vectors), meta (refresh redirects), base (rewrites every
	// relative URL of the page), link (stylesheets, prefetch), audio,
	// video, source and picture (remote fetches, srcset). All on*
	// event-handler attributes are dropped because no attribute is allowed
	// unless named here.
	p.AllowElements("a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote",
		"br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div",
		"dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
		"kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
		"strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
		"ul", "var", "wbr", "details", "summary", "figure", "figcaption", "section", "article",
		"header", "footer", "main", "nav", "aside", "time")
	p.AllowAttrs("title", "lang", "dir").Globally()
	p.AllowAttrs("align").Matching(alignRe).Globally()
	p.AllowAttrs("valign").Matching(alignRe).OnElements("td", "th", "tr", "tbody", "thead", "tfoot", "col", "colgroup")
	p.AllowAttrs("width", "height").Matching(lengthRe).OnElements("img", "table", "td", "th", "col", "colgroup", "hr")
	p.AllowAttrs("border", "cellpadding", "cellspacing").Matching(lengthRe).OnElements("table", "img")
	p.AllowAttrs("colspan", "rowspan").Matching(bluemonday.Integer).OnElements("td", "th")
	// bgcolor and color are colors only; the background attribute (an
	// image URL, fetched remotely) is not allowed.
	p.AllowAttrs("bgcolor").Matching(colorRe).OnElements("table", "td", "th", "tr")
	p.AllowAttrs("color").Matching(colorRe).OnElements("font")
	p.AllowAttrs("size").Matching(bluemonday.Integer).OnElements("font")
	p.AllowAttrs("face").Matching(faceRe).OnElements("font")
	p.AllowAttrs("start").Matching(bluemonday.Integer).OnElements("ol")
	p.AllowAttrs("type").Matching(bluemonday.ListType).OnElements("ol", "ul")
	p.AllowAttrs("cite").Matching(hrefRe).OnElements("blockquote", "q")
	p.AllowAttrs("alt").OnElements("img")
	// Links open in a new browsing context without access to this one
	// (noopener: window.opener) and without telling the target which
	// message was read (noreferrer: the webmail URL in Referer).
	p.AllowAttrs("href").Matching(hrefRe).OnElements("a")
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.RequireParseableURLs(true)
	p.AllowURLSchemes("http", "https", "mailto", "cid")
	p.AllowURLSchemeWithCustomPolicy("data", func(u *url.URL) bool {
		// Checked again here because the scheme list is per policy, not
		// per attribute: the base64 must decode and the type be raster.
		if u.RawQuery != "" || u.Fragment != "" {
			return false
		}
		m := dataImgRe.FindString(u.Opaque)
		if m == "" {
			return false
		}
		_, err := base64.StdEncoding.DecodeString(u.Opaque[len(m):])
		return err == nil
	})
	p.AllowAttrs("src").Matching(imgSrcRe).OnElements("img")
	// Inline styles: only properties that cannot fetch anything or escape
	// their box, each value checked by bluemonday's per-property handler
	// (which rejects url(), expression() and the like). Not allowed:
	// background(-image), list-style-image, content, cursor, behavior,
	// position (overlaying the webmail's own UI), and everything else.
	p.AllowStyles("color", "background-color", "font-size", "font-weight", "font-style",
		"font-family", "text-align", "text-decoration", "text-transform", "line-height",
		"vertical-align", "white-space", "width", "max-width", "min-width", "height",
		"margin", "margin-top", "margin-bottom", "margin-left", "margin-right",
		"padding", "padding-top", "padding-bottom", "padding-left", "padding-right",
		"border-collapse", "border-spacing", "letter-spacing", "word-spacing",
		"direction").Globally()
	return p
}

// sanitizeHTML returns the safe form of s and whether remote images were
// removed.
func sanitizeHTML(s string, opts Options) (string, bool) {
	clean := policy().Sanitize(s)
	return rewriteImages(clean, opts)
}

// rewriteImages is the second pass: it maps cid: sources through CIDURL and
// removes remote ones unless allowed. Its input is bluemonday's output, so the
// tokens are well formed; Token.String re-escapes every attribute value.
func rewriteImages(s string, opts Options) (string, bool) {
	if !strings.Contains(s, "<img") {
		return s, false
	}
	var b strings.Builder
	remote := false
	z := html.NewTokenizer(strings.NewReader(s))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		tok := z.Token()
		if (tt == html.StartTagToken || tt == html.SelfClosingTagToken) && tok.DataAtom == atom.Img {
			attrs := tok.Attr[:0]
			for _, a := range tok.Attr {
				if a.Key == "src" {
					v := strings.TrimSpace(a.Val)
					lower := strings.ToLower(v)
					switch {
					case strings.HasPrefix(lower, "cid:"):
						cid, err := url.PathUnescape(v[4:])
						if err != nil {
							cid = v[4:]
						}
						if opts.CIDURL == nil {
							continue
						}
						a.Val = opts.CIDURL(strings.Trim(cid, "<>"))
					case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "https://"):
						if !opts.AllowRemote {
							remote = true
							continue
						}
					case strings.HasPrefix(lower, "data:"):
					default:
						continue
					}
				}
				attrs = append(attrs, a)
			}
			tok.Attr = attrs
		}
		b.WriteString(tok.String())
	}
	return b.String(), remote
}

// htmlToText derives plain text from HTML for quoting in replies: text of
// every element except script, style, head and title, with line breaks at
// block boundaries. At most max bytes.
func htmlToText(s string, max int64) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(s))
	skip := 0
	nl := func() {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
	}
	for int64(b.Len()) < max {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		name, _ := z.TagName()
		a := atom.Lookup(name)
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			switch a {
			case atom.Script, atom.Style, atom.Head, atom.Title:
				if tt == html.StartTagToken {
					skip++
				}
			case atom.Br:
				b.WriteByte('\n')
			case atom.P, atom.Div, atom.Tr, atom.Li, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5,
				atom.H6, atom.Blockquote, atom.Pre, atom.Table, atom.Hr:
				nl()
			}
		case html.EndTagToken:
			switch a {
			case atom.Script, atom.Style, atom.Head, atom.Title:
				if skip > 0 {
					skip--
				}
			case atom.P, atom.Div, atom.Tr, atom.Li, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5,
				atom.H6, atom.Blockquote, atom.Pre, atom.Table:
				nl()
			}
		case html.TextToken:
			if skip == 0 {
				t := string(z.Text())
				t = strings.Join(strings.Fields(t), " ")
				if t != "" {
					if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") && !strings.HasSuffix(b.String(), " ") {
						b.WriteByte(' ')
					}
					b.WriteString(t)
				}
			}
		}
	}
	out := b.String()
	if int64(len(out)) > max {
		out = out[:max]
	}
	return strings.TrimSpace(out)
}

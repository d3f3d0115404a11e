package mailview

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// dangerous lists constructs that must never survive sanitizing, lower case.
var dangerous = []string{
	"<script", "</script", "javascript:", "vbscript:", "onerror", "onload", "onclick",
	"onmouseover", "<svg", "<math", "<style", "expression(", "url(", "behavior", "<meta", "<base",
	"<link", "<form", "<input", "<button", "<textarea", "<select", "formaction", "<iframe",
	"srcdoc", "<object", "<embed", "<applet", "<frame", "srcset", "background=", "evil.example",
	"data:image/svg", "data:text", "<video", "<audio", "<source", "poster", "position",
	"href=\"/", "href=\"login",
}

func TestHostileHTML(t *testing.T) {
	files, err := filepath.Glob("testdata/hostile/*.eml")
	if err != nil || len(files) < 7 {
		t.Fatalf("hostile samples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, allow := range []bool{false, true} {
				fh, err := os.Open(f)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Parse(fh, Options{CIDURL: func(c string) string { return "/part?cid=" + c }, AllowRemote: allow})
				fh.Close()
				if err != nil {
					t.Fatal(err)
				}
				if m.HTML == "" {
					t.Fatal("no HTML")
				}
				low := strings.ToLower(m.HTML)
				for _, d := range dangerous {
					if allow && (d == "evil.example") {
						continue
					}
					if strings.Contains(low, d) {
						t.Errorf("AllowRemote=%v: output contains %q:\n%s", allow, d, m.HTML)
					}
				}
				if strings.Contains(m.Text, "document.cookie") || strings.Contains(m.Text, "alert('head')") {
					t.Errorf("derived text contains script: %q", m.Text)
				}
				checkTags(t, m.HTML, allow)
				if filepath.Base(f) == "remote-images.eml" && m.HasRemoteImages == allow {
					t.Errorf("AllowRemote=%v: HasRemoteImages=%v", allow, m.HasRemoteImages)
				}
			}
		})
	}
}

var (
	safeTags = map[string]bool{}
	safeHref = regexp.MustCompile(`^(?i:https?:|mailto:)`)
	safeSrc  = regexp.MustCompile(`^(/part\?cid=|data:image/(png|gif|jpeg|webp);base64,)`)
)

func init() {
	// What the policy allows (sanitize.go), written out again: harmless
	// formatting, no element that loads, runs, submits or styles.
	for _, t := range strings.Fields(`a abbr acronym address b bdi bdo big blockquote br caption center
		cite code col colgroup dd del dfn div dl dt em font h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p
		pre q s samp small span strike strong sub sup table tbody td tfoot th thead tr tt u ul var wbr
		details summary figure figcaption section article header footer main nav aside time`) {
		safeTags[t] = true
	}
}

// checkTags re-parses the sanitized HTML and checks every tag and attribute
// against what the policy promises, independently of bluemonday.
func checkTags(t *testing.T, s string, allowRemote bool) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(s))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		if !safeTags[tok.Data] {
			t.Errorf("tag %q in output", tok.Data)
		}
		for _, a := range tok.Attr {
			switch {
			case strings.HasPrefix(a.Key, "on"):
				t.Errorf("event handler %s", a.Key)
			case (a.Key == "href" || a.Key == "cite") && !safeHref.MatchString(a.Val):
				t.Errorf("%s %q", a.Key, a.Val)
			case a.Key == "src" && !safeSrc.MatchString(a.Val) && !(allowRemote && strings.HasPrefix(a.Val, "http")):
				t.Errorf("src %q", a.Val)
			case a.Key == "style" && strings.Contains(a.Val, "("):
				t.Errorf("style %q", a.Val)
			case a.Key == "target" && a.Val != "_blank":
				t.Errorf("target %q", a.Val)
			}
			// A link that opens a new window must not give it a handle on
			// this one (noopener), nor tell the target where it came from.
			if a.Key == "href" && !strings.HasPrefix(a.Val, "mailto:") && !hasAttr(tok, "rel", "noreferrer") {
				t.Errorf("link without rel=noreferrer: %v", tok)
			}
			if a.Key == "target" && !hasAttr(tok, "rel", "noopener noreferrer") {
				t.Errorf("target without rel=noopener noreferrer: %v", tok)
			}
		}
	}
}

func hasAttr(tok html.Token, key, words string) bool {
	for _, a := range tok.Attr {
		if a.Key == key {
			for _, w := range strings.Fields(words) {
				if !strings.Contains(a.Val, w) {
					return false
				}
			}
			return true
		}
	}
	return false
}

// TestRelatedSample checks the sample the webmail's browser test loads.
func TestRelatedSample(t *testing.T) {
	fh, err := os.Open("testdata/related-cid.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	m, err := Parse(fh, Options{CIDURL: func(c string) string { return "/part?cid=" + c }})
	if err != nil {
		t.Fatal(err)
	}
	contains(t, m.HTML, `src="/part?cid=logo@x"`)
	eq(t, "HasRemoteImages", m.HasRemoteImages, true)
	eq(t, "attachment", m.Attachments[0].ContentID, "logo@x")
}

// TestParseConcurrent runs Parse from several goroutines, as the webmail
// does, so that -race checks the shared sanitizing policy.
func TestParseConcurrent(t *testing.T) {
	raw, err := os.ReadFile("testdata/hostile/css.eml")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			m, err := Parse(strings.NewReader(string(raw)), Options{})
			if err == nil && strings.Contains(m.HTML, "url(") {
				err = errors.New("url( in output")
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

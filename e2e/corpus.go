package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
)

// CorpusMessage is one message of the shared test corpus.
type CorpusMessage struct {
	Name string // e.g. "bsd/arf-01.eml"
	Data []byte
}

// CorpusDir returns ../shared/corpus beside the module root. When it is
// absent the test is skipped with a message saying so, or failed when
// CI=true (the full suite must not silently lose its corpus).
func CorpusDir(tb TB) string {
	tb.Helper()
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("e2e: %v", err)
	}
	dir := filepath.Join(filepath.Dir(root), "shared", "corpus")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if InCI() {
			tb.Fatalf("e2e: mail corpus %s is missing (CI=true needs it)", dir)
		}
		tb.Skipf("e2e: skipped: mail corpus %s is absent (it lives beside the project, see its README)", dir)
	}
	return dir
}

// ReadCorpus reads every file of the given subdirectories of dir (e.g.
// "sisimai/bsd"), sorted by name. A first line "From …" is an mbox envelope
// line (some files were cut out of an mbox), not part of the message: it is
// removed. Nothing else is changed; Send turns the line ends into CRLF.
func ReadCorpus(dir string, subdirs ...string) ([]CorpusMessage, error) {
	var msgs []CorpusMessage
	for _, sub := range subdirs {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, CorpusMessage{Name: filepath.Base(sub) + "/" + e.Name(), Data: StripMboxFrom(b)})
		}
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Name < msgs[j].Name })
	return msgs, nil
}

// StripMboxFrom removes a leading mbox "From " envelope line.
func StripMboxFrom(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte("From ")) {
		return b
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return nil
}

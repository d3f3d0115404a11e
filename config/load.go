package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one problem in the configuration file.
type Error struct {
	Key  string // dotted key, array tables indexed: "server.0.name"
	Line int    // 1-based line in the file, 0 when unknown
	Msg  string
	Hint string
}

func (e Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Errors is every problem found in a file, in line order.
type Errors struct {
	File  string
	List  []Error
	lines map[string]int
}

func (e *Errors) add(key, msg, hint string) {
	e.List = append(e.List, Error{Key: key, Line: e.line(key), Msg: msg, Hint: hint})
}

// line finds the line of key, or of its closest enclosing table.
func (e *Errors) line(key string) int {
	for k := key; k != ""; {
		if l, ok := e.lines[k]; ok {
			return l
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// locate names a key reported by the decoder, which leaves out array-table
// indexes, by the first matching key of the original document and its line.
// (Positions from the decoder cannot be used: after the first round it decodes
// a re-encoded document.)
func (e *Errors) locate(parts []string) (string, int) {
	key := strings.Join(parts, ".")
	if l, ok := e.lines[key]; ok {
		return key, l
	}
	best, bestLine := key, 0
	for k, l := range e.lines {
		if stripIndexes(k) == key && (bestLine == 0 || l < bestLine) {
			best, bestLine = k, l
		}
	}
	return best, bestLine
}

func stripIndexes(k string) string {
	parts := strings.Split(k, ".")
	out := parts[:0]
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

func (e *Errors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d error(s):", e.File, len(e.List))
	for _, x := range e.List {
		b.WriteString("\n  ")
		b.WriteString(x.Error())
	}
	return b.String()
}

func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, x := range e.List {
		out[i] = x
	}
	return out
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// maxDecodeRounds bounds the decode-and-drop loop in Parse.
const maxDecodeRounds = 100

// Parse decodes data (named name in messages). It returns *Errors listing every
// problem: syntax errors stop parsing, but unknown keys, values of the wrong
// type and invalid values are all collected. To collect more than the first
// type error, Parse drops each offending key from the document and decodes again.
func Parse(name string, data []byte) (*Config, error) {
	errs := &Errors{File: name}
	lines, err := keyLines(data)
	if err != nil {
		errs.List = append(errs.List, syntaxError(err))
		return nil, errs
	}
	errs.lines = lines

	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		errs.List = append(errs.List, syntaxError(err))
		return nil, errs
	}
	var cfg Config
	for round := 0; ; round++ {
		cfg = Config{}
		derr := toml.NewDecoder(strings.NewReader(string(data))).DisallowUnknownFields().Decode(&cfg)
		if derr == nil {
			break
		}
		var bad [][]string
		var strict *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(derr, &strict):
			for _, e := range strict.Errors {
				k := []string(e.Key())
				key, line := errs.locate(k)
				errs.List = append(errs.List, Error{Key: key, Line: line, Msg: "unknown key", Hint: "check the spelling; see contrib/lifeline.example.toml"})
				bad = append(bad, k)
			}
		case errors.As(derr, &de) && len(de.Key()) > 0:
			k := []string(de.Key())
			key, line := errs.locate(k)
			errs.List = append(errs.List, Error{Key: key, Line: line, Msg: cleanDecodeMsg(de)})
			bad = append(bad, k)
		default:
			errs.List = append(errs.List, Error{Msg: derr.Error()})
		}
		if len(bad) == 0 || round == maxDecodeRounds {
			sortErrors(errs.List)
			return nil, errs
		}
		for _, k := range bad {
			dropKey(doc, k)
		}
		if data, err = toml.Marshal(doc); err != nil {
			return nil, fmt.Errorf("config: re-encoding %s: %w", name, err)
		}
	}
	cfg.applyDefaults(filepath.Dir(name))
	cfg.validate(errs)
	if len(errs.List) > 0 {
		sortErrors(errs.List)
		return nil, errs
	}
	return &cfg, nil
}

func sortErrors(l []Error) {
	sort.SliceStable(l, func(i, j int) bool { return l[i].Line < l[j].Line })
}

func syntaxError(err error) Error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		return Error{Line: row, Msg: "syntax: " + de.Error()}
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		return Error{Msg: "syntax: " + pe.Error()}
	}
	return Error{Msg: "syntax: " + err.Error()}
}

// cleanDecodeMsg keeps go-toml's message but not its "toml: " prefix.
func cleanDecodeMsg(de *toml.DecodeError) string {
	return strings.TrimPrefix(de.Error(), "toml: ")
}

// dropKey removes key from every element of the document it can reach;
// array tables are descended into element by element.
func dropKey(v any, key []string) {
	switch t := v.(type) {
	case map[string]any:
		if len(key) == 1 {
			delete(t, key[0])
			return
		}
		dropKey(t[key[0]], key[1:])
	case []any:
		for _, e := range t {
			dropKey(e, key)
		}
	case []map[string]any:
		for _, e := range t {
			dropKey(e, key)
		}
	}
}

// keyLines maps every dotted key in the document to its line, numbering array
// table elements ("server.0.name") so semantic errors can name their line.
func keyLines(data []byte) (map[string]int, error) {
	lines := map[string]int{}
	counts := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			k := joinKey(e.Key())
			if e.Kind == unstable.ArrayTable {
				n := counts[k]
				counts[k] = n + 1
				k = k + "." + strconv.Itoa(n)
			}
			prefix = k
			lines[k] = firstKeyLine(data, e)
		case unstable.KeyValue:
			k := joinKey(e.Key())
			if prefix != "" {
				k = prefix + "." + k
			}
			lines[k] = firstKeyLine(data, e)
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	return lines, nil
}

func joinKey(it unstable.Iterator) string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return strings.Join(parts, ".")
}

// firstKeyLine returns the line of the first key node of a table header or
// key/value expression.
func firstKeyLine(data []byte, e *unstable.Node) int {
	it := e.Key()
	if it.Next() {
		return lineOf(data, it.Node())
	}
	return 0
}

// lineOf returns the 1-based line of a node whose Raw range points into data.
func lineOf(data []byte, n *unstable.Node) int {
	off := int(n.Raw.Offset)
	if off > len(data) {
		off = len(data)
	}
	return 1 + strings.Count(string(data[:off]), "\n")
}

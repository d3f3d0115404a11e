package addrmap

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// LoadAliases reads an alias table in Postfix virtual(5) text format.
func LoadAliases(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("alias file: %w", err)
	}
	m, perr := ParseAliases(f)
	if cerr := f.Close(); cerr != nil && perr == nil {
		perr = fmt.Errorf("alias file: %w", cerr)
	}
	if perr != nil {
		return nil, fmt.Errorf("%s: %w", path, perr)
	}
	return m, nil
}

// ParseAliases parses Postfix virtual(5) text ("pattern result, result ...").
// As in postmap(1): '#' starts a comment line, a line starting with white space
// continues the previous one, results are separated by commas and/or blanks.
// A pattern without '@' declares a virtual alias domain and maps nothing.
// Results without '@' (local names, which Postfix qualifies with $myorigin)
// cannot name a continuity mailbox and are kept as they are.
func ParseAliases(r io.Reader) (map[string][]string, error) {
	out := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var logical string
	lineNo, startLine := 0, 0
	var errs []string
	flush := func() {
		defer func() { logical = "" }()
		if strings.TrimSpace(logical) == "" {
			return
		}
		fields := strings.FieldsFunc(logical, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
		if len(fields) < 2 {
			errs = append(errs, fmt.Sprintf("line %d: %q has no result", startLine, strings.TrimSpace(logical)))
			return
		}
		key := strings.ToLower(fields[0])
		if !strings.Contains(key, "@") {
			return // virtual alias domain declaration
		}
		for _, f := range fields[1:] {
			out[key] = append(out[key], strings.ToLower(f))
		}
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if logical == "" {
				errs = append(errs, fmt.Sprintf("line %d: continuation line without a preceding entry", lineNo))
				continue
			}
			logical += " " + trimmed
			continue
		}
		flush()
		logical, startLine = line, lineNo
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

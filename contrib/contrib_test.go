// Package contrib holds the files operators install beside Lifeline (the
// Grafana dashboard, the Prometheus rules, the systemd unit, MTA snippets);
// its tests check them. The dashboard's queries and the alert rules are run
// against a real Prometheus in e2e/prometheus_test.go.
package contrib

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs `systemd-analyze verify` on the unit, with
// ExecStart pointing at an executable copy (verify checks that it exists),
// and requires it to print nothing: an unknown or misspelt directive is only
// a warning there, and a warning here is a unit that does not sandbox what
// it says.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing (Debian package systemd)")
		}
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	unit, err := os.ReadFile(filepath.Join("systemd", "lifeline.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{
		"User=lifeline", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
		"ReadWritePaths=/var/lib/lifeline", "\nCapabilityBoundingSet=\n", "RestrictAddressFamilies=",
		"SystemCallFilter=@system-service", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	const bin = "/usr/local/bin/lifeline"
	if !strings.Contains(text, "ExecStart="+bin+" serve") {
		t.Fatalf("ExecStart is not %s serve", bin)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "lifeline")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "lifeline.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, bin, exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check above can fail: a misspelt directive is reported.
	bad := filepath.Join(dir, "bad.service")
	if err := os.WriteFile(bad, []byte(strings.ReplaceAll(strings.ReplaceAll(text, bin, exe), "ProtectHome=", "ProtectHom=")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "ProtectHom") {
		t.Errorf("systemd-analyze verify did not report a misspelt directive: %s", out)
	}
}

// TestStopTimeoutAboveGrace: systemd must not kill Lifeline while it
// finishes in-flight messages: daemon.Options.Grace (20 s by default) for the
// milter and the mail servers, up to 5 s more for a milter answer whose
// custody is durable, then up to Grace again for the notifier: 45 s, and
// some margin.
func TestStopTimeoutAboveGrace(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("systemd", "lifeline.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nTimeoutStopSec=60s\n") {
		t.Error("TimeoutStopSec is not 60s (above the 45 s a shutdown may take)")
	}
}

// TestDashboardStructure checks what Grafana's import needs and what the
// query test cannot see: a datasource variable that every panel and target
// uses (no hard-wired datasource uid), the instance and server variables,
// unique panel ids, a grid position on every panel, a refId and an expr on
// every target.
func TestDashboardStructure(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "lifeline-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type ds struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *ds    `json:"datasource"`
		GridPos    *struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			RefID      string `json:"refId"`
			Expr       string `json:"expr"`
			Datasource *ds    `json:"datasource"`
		} `json:"targets"`
	}
	var d struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Query      any    `json:"query"`
				Datasource *ds    `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("no uid or title")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && v.Query != "prometheus" {
			t.Errorf("datasource variable %s is of type %v, want prometheus", v.Name, v.Query)
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not use ${datasource}", v.Name)
		}
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" || vars["server"] != "query" {
		t.Errorf("variables %v; want datasource (datasource), instance and server (query)", vars)
	}
	ids := map[int]bool{}
	kinds := map[string]int{}
	for _, p := range d.Panels {
		kinds[p.Type]++
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q without expr or refId, or refId twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v", p.Title, tg.RefID, tg.Datasource)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q target %s ignores $instance: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if kinds["state-timeline"] == 0 || kinds["timeseries"] < 20 || kinds["stat"] == 0 {
		t.Errorf("panel kinds %v", kinds)
	}
}
